// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The region table: validated region descriptions and the GET_REGION_INFO replies built from
//! them.

use std::mem::size_of;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;

use zerocopy::IntoBytes;

use crate::device::BarType;
use crate::device::DeviceDescription;
use crate::device::RegionDescription;
use crate::error::Error;
use crate::error::Result;
use crate::protocol::*;
use crate::sys;

/// Why a device description cannot be served. A programming error of the device, reported when
/// the server starts rather than to a client.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidDescription(pub String);

impl std::fmt::Display for InvalidDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid device description: {}", self.0)
    }
}

impl std::error::Error for InvalidDescription {}

/// QEMU refuses a device with fewer regions than config space + 1.
const MIN_REGIONS: usize = PCI_NUM_REGIONS as usize;

/// Checks a description and pads it to the PCI region count.
pub fn validate(
    mut description: DeviceDescription,
) -> std::result::Result<DeviceDescription, InvalidDescription> {
    let invalid = |message: String| Err(InvalidDescription(message));
    if description.regions.len() < MIN_REGIONS {
        description
            .regions
            .resize_with(MIN_REGIONS, RegionDescription::default);
    }
    let page = sys::page_size();
    for (index, region) in description.regions.iter().enumerate() {
        if region.bar != BarType::None {
            if index >= 6 {
                return invalid(format!("region {index} is not a BAR but has a BAR type"));
            }
            if region.size > 0 && !region.size.is_power_of_two() {
                return invalid(format!(
                    "BAR {index} size {:#x} is not a power of two",
                    region.size
                ));
            }
            if let BarType::Memory64 { .. } = region.bar {
                if index % 2 != 0 {
                    return invalid(format!("64-bit BAR {index} is not on an even index"));
                }
                if description.regions[index + 1].size != 0 {
                    return invalid(format!(
                        "BAR {} is the upper half of BAR {index}",
                        index + 1
                    ));
                }
            }
            if region.bar == BarType::Io && region.size > 1 << 32 {
                return invalid(format!("I/O BAR {index} is too large"));
            }
        }
        if let Some(mmap) = &region.mmap {
            if mmap.offset % page != 0 {
                return invalid(format!("region {index} mmap offset is not page-aligned"));
            }
            for &(offset, size) in mmap.sparse_areas.iter().flatten() {
                if offset % page != 0 || size % page != 0 || size == 0 {
                    return invalid(format!("region {index} sparse area is not page-aligned"));
                }
                if offset.checked_add(size).is_none_or(|end| end > region.size) {
                    return invalid(format!("region {index} sparse area is outside the region"));
                }
            }
        }
    }
    Ok(description)
}

/// The reply to GET_REGION_INFO for `region` at `index` given the client's `argsz`, and the fd
/// that rides with it. Capabilities are included only when they fit in `argsz`; `argsz` in the
/// reply always says how much the full reply needs, so that the client can ask again.
pub fn region_info_reply<'a>(
    index: u32,
    region: &'a RegionDescription,
    argsz: u32,
) -> Result<(Vec<u8>, Option<BorrowedFd<'a>>)> {
    let fixed = size_of::<RegionInfo>();
    if (argsz as usize) < fixed {
        return Err(Error::ArgszTooSmall {
            argsz,
            needed: fixed,
        });
    }
    let mut flags = 0;
    if region.readable {
        flags |= REGION_INFO_FLAG_READ;
    }
    if region.writable {
        flags |= REGION_INFO_FLAG_WRITE;
    }
    let mut caps = Vec::new();
    let mut file_offset = 0;
    let mut fd = None;
    if let Some(mmap) = region.mmap.as_ref().filter(|_| region.size > 0) {
        flags |= REGION_INFO_FLAG_MMAP;
        file_offset = mmap.offset;
        fd = Some(mmap.fd.as_fd());
        if let Some(areas) = &mmap.sparse_areas {
            flags |= REGION_INFO_FLAG_CAPS;
            caps.extend_from_slice(
                CapabilityHeader {
                    id: REGION_INFO_CAP_SPARSE_MMAP,
                    version: 1,
                    next: 0,
                }
                .as_bytes(),
            );
            caps.extend_from_slice(
                SparseMmapHeader {
                    nr_areas: areas.len() as u32,
                    reserved: 0,
                }
                .as_bytes(),
            );
            for &(offset, size) in areas {
                caps.extend_from_slice(SparseMmapArea { offset, size }.as_bytes());
            }
        }
    }
    let full = fixed + caps.len();
    let include_caps = !caps.is_empty() && argsz as usize >= full;
    let info = RegionInfo {
        argsz: full as u32,
        flags,
        index,
        // Set even when the caps do not fit: QEMU refuses CAPS with a cap_offset below the
        // fixed part, before it asks again with the argsz the reply names.
        cap_offset: if caps.is_empty() { 0 } else { fixed as u32 },
        size: region.size,
        offset: file_offset,
    };
    let mut reply = info.as_bytes().to_vec();
    if include_caps {
        reply.extend_from_slice(&caps);
    }
    Ok((reply, fd))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::RegionMmap;

    fn mmapped(size: u64, sparse: Option<Vec<(u64, u64)>>) -> RegionDescription {
        RegionDescription {
            size,
            readable: true,
            writable: true,
            bar: BarType::Memory32 {
                prefetchable: false,
            },
            mmap: Some(RegionMmap {
                fd: Arc::new(sys::memfd(c"region", size).unwrap().into()),
                offset: 0,
                sparse_areas: sparse,
            }),
        }
    }

    #[test]
    fn sparse_caps_only_when_argsz_allows() {
        let region = mmapped(0x4000, Some(vec![(0x1000, 0x3000)]));
        let (short, fd) = region_info_reply(2, &region, 32).unwrap();
        assert_eq!(short.len(), 32);
        assert!(fd.is_some());
        let info: RegionInfo = read_struct(&short).unwrap();
        assert_eq!(info.argsz, 32 + 8 + 8 + 16);
        assert_eq!(
            info.cap_offset, 32,
            "QEMU checks it even in the short reply"
        );
        assert_ne!(info.flags & REGION_INFO_FLAG_CAPS, 0);

        let (full, _) = region_info_reply(2, &region, info.argsz).unwrap();
        assert_eq!(full.len(), info.argsz as usize);
        let info: RegionInfo = read_struct(&full).unwrap();
        assert_eq!(info.cap_offset, 32);
        let area: SparseMmapArea = read_struct(&full[48..]).unwrap();
        assert_eq!((area.offset, area.size), (0x1000, 0x3000));
        assert!(region_info_reply(2, &region, 16).is_err());
    }

    #[test]
    fn descriptions_are_checked() {
        let mut description = DeviceDescription::default();
        description.regions.push(RegionDescription::bar(
            0x3000,
            BarType::Memory32 {
                prefetchable: false,
            },
        ));
        assert!(validate(description.clone()).is_err());
        description.regions[0].size = 0x4000;
        let padded = validate(description.clone()).unwrap();
        assert_eq!(padded.regions.len(), 9);

        description.regions[0] = mmapped(0x4000, Some(vec![(0x800, 0x1000)]));
        assert!(validate(description.clone()).is_err());
        description.regions[0] = mmapped(0x4000, Some(vec![(0x3000, 0x2000)]));
        assert!(validate(description.clone()).is_err());

        let mut description = DeviceDescription::default();
        description
            .regions
            .resize_with(9, RegionDescription::default);
        description.regions[1] = RegionDescription::bar(
            0x1000,
            BarType::Memory64 {
                prefetchable: false,
            },
        );
        assert!(validate(description).is_err(), "64-bit BAR on an odd index");
    }
}
