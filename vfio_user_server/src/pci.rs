// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! BAR and ROM registers of config space, emulated from the region table.
//!
//! cloud-hypervisor sizes BARs by writing all ones and reading back, and never restores them;
//! QEMU takes sizes from GET_REGION_INFO but writes every BAR address through. Answering both from
//! the region table keeps a device's BARs consistent with its regions whatever the device does.

use crate::device::BarType;
use crate::device::RegionDescription;

/// Config-space offset of BAR0.
pub const BAR0_OFFSET: u64 = 0x10;
/// Config-space offset of the expansion ROM BAR.
pub const ROM_BAR_OFFSET: u64 = 0x30;
const NUM_BARS: usize = 6;
const ROM_ENABLE: u32 = 1;

#[derive(Clone, Copy, Debug, Default)]
enum Register {
    #[default]
    Unused,
    /// The low dword of a BAR (or the whole of a 32-bit or I/O one).
    Low {
        kind: BarType,
        size: u64,
    },
    /// The high dword of a 64-bit BAR whose low dword is the register before.
    High {
        size: u64,
    },
    Rom {
        size: u64,
    },
}

impl Register {
    /// The register's value given what was last written to it.
    fn read(&self, written: u32) -> u32 {
        match *self {
            Register::Unused => 0,
            Register::Low { kind, size } => {
                let mask = !(size - 1) as u32;
                match kind {
                    BarType::Io => (written & mask & !0x3) | 0x1,
                    BarType::Memory32 { prefetchable } => {
                        (written & mask & !0xf) | if prefetchable { 0x8 } else { 0 }
                    }
                    BarType::Memory64 { prefetchable } => {
                        (written & mask & !0xf) | 0x4 | if prefetchable { 0x8 } else { 0 }
                    }
                    BarType::None => 0,
                }
            }
            Register::High { size } => written & ((!(size - 1)) >> 32) as u32,
            Register::Rom { size } => written & ((!(size - 1) as u32 & !0x7ff) | ROM_ENABLE),
        }
    }
}

/// The emulated BAR0-5 and ROM registers of one connection.
#[derive(Clone, Debug, Default)]
pub struct BarRegisters {
    registers: [Register; NUM_BARS + 1],
    written: [u32; NUM_BARS + 1],
}

impl BarRegisters {
    /// Builds the registers from the first seven regions (BAR0-5, ROM). Sizes are powers of two
    /// (checked by the region table).
    pub fn new(regions: &[RegionDescription]) -> BarRegisters {
        let mut registers = [Register::Unused; NUM_BARS + 1];
        let mut i = 0;
        while i < NUM_BARS {
            let Some(region) = regions.get(i) else { break };
            if region.size > 0 && region.bar != BarType::None {
                registers[i] = Register::Low {
                    kind: region.bar,
                    size: region.size,
                };
                if let BarType::Memory64 { .. } = region.bar {
                    if i + 1 < NUM_BARS {
                        registers[i + 1] = Register::High { size: region.size };
                        i += 1;
                    }
                }
            }
            i += 1;
        }
        if let Some(rom) = regions.get(NUM_BARS) {
            if rom.size > 0 {
                registers[NUM_BARS] = Register::Rom { size: rom.size };
            }
        }
        BarRegisters {
            registers,
            written: [0; NUM_BARS + 1],
        }
    }

    /// Forgets the written addresses (device reset).
    pub fn reset(&mut self) {
        self.written = [0; NUM_BARS + 1];
    }

    /// The register slot holding config byte `offset`, if it is an emulated one.
    fn slot(offset: u64) -> Option<usize> {
        match offset {
            BAR0_OFFSET..0x28 => Some(((offset - BAR0_OFFSET) / 4) as usize),
            ROM_BAR_OFFSET..0x34 => Some(NUM_BARS),
            _ => None,
        }
    }

    /// Whether config byte `offset` belongs to an emulated register.
    pub fn is_emulated(offset: u64) -> bool {
        Self::slot(offset).is_some()
    }

    /// The value of config byte `offset`, which must be emulated.
    pub fn read_byte(&self, offset: u64) -> u8 {
        let slot = Self::slot(offset).expect("caller checked is_emulated");
        let value = self.registers[slot].read(self.written[slot]);
        value.to_le_bytes()[(offset % 4) as usize]
    }

    /// Stores config byte `offset`, which must be emulated.
    pub fn write_byte(&mut self, offset: u64, byte: u8) {
        let slot = Self::slot(offset).expect("caller checked is_emulated");
        let mut bytes = self.written[slot].to_le_bytes();
        bytes[(offset % 4) as usize] = byte;
        self.written[slot] = u32::from_le_bytes(bytes);
    }

    /// The address the client last programmed into BAR `index` (both halves of a 64-bit BAR).
    pub fn address(&self, index: usize) -> Option<u64> {
        match self.registers.get(index)? {
            Register::Low { kind, .. } => {
                let low = u64::from(self.registers[index].read(self.written[index]));
                let low = if *kind == BarType::Io {
                    low & !0x3
                } else {
                    low & !0xf
                };
                let high = match self.registers.get(index + 1) {
                    Some(high @ Register::High { .. }) => {
                        u64::from(high.read(self.written[index + 1])) << 32
                    }
                    _ => 0,
                };
                Some(high | low)
            }
            _ => None,
        }
    }
}

/// Splits a config access `offset..offset+len` into runs that are either all emulated or all
/// device-owned, so that each run goes to one side.
pub fn split_config_access(offset: u64, len: usize) -> Vec<(u64, usize, bool)> {
    let mut runs: Vec<(u64, usize, bool)> = Vec::new();
    for byte in offset..offset + len as u64 {
        let emulated = BarRegisters::is_emulated(byte);
        match runs.last_mut() {
            Some((_, run_len, run_emulated)) if *run_emulated == emulated => *run_len += 1,
            _ => runs.push((byte, 1, emulated)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions() -> Vec<RegionDescription> {
        vec![
            RegionDescription::bar(
                0x1000,
                BarType::Memory32 {
                    prefetchable: false,
                },
            ),
            RegionDescription::default(),
            RegionDescription::bar(0x1_0000_0000, BarType::Memory64 { prefetchable: true }),
            RegionDescription::default(),
            RegionDescription::bar(0x100, BarType::Io),
            RegionDescription::default(),
            RegionDescription::bar(0x800, BarType::None),
        ]
    }

    fn read_dword(bars: &BarRegisters, offset: u64) -> u32 {
        u32::from_le_bytes(std::array::from_fn(|i| bars.read_byte(offset + i as u64)))
    }

    fn write_dword(bars: &mut BarRegisters, offset: u64, value: u32) {
        for (i, byte) in value.to_le_bytes().into_iter().enumerate() {
            bars.write_byte(offset + i as u64, byte);
        }
    }

    #[test]
    fn sizing_probe_reads_back_size_and_type() {
        let mut bars = BarRegisters::new(&regions());
        for offset in (0x10..0x28).step_by(4).chain([0x30]) {
            write_dword(&mut bars, offset, 0xffff_ffff);
        }
        assert_eq!(read_dword(&bars, 0x10), 0xffff_f000);
        assert_eq!(read_dword(&bars, 0x14), 0, "unused BAR");
        assert_eq!(
            read_dword(&bars, 0x18),
            0x0000_000c,
            "64-bit prefetchable, 4 GiB"
        );
        assert_eq!(
            read_dword(&bars, 0x1c),
            0xffff_ffff,
            "upper dword of a 4 GiB BAR"
        );
        assert_eq!(read_dword(&bars, 0x20), 0xffff_ff01, "I/O BAR");
        assert_eq!(
            read_dword(&bars, 0x30),
            0xffff_f801,
            "ROM keeps its enable bit"
        );
    }

    #[test]
    fn addresses_are_kept_and_reset() {
        let mut bars = BarRegisters::new(&regions());
        write_dword(&mut bars, 0x18, 0x2_0000_000c_u64 as u32);
        write_dword(&mut bars, 0x1c, 0x2);
        assert_eq!(bars.address(2), Some(0x2_0000_0000));
        write_dword(&mut bars, 0x10, 0xfebf_1234);
        assert_eq!(bars.address(0), Some(0xfebf_1000));
        bars.reset();
        assert_eq!(bars.address(0), Some(0));
    }

    #[test]
    fn accesses_split_at_emulated_registers() {
        assert_eq!(
            split_config_access(0xe, 4),
            vec![(0xe, 2, false), (0x10, 2, true)]
        );
        assert_eq!(split_config_access(0x0, 4), vec![(0x0, 4, false)]);
        assert_eq!(
            split_config_access(0x0, 256).len(),
            5,
            "device, BARs, device, ROM, device"
        );
    }
}
