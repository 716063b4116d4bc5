// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What a device implements to be served, and what the server gives it in return.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::guest_memory::GuestMemory;
use crate::irq::Interrupts;
use crate::irq::IrqCounts;
use crate::pci::BarRegisters;
use crate::region_map::RegionMapQueue;

/// The type bits a BAR register reports; the server emulates BAR sizing from them and the
/// region's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BarType {
    /// Not a BAR (config space, ROM, VGA, device-specific regions), or an unused BAR.
    #[default]
    None,
    Io,
    Memory32 {
        prefetchable: bool,
    },
    /// Takes this region and the next one; the next region must have size 0.
    Memory64 {
        prefetchable: bool,
    },
}

/// How a client may mmap a region: a file and, optionally, the only parts it may map.
#[derive(Clone, Debug)]
pub struct RegionMmap {
    pub fd: Arc<std::os::fd::OwnedFd>,
    /// Offset of the region in `fd`.
    pub offset: u64,
    /// `(offset, size)` areas inside the region that may be mapped, page-aligned; `None` maps the
    /// whole region. Keep MSI-X tables out of them: cloud-hypervisor does not cut them out.
    pub sparse_areas: Option<Vec<(u64, u64)>>,
}

/// One region of the device.
#[derive(Clone, Debug, Default)]
pub struct RegionDescription {
    /// In bytes; for a BAR, a power of two (the size the BAR sizing probe reports).
    pub size: u64,
    pub readable: bool,
    pub writable: bool,
    pub bar: BarType,
    pub mmap: Option<RegionMmap>,
}

impl RegionDescription {
    /// A BAR trapped into REGION_READ/WRITE.
    pub fn bar(size: u64, bar: BarType) -> RegionDescription {
        RegionDescription {
            size,
            readable: true,
            writable: true,
            bar,
            mmap: None,
        }
    }

    /// A region that is readable and writable and not a BAR (config space, for one).
    pub fn plain(size: u64) -> RegionDescription {
        RegionDescription::bar(size, BarType::None)
    }
}

/// What a device looks like to a client. Read once per connection.
#[derive(Clone, Debug)]
pub struct DeviceDescription {
    /// Indexed by region index: BAR0-5, ROM, config space, VGA, then device-specific ones. QEMU
    /// requires at least 8, so fewer are padded with empty regions.
    pub regions: Vec<RegionDescription>,
    pub irqs: IrqCounts,
    /// Advertise DEVICE_RESET.
    pub resettable: bool,
    /// Let the server answer config-space accesses to the BAR and ROM registers from the region
    /// table (sizing probes included), so the device never sees them. On by default; a device
    /// that emulates its own BARs consistently with its regions may turn it off.
    pub emulate_bars: bool,
}

impl Default for DeviceDescription {
    fn default() -> Self {
        DeviceDescription {
            regions: Vec::new(),
            irqs: IrqCounts::default(),
            resettable: false,
            emulate_bars: true,
        }
    }
}

/// An eventfd the device watches for writes to part of a region (a doorbell), which a client
/// can register with KVM to skip a socket round trip (GET_REGION_IO_FDS).
pub struct IoEventFd<'a> {
    pub offset: u64,
    /// Access size, or 0 for any.
    pub size: u64,
    pub datamatch: Option<u64>,
    pub fd: BorrowedFd<'a>,
}

/// What the server passes to device callbacks: client memory and interrupts, plus DMA through
/// the client for memory that came without an fd.
pub struct DeviceContext<'a> {
    pub(crate) memory: &'a GuestMemory,
    pub(crate) interrupts: &'a Interrupts,
    pub(crate) client: &'a mut dyn ClientDma,
    pub(crate) bars: &'a BarRegisters,
}

/// DMA_READ/DMA_WRITE sent to the client, implemented by the connection.
pub(crate) trait ClientDma {
    fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> crate::Result<()>;
    fn dma_write(&mut self, address: u64, data: &[u8]) -> crate::Result<()>;
}

impl DeviceContext<'_> {
    pub fn memory(&self) -> &GuestMemory {
        self.memory
    }

    pub fn interrupts(&self) -> &Interrupts {
        self.interrupts
    }

    /// Where the client last placed BAR `index`, as programmed into the BAR registers the server
    /// emulates (`DeviceDescription::emulate_bars`); `None` for a BAR that is not one (the upper
    /// half of a 64-bit BAR, an index past the last), 0 until programmed. A device whose guest
    /// driver reads addresses inside a BAR from the device learns them here.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        self.bars.address(index)
    }

    /// Reads client memory: directly where the client shared an fd, with DMA_READ messages
    /// elsewhere. Every byte must lie inside the client's DMA maps.
    pub fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> crate::Result<()> {
        for piece in self.memory.pieces(address, buf.len(), false)? {
            let part = &mut buf[piece.buf_offset..piece.buf_offset + piece.len];
            if piece.mapped {
                self.memory.read(piece.address, part)?;
            } else {
                self.client.dma_read(piece.address, part)?;
            }
        }
        Ok(())
    }

    /// Writes client memory, under the same rules as [`DeviceContext::dma_read`].
    pub fn dma_write(&mut self, address: u64, data: &[u8]) -> crate::Result<()> {
        for piece in self.memory.pieces(address, data.len(), true)? {
            let part = &data[piece.buf_offset..piece.buf_offset + piece.len];
            if piece.mapped {
                self.memory.write(piece.address, part)?;
            } else {
                self.client.dma_write(piece.address, part)?;
            }
        }
        Ok(())
    }
}

/// A PCI device served over vfio-user.
///
/// Callbacks run on the connection's message loop, one at a time and in the client's order; a
/// device with worker threads hands them clones of the [`GuestMemory`] and [`Interrupts`] it gets
/// in [`Device::connected`]. Errors become error replies carrying the io::Error's errno.
pub trait Device: Send {
    /// Regions, interrupts and reset support. Called when a client connects.
    fn description(&self) -> DeviceDescription;

    /// A client connected; these handles stay valid until [`Device::disconnected`].
    fn connected(&mut self, _memory: GuestMemory, _interrupts: Interrupts) {}

    /// A new client's queue for REGION_MAP/REGION_UNMAP requests (the proposed `x-region-map`
    /// extension); requests are refused with `NotOffered` unless the client opted in.
    fn region_maps(&mut self, _queue: Arc<RegionMapQueue>) {}

    /// Reads `data.len()` bytes at `offset` of region `index`; the server has checked the range.
    fn region_read(
        &mut self,
        ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> io::Result<()>;

    /// Writes `data` at `offset` of region `index`; the server has checked the range.
    fn region_write(
        &mut self,
        ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()>;

    /// The ioeventfds of region `index` (GET_REGION_IO_FDS).
    fn region_io_fds(&self, _index: u32) -> Vec<IoEventFd<'_>> {
        Vec::new()
    }

    /// The client changed interrupt configuration of `index` for `start..start+count` (count 0:
    /// the whole index was disabled). Devices that mirror the client's MSI-X state use this.
    fn interrupts_changed(
        &mut self,
        _ctx: &mut DeviceContext,
        _index: u32,
        _start: u32,
        _count: u32,
    ) {
    }

    /// The client is about to unmap `address..address+size`: stop and finish any DMA into it
    /// before returning. Accesses through [`GuestMemory`] are already waited for by the server.
    fn dma_unmapping(&mut self, _address: u64, _size: u64) {}

    /// DEVICE_RESET, and the reset after a client disconnects.
    fn reset(&mut self) -> io::Result<()>;

    /// The client disconnected. [`Device::reset`] follows.
    fn disconnected(&mut self) {}

    /// DEVICE_FEATURE: `flags` and the request data after them; returns the reply data after
    /// `flags`. Migration features (a later addition) arrive here.
    fn device_feature(&mut self, _flags: u32, _data: &[u8]) -> io::Result<Vec<u8>> {
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }

    /// MIG_DATA_READ: up to `size` bytes of migration data.
    fn migration_data_read(&mut self, _size: u32) -> io::Result<Vec<u8>> {
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }

    /// MIG_DATA_WRITE.
    fn migration_data_write(&mut self, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENOTSUP))
    }
}
