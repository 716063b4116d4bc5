// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The config space of the test devices: 256 bytes of which a guest may change only the command
//! register, the interrupt line and the MSI-X enable and function-mask bits. BAR registers
//! never get here: the server emulates them.

/// A PCI function's config space as a test device keeps it.
#[derive(Clone)]
pub struct ConfigSpace {
    bytes: [u8; 256],
    initial: [u8; 256],
    msix_cap: usize,
}

impl ConfigSpace {
    /// `bytes` is the content after reset; `msix_cap` the offset of the MSI-X capability.
    pub fn new(bytes: [u8; 256], msix_cap: usize) -> ConfigSpace {
        ConfigSpace {
            bytes,
            initial: bytes,
            msix_cap,
        }
    }

    /// The bits of byte `offset` that a write may change.
    fn writable_bits(&self, offset: usize) -> u8 {
        match offset {
            // Command register.
            0x04 => 0xff,
            0x05 => 0x07,
            // Interrupt line.
            0x3c => 0xff,
            // MSI-X message control: enable and function mask.
            o if o == self.msix_cap + 3 => 0xc0,
            _ => 0,
        }
    }

    /// Reads `data.len()` bytes at `offset`; the server has checked the range.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let start = offset as usize;
        data.copy_from_slice(&self.bytes[start..start + data.len()]);
    }

    /// Writes `data` at `offset`, changing only writable bits.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &byte) in data.iter().enumerate() {
            let at = offset as usize + i;
            let mask = self.writable_bits(at);
            self.bytes[at] = (self.bytes[at] & !mask) | (byte & mask);
        }
    }

    pub fn reset(&mut self) {
        self.bytes = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writable_bits_change() {
        let mut config = ConfigSpace::new([0x11; 256], 0x40);
        config.write(0x00, &[0; 8]);
        config.write(0x43, &[0xff]);
        let mut bytes = [0u8; 8];
        config.read(0x00, &mut bytes);
        assert_eq!(bytes, [0x11, 0x11, 0x11, 0x11, 0, 0x10, 0x11, 0x11]);
        let mut control = [0u8; 1];
        config.read(0x43, &mut control);
        assert_eq!(control[0], 0xd1);
        config.reset();
        config.read(0x43, &mut control);
        assert_eq!(control[0], 0x11);
    }
}
