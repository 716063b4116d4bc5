// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Feeds the input as a client's byte stream to a [`Connection`] serving a small device.
//!
//! Input layout: byte 0 configures the run (bits 0-6: largest read the transport returns at
//! once, 0 for unlimited; bit 7: turn off config-space BAR emulation); the rest is the stream.

#![no_main]

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vfio_user_server::protocol::PCI_CONFIG_REGION_INDEX;
use vfio_user_server::protocol::PCI_MSIX_IRQ_INDEX;
use vfio_user_server::sys;
use vfio_user_server::BarType;
use vfio_user_server::Connection;
use vfio_user_server::Device;
use vfio_user_server::DeviceContext;
use vfio_user_server::DeviceDescription;
use vfio_user_server::IrqCounts;
use vfio_user_server::MemoryTransport;
use vfio_user_server::RegionDescription;
use vfio_user_server::RegionMmap;
use vfio_user_server::ServerCapabilities;
use vfio_user_server::Status;

const BAR0_SIZE: usize = 0x4000;
const BAR2_SIZE: u64 = 0x10000;
/// BAR0 registers: DMA source and destination addresses, a doorbell that copies
/// `DMA_LEN` bytes between them, and one that triggers the MSI-X vector written to it.
const REG_DMA_SRC: usize = 0x08;
const REG_DMA_DST: usize = 0x10;
const REG_IRQ: u64 = 0x18;
const REG_DMA_GO: u64 = 0x20;
const DMA_LEN: usize = 64;

struct FuzzDevice {
    config: [u8; 256],
    bar0: Vec<u8>,
    /// BAR2's memory, also shared with the client through `bar2_fd`.
    bar2: File,
    bar2_fd: Arc<OwnedFd>,
    emulate_bars: bool,
}

impl FuzzDevice {
    fn new(emulate_bars: bool) -> io::Result<FuzzDevice> {
        let bar2 = sys::memfd(c"fuzz-bar2", BAR2_SIZE)?;
        let bar2_fd = Arc::new(OwnedFd::from(bar2.try_clone()?));
        Ok(FuzzDevice {
            config: [0; 256],
            bar0: vec![0; BAR0_SIZE],
            bar2,
            bar2_fd,
            emulate_bars,
        })
    }

    fn bar0_u64(&self, offset: usize) -> u64 {
        u64::from_le_bytes(self.bar0[offset..offset + 8].try_into().unwrap())
    }

    /// The doorbell: copies `DMA_LEN` bytes from the source address to the destination.
    fn dma_copy(&self, ctx: &mut DeviceContext) -> io::Result<()> {
        let mut buf = [0u8; DMA_LEN];
        ctx.dma_read(self.bar0_u64(REG_DMA_SRC), &mut buf)
            .map_err(io::Error::other)?;
        ctx.dma_write(self.bar0_u64(REG_DMA_DST), &buf)
            .map_err(io::Error::other)
    }
}

impl Device for FuzzDevice {
    fn description(&self) -> DeviceDescription {
        let mut regions = vec![RegionDescription::default(); 9];
        regions[0] = RegionDescription::bar(
            BAR0_SIZE as u64,
            BarType::Memory64 {
                prefetchable: false,
            },
        );
        regions[2] = RegionDescription {
            mmap: Some(RegionMmap {
                fd: self.bar2_fd.clone(),
                offset: 0,
                sparse_areas: Some(vec![(0x8000, 0x8000)]),
            }),
            ..RegionDescription::bar(BAR2_SIZE, BarType::Memory32 { prefetchable: true })
        };
        regions[PCI_CONFIG_REGION_INDEX as usize] = RegionDescription::plain(256);
        DeviceDescription {
            regions,
            irqs: IrqCounts {
                intx: 1,
                msi: 0,
                msix: 4,
                err: 1,
                req: 1,
            },
            resettable: true,
            emulate_bars: self.emulate_bars,
        }
    }

    fn region_read(
        &mut self,
        _ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> io::Result<()> {
        let offset = offset as usize;
        match index {
            0 => data.copy_from_slice(&self.bar0[offset..offset + data.len()]),
            2 => self.bar2.read_exact_at(data, offset as u64)?,
            7 => data.copy_from_slice(&self.config[offset..offset + data.len()]),
            _ => data.fill(0xff),
        }
        Ok(())
    }

    fn region_write(
        &mut self,
        ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        match index {
            0 => {
                self.bar0[offset as usize..offset as usize + data.len()].copy_from_slice(data);
                match offset {
                    REG_DMA_GO => self.dma_copy(ctx)?,
                    REG_IRQ => {
                        let vector = u32::from(data.first().copied().unwrap_or(0));
                        if vector < 4 {
                            ctx.interrupts().trigger(PCI_MSIX_IRQ_INDEX, vector);
                        } else {
                            ctx.interrupts().set_intx(vector & 1 != 0);
                        }
                    }
                    _ => {}
                }
            }
            2 => self.bar2.write_all_at(data, offset)?,
            7 => self.config[offset as usize..offset as usize + data.len()].copy_from_slice(data),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        self.bar0.fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let mut device = FuzzDevice::new(control & 0x80 == 0).expect("memfd");
    let mut transport = MemoryTransport::new(stream.to_vec());
    let chunk = usize::from(control & 0x7f);
    if chunk != 0 {
        transport = transport.with_short_reads(chunk);
    }
    let mut connection = Connection::new(transport, &mut device, ServerCapabilities::default())
        .expect("valid description");
    while connection.handle_message() == Status::Open {}
});
