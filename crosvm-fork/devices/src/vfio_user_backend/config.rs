// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Config-space helpers: writes split as crosvm's `PciConfiguration` takes them, and where a
//! device's MSI-X capability and table are, to program crosvm's `MsixConfig` through them so that
//! it matches the vectors the client gave eventfds for, and which BAR holds a virtio device's
//! shared memory (host-visible memory), which the client maps.

use crate::PciDevice;

const CAP_ID_MSIX: u32 = 0x11;
const CAP_ID_VENDOR: u32 = 0x09;
/// `cfg_type` of a virtio-pci vendor capability describing a shared memory region.
const VIRTIO_PCI_CAP_SHARED_MEMORY_CFG: u32 = 8;
const STATUS_CAP_LIST: u32 = 1 << 20;
const CAP_POINTER: usize = 0x34;
const CONTROL_ENABLE: u16 = 0x8000;
const CONTROL_FUNCTION_MASK: u16 = 0x4000;
const ENTRY_SIZE: u64 = 16;
const VECTOR_CTL_MASKED: u32 = 1;
/// A placeholder message address: the client routes the vector; crosvm adds no route (and asks
/// for none) for address 0, so any other value keeps it on its usual path.
const PLACEHOLDER_ADDRESS: u32 = 0xfee0_0000;
/// Flipped in a vector's placeholder message data to make crosvm route the vector again.
const ROUTE_TOGGLE: u32 = 1 << 16;

/// Writes config space in naturally aligned pieces of 4, 2 or 1 bytes, the accesses crosvm's
/// `PciConfiguration` accepts. Splitting is used rather than read-modify-write of whole dwords,
/// which would write back bytes the client did not write (write-1-to-clear status bits, and
/// capability registers with side effects).
pub fn write_config(device: &mut dyn PciDevice, offset: u64, data: &[u8]) {
    for (at, start, len) in aligned_pieces(offset, data.len()) {
        device.write_config_register((at / 4) as usize, at % 4, &data[start..start + len]);
    }
}

/// `(offset, index in the data, length)` of each naturally aligned piece of an access.
fn aligned_pieces(offset: u64, len: usize) -> Vec<(u64, usize, usize)> {
    let mut pieces = Vec::new();
    let mut done = 0usize;
    while done < len {
        let at = offset + done as u64;
        let size = [4usize, 2, 1]
            .into_iter()
            .find(|&size| size <= len - done && at.is_multiple_of(size as u64))
            .unwrap_or(1);
        pieces.push((at, done, size));
        done += size;
    }
    pieces
}

/// `(offset, first dword)` of each capability in the device's list.
fn capabilities(device: &dyn PciDevice) -> Vec<(usize, u32)> {
    let mut found = Vec::new();
    if device.read_config_register(1) & STATUS_CAP_LIST == 0 {
        return found;
    }
    let mut at = (device.read_config_register(CAP_POINTER / 4) & 0xfc) as usize;
    // At most 48 capabilities fit in 192 bytes; a longer list loops.
    for _ in 0..48 {
        if at < 0x40 {
            break;
        }
        let header = device.read_config_register(at / 4);
        found.push((at, header));
        at = ((header >> 8) & 0xfc) as usize;
    }
    found
}

/// The BAR of the device's virtio shared memory regions (virtio-gpu's host-visible memory), if
/// it has any; crosvm puts them all in one BAR.
pub fn shared_memory_bar(device: &dyn PciDevice) -> Option<u8> {
    capabilities(device)
        .into_iter()
        .find(|&(_, header)| {
            header & 0xff == CAP_ID_VENDOR
                && (header >> 24) & 0xff == VIRTIO_PCI_CAP_SHARED_MEMORY_CFG
        })
        .map(|(at, _)| (device.read_config_register(at / 4 + 1) & 0xff) as u8)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixLayout {
    /// Config-space offset of the capability (dword aligned).
    pub cap: usize,
    pub vectors: u32,
    pub table_bar: usize,
    pub table_offset: u64,
}

impl MsixLayout {
    /// Finds the MSI-X capability in the device's capability list.
    pub fn parse(device: &dyn PciDevice) -> Option<MsixLayout> {
        capabilities(device)
            .into_iter()
            .find(|&(_, header)| header & 0xff == CAP_ID_MSIX)
            .map(|(at, header)| {
                let control = (header >> 16) as u16;
                let table = device.read_config_register(at / 4 + 1);
                MsixLayout {
                    cap: at,
                    vectors: u32::from(control & 0x7ff) + 1,
                    table_bar: (table & 0x7) as usize,
                    table_offset: u64::from(table & !0x7),
                }
            })
    }

    /// The config register holding Message Control (in its upper half).
    pub fn control_reg(&self) -> usize {
        self.cap / 4
    }

    /// The shift of config byte `at` inside Message Control, if it is one of its two bytes.
    pub fn control_byte(&self, at: u64) -> Option<u16> {
        let control = self.cap as u64 + 2;
        match at.checked_sub(control) {
            Some(0) => Some(0),
            Some(1) => Some(8),
            _ => None,
        }
    }

    /// The control register as the client sees it: crosvm's, with the enable and function-mask
    /// bits the client wrote.
    pub fn merge_control(&self, register: u32, written: u16) -> u32 {
        let bits = u32::from(CONTROL_ENABLE | CONTROL_FUNCTION_MASK) << 16;
        (register & !bits) | ((u32::from(written) << 16) & bits)
    }

    /// Makes crosvm's MSI-X table match the client's vectors: enabled while any vector has an
    /// eventfd, with exactly the vectors that have one and are not masked unmasked. Unmasking a
    /// vector the first time makes `MsixConfig` allocate it (the VM services answer with the
    /// client's eventfd); masking one makes it keep interrupts pending instead, delivered when
    /// the vector is unmasked again.
    pub fn program(&self, device: &mut dyn PciDevice, vectors: &[VectorPlan]) {
        let control = (device.read_config_register(self.control_reg()) >> 16) as u16;
        let enabled = control & CONTROL_ENABLE != 0;
        let any = vectors.iter().any(|v| v.assigned);
        if any && !enabled {
            let control = (control | CONTROL_ENABLE) & !CONTROL_FUNCTION_MASK;
            device.write_config_register(self.control_reg(), 2, &control.to_le_bytes());
        }
        for (vector, plan) in vectors.iter().enumerate() {
            let entry = self.table_offset + ENTRY_SIZE * vector as u64;
            let read = |device: &mut dyn PciDevice, offset: u64| {
                let mut value = [0u8; 4];
                device.read_bar(self.table_bar, entry + offset, &mut value);
                u32::from_le_bytes(value)
            };
            let write = |device: &mut dyn PciDevice, offset: u64, value: u32| {
                device.write_bar(self.table_bar, entry + offset, &value.to_le_bytes())
            };
            if plan.reroute {
                // A new message makes `MsixConfig` route the vector again, and the answer swaps
                // its eventfd; it holds its lock meanwhile, so no interrupt slips between.
                let data = read(device, 8);
                write(device, 8, data ^ ROUTE_TOGGLE);
            }
            let masked = read(device, 12) & VECTOR_CTL_MASKED != 0;
            let unmask = plan.assigned && !plan.masked;
            if unmask && masked {
                if read(device, 0) != PLACEHOLDER_ADDRESS {
                    write(device, 0, PLACEHOLDER_ADDRESS);
                    write(device, 4, 0);
                    write(device, 8, vector as u32);
                }
                write(device, 12, 0);
            } else if !unmask && !masked {
                write(device, 12, VECTOR_CTL_MASKED);
            }
        }
        if !any && enabled {
            let control = control & !CONTROL_ENABLE;
            device.write_config_register(self.control_reg(), 2, &control.to_le_bytes());
        }
    }
}

/// What crosvm's MSI-X table entry for one vector should be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorPlan {
    /// The client gave the vector an eventfd.
    pub assigned: bool,
    /// The client masked the vector (SET_IRQS MASK).
    pub masked: bool,
    /// The client gave the vector another eventfd than the one the device signals.
    pub reroute: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_writes_split_into_aligned_pieces() {
        assert_eq!(aligned_pieces(0x10, 4), vec![(0x10, 0, 4)]);
        assert_eq!(aligned_pieces(0x06, 2), vec![(0x06, 0, 2)]);
        // Unaligned and odd sizes: never a piece crossing a dword or misaligned for its size.
        assert_eq!(
            aligned_pieces(0x03, 6),
            vec![(0x03, 0, 1), (0x04, 1, 4), (0x08, 5, 1)]
        );
        assert_eq!(aligned_pieces(0x0a, 3), vec![(0x0a, 0, 2), (0x0c, 2, 1)]);
        assert_eq!(aligned_pieces(0x40, 8), vec![(0x40, 0, 4), (0x44, 4, 4)]);
        assert!(aligned_pieces(0x40, 0).is_empty());
    }

    #[test]
    fn message_control_bytes_and_merge() {
        let layout = MsixLayout {
            cap: 0x98,
            vectors: 2,
            table_bar: 0,
            table_offset: 0x6000,
        };
        assert_eq!(layout.control_reg(), 0x26);
        assert_eq!(layout.control_byte(0x9a), Some(0));
        assert_eq!(layout.control_byte(0x9b), Some(8));
        assert_eq!(layout.control_byte(0x99), None);
        assert_eq!(layout.control_byte(0x9c), None);
        // crosvm's register: table size 1 (2 vectors), enabled; the client wrote mask only.
        let register = 0x8001_0011;
        assert_eq!(layout.merge_control(register, 0x4000), 0x4001_0011);
        assert_eq!(layout.merge_control(register, 0x07ff), 0x0001_0011);
    }
}
