// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Wire format of the vfio-user protocol (QEMU `docs/interop/vfio-user.rst`).
//!
//! Every structure is the payload that follows the 16-byte [`Header`]; sizes are asserted against
//! the specification so that a layout change cannot slip through. All values are little-endian
//! (the protocol uses host endianness and only little-endian hosts are supported).

use std::mem::size_of;

use zerocopy::FromBytes;
use zerocopy::Immutable;
use zerocopy::IntoBytes;
use zerocopy::KnownLayout;

/// Command numbers of the header's `command` field.
pub mod command {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    pub const DMA_READ: u16 = 11;
    pub const DMA_WRITE: u16 = 12;
    pub const DEVICE_RESET: u16 = 13;
    pub const REGION_WRITE_MULTI: u16 = 15;
    pub const DEVICE_FEATURE: u16 = 16;
    pub const MIG_DATA_READ: u16 = 17;
    pub const MIG_DATA_WRITE: u16 = 18;
    /// Server to client, proposed extension (`x-region-map`): map a file over part of a region.
    /// Numbers outside the specification's range until one is assigned.
    pub const REGION_MAP: u16 = 0x7f00;
    /// Server to client, proposed extension: put the region's own file back over a range.
    pub const REGION_UNMAP: u16 = 0x7f01;
}

/// Bits of the header's `flags` field.
pub mod header_flags {
    pub const TYPE_MASK: u32 = 0xf;
    pub const TYPE_COMMAND: u32 = 0;
    pub const TYPE_REPLY: u32 = 1;
    pub const NO_REPLY: u32 = 0x10;
    pub const ERROR: u32 = 0x20;
}

/// `flags` of DEVICE_GET_INFO.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

/// `flags` of GET_REGION_INFO.
pub const REGION_INFO_FLAG_READ: u32 = 1 << 0;
pub const REGION_INFO_FLAG_WRITE: u32 = 1 << 1;
pub const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
pub const REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
pub const REGION_INFO_CAP_SPARSE_MMAP: u16 = 1;

/// PCI region indices.
pub const PCI_BAR0_REGION_INDEX: u32 = 0;
pub const PCI_ROM_REGION_INDEX: u32 = 6;
pub const PCI_CONFIG_REGION_INDEX: u32 = 7;
pub const PCI_VGA_REGION_INDEX: u32 = 8;
pub const PCI_NUM_REGIONS: u32 = 9;

/// PCI interrupt indices.
pub const PCI_INTX_IRQ_INDEX: u32 = 0;
pub const PCI_MSI_IRQ_INDEX: u32 = 1;
pub const PCI_MSIX_IRQ_INDEX: u32 = 2;
pub const PCI_ERR_IRQ_INDEX: u32 = 3;
pub const PCI_REQ_IRQ_INDEX: u32 = 4;
pub const PCI_NUM_IRQS: u32 = 5;

/// `flags` of GET_IRQ_INFO.
pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;
pub const IRQ_INFO_MASKABLE: u32 = 1 << 1;
pub const IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
pub const IRQ_INFO_NORESIZE: u32 = 1 << 3;

/// `flags` of SET_IRQS.
pub const IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub const IRQ_SET_DATA_BOOL: u32 = 1 << 1;
pub const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const IRQ_SET_DATA_MASK: u32 = IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD;
pub const IRQ_SET_ACTION_MASK: u32 = 1 << 3;
pub const IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
pub const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
pub const IRQ_SET_ACTION_TYPE_MASK: u32 =
    IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER;

/// `flags` of DMA_MAP.
pub const DMA_MAP_FLAG_READ: u32 = 1 << 0;
pub const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

/// `flags` of DMA_UNMAP (the values of the specification, not those of the rust-vmm crate).
pub const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;

/// `type` of a GET_REGION_IO_FDS sub-region.
pub const IO_FD_TYPE_IOEVENTFD: u32 = 0;
/// `flags` of an ioeventfd sub-region (KVM's values).
pub const IOEVENTFD_FLAG_DATAMATCH: u32 = 1 << 0;

/// The header of every message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Header {
    pub msg_id: u16,
    pub command: u16,
    /// Size of the whole message, header included.
    pub msg_size: u32,
    pub flags: u32,
    /// errno of a reply whose ERROR flag is set.
    pub error: u32,
}
pub const HEADER_SIZE: usize = size_of::<Header>();

impl Header {
    pub fn message_type(&self) -> u32 {
        self.flags & header_flags::TYPE_MASK
    }

    pub fn no_reply(&self) -> bool {
        self.flags & header_flags::NO_REPLY != 0
    }

    pub fn is_error(&self) -> bool {
        self.flags & header_flags::ERROR != 0
    }
}

/// VERSION request and reply; NUL-terminated JSON follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    /// Offset of the mapping in the file descriptor that comes with the message.
    pub offset: u64,
    pub address: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub address: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    /// Offset of the first capability from the start of this structure.
    pub cap_offset: u32,
    pub size: u64,
    /// Offset to give mmap() for a mappable region.
    pub offset: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CapabilityHeader {
    pub id: u16,
    pub version: u16,
    /// Offset of the next capability from the start of [`RegionInfo`]; 0 ends the list.
    pub next: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SparseMmapHeader {
    pub nr_areas: u32,
    pub reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SparseMmapArea {
    pub offset: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionIoFds {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SubRegionIoEventFd {
    pub offset: u64,
    pub size: u64,
    pub fd_index: u32,
    pub fd_type: u32,
    pub flags: u32,
    pub padding: u32,
    pub datamatch: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}

/// SET_IRQS; with DATA_BOOL, `count` bytes follow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IrqSet {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}

/// REGION_READ and REGION_WRITE request and reply; data follows where the command carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionAccess {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
}

/// DMA_READ and DMA_WRITE, as the specification and libvfio-user lay them out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DmaAccess {
    pub address: u64,
    pub count: u64,
}

/// REGION_MAP and REGION_UNMAP (proposed extension, see `region_map`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegionMap {
    pub argsz: u32,
    /// REGION_MAP_READ | REGION_MAP_WRITE.
    pub flags: u32,
    pub region: u32,
    pub pad: u32,
    /// Where in the region, page-aligned.
    pub offset: u64,
    pub size: u64,
    /// Where in the file (REGION_MAP only).
    pub fd_offset: u64,
}

pub const REGION_MAP_READ: u32 = 1;
pub const REGION_MAP_WRITE: u32 = 2;

/// The most data one REGION_WRITE_MULTI entry carries.
pub const WRITE_MULTI_DATA: usize = 8;
/// The most entries a REGION_WRITE_MULTI message carries (QEMU's limit).
pub const WRITE_MULTI_MAX: u64 = 200;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct WriteMultiHeader {
    pub wr_cnt: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct WriteMultiEntry {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
    pub data: [u8; WRITE_MULTI_DATA],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DeviceFeature {
    pub argsz: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MigDataAccess {
    pub argsz: u32,
    pub size: u32,
}

const _: () = assert!(size_of::<Header>() == 16);
const _: () = assert!(size_of::<Version>() == 4);
const _: () = assert!(size_of::<DmaMap>() == 32);
const _: () = assert!(size_of::<DmaUnmap>() == 24);
const _: () = assert!(size_of::<RegionMap>() == 40);
const _: () = assert!(size_of::<DeviceInfo>() == 16);
const _: () = assert!(size_of::<RegionInfo>() == 32);
const _: () = assert!(size_of::<CapabilityHeader>() == 8);
const _: () = assert!(size_of::<SparseMmapHeader>() == 8);
const _: () = assert!(size_of::<SparseMmapArea>() == 16);
const _: () = assert!(size_of::<RegionIoFds>() == 16);
const _: () = assert!(size_of::<SubRegionIoEventFd>() == 40);
const _: () = assert!(size_of::<IrqInfo>() == 16);
const _: () = assert!(size_of::<IrqSet>() == 20);
const _: () = assert!(size_of::<RegionAccess>() == 16);
const _: () = assert!(size_of::<DmaAccess>() == 16);
const _: () = assert!(size_of::<WriteMultiHeader>() == 8);
const _: () = assert!(size_of::<WriteMultiEntry>() == 24);
const _: () = assert!(size_of::<DeviceFeature>() == 8);
const _: () = assert!(size_of::<MigDataAccess>() == 8);

/// Reads a `T` from the start of `bytes`, if there are enough of them.
pub fn read_struct<T: FromBytes>(bytes: &[u8]) -> Option<T> {
    T::read_from_prefix(bytes).ok().map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let header = Header {
            msg_id: 0x0102,
            command: command::REGION_READ,
            msg_size: 32,
            flags: header_flags::TYPE_REPLY | header_flags::ERROR,
            error: 22,
        };
        let bytes = header.as_bytes();
        assert_eq!(&bytes[0..4], &[0x02, 0x01, 9, 0]);
        assert_eq!(&bytes[4..8], &32u32.to_le_bytes());
        let back: Header = read_struct(bytes).unwrap();
        assert_eq!(back.msg_id, 0x0102);
        assert!(back.is_error());
        assert_eq!(back.message_type(), header_flags::TYPE_REPLY);
    }

    #[test]
    fn short_input_reads_nothing() {
        assert!(read_struct::<RegionAccess>(&[0u8; 15]).is_none());
        assert!(read_struct::<RegionAccess>(&[0u8; 16]).is_some());
    }
}
