// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A test-only PCI device that exercises every path of `vfio_user_server`.
//!
//! - Config space with an MSI-X capability; BARs answered by the server's emulation.
//! - BAR0: 64-bit, 16 KiB, trapped: registers, a DMA engine, the MSI-X table and PBA.
//! - BAR2: 32-bit, 64 KiB, backed by a memfd; mmappable except its first page (sparse area).
//! - INTx, 4 MSI-X vectors, ERR and REQ.
//! - The DMA doorbell is also an ioeventfd (GET_REGION_IO_FDS), served by a worker thread.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;

use vfio_user_server::protocol::PCI_CONFIG_REGION_INDEX;
use vfio_user_server::protocol::PCI_MSIX_IRQ_INDEX;
use vfio_user_server::sys;
use vfio_user_server::BarType;
use vfio_user_server::Device;
use vfio_user_server::DeviceContext;
use vfio_user_server::DeviceDescription;
use vfio_user_server::GuestMemory;
use vfio_user_server::Interrupts;
use vfio_user_server::IoEventFd;
use vfio_user_server::IrqCounts;
use vfio_user_server::RegionDescription;
use vfio_user_server::RegionMmap;

use crate::config_space::ConfigSpace;

pub const VENDOR_ID: u16 = 0x1b36;
pub const DEVICE_ID: u16 = 0x7fff;
pub const CLASS_CODE: u32 = 0xff0000;

pub const BAR0_SIZE: u64 = 0x4000;
pub const BAR2_SIZE: u64 = 0x10000;
pub const MSIX_VECTORS: u32 = 4;
pub const MSIX_CAP_OFFSET: usize = 0x40;

/// BAR0 registers.
pub mod regs {
    /// Reads `MAGIC`.
    pub const ID: u64 = 0x00;
    pub const MAGIC: u32 = 0x5245_4644;
    /// DMA source and destination guest addresses (u64) and length (u32).
    pub const DMA_SRC: u64 = 0x08;
    pub const DMA_DST: u64 = 0x10;
    pub const DMA_LEN: u64 = 0x18;
    /// The interrupt a finished DMA raises: an MSI-X vector, or `IRQ_INTX`.
    pub const DMA_IRQ: u64 = 0x1c;
    pub const IRQ_INTX: u32 = 0xffff_ffff;
    pub const IRQ_NONE: u32 = 0xffff_fffe;
    /// Any write starts the DMA; also offered as an ioeventfd.
    pub const DOORBELL: u64 = 0x20;
    /// errno of the last DMA (0: success).
    pub const DMA_STATUS: u64 = 0x24;
    /// Read/write scratch register, cleared by reset.
    pub const SCRATCH: u64 = 0x28;
    /// Write 1 to assert INTx, 0 to deassert.
    pub const INTX: u64 = 0x30;
    /// Number of finished DMAs (ro).
    pub const DMA_COUNT: u64 = 0x34;
    /// Number of DMA maps the server holds (ro).
    pub const DMA_MAPS: u64 = 0x38;
    pub const MSIX_TABLE: u64 = 0x2000;
    pub const MSIX_PBA: u64 = 0x3000;
}

#[derive(Debug, Default)]
struct Registers {
    dma_src: u64,
    dma_dst: u64,
    dma_len: u32,
    dma_irq: u32,
    dma_status: u32,
    dma_count: u32,
    scratch: u64,
    msix_table: Vec<u8>,
}

impl Registers {
    fn reset(&mut self) {
        *self = Registers {
            msix_table: vec![0; MSIX_VECTORS as usize * 16],
            dma_irq: regs::IRQ_NONE,
            ..Default::default()
        };
    }
}

/// What the worker thread needs: the registers and the connection's handles.
struct Shared {
    registers: Mutex<Registers>,
}

/// The largest DMA the engine copies at once.
const MAX_DMA: u32 = 1 << 20;

/// How the DMA engine reaches client memory: through the connection's context on the message
/// loop (which can also ask the client), or through the shared memory handle on the worker.
trait DmaPath {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> vfio_user_server::Result<()>;
    fn write(&mut self, address: u64, data: &[u8]) -> vfio_user_server::Result<()>;
}

impl DmaPath for GuestMemory {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> vfio_user_server::Result<()> {
        GuestMemory::read(self, address, buf)
    }

    fn write(&mut self, address: u64, data: &[u8]) -> vfio_user_server::Result<()> {
        GuestMemory::write(self, address, data)
    }
}

impl DmaPath for DeviceContext<'_> {
    fn read(&mut self, address: u64, buf: &mut [u8]) -> vfio_user_server::Result<()> {
        self.dma_read(address, buf)
    }

    fn write(&mut self, address: u64, data: &[u8]) -> vfio_user_server::Result<()> {
        self.dma_write(address, data)
    }
}

/// Copies `dma_len` bytes from `dma_src` to `dma_dst`, then raises the configured interrupt.
/// Shared by the trapped doorbell and the ioeventfd worker.
fn run_dma(registers: &mut Registers, interrupts: &Interrupts, dma: &mut dyn DmaPath) {
    let result = if registers.dma_len > MAX_DMA {
        Err(libc::E2BIG)
    } else {
        let mut buf = vec![0u8; registers.dma_len as usize];
        dma.read(registers.dma_src, &mut buf)
            .and_then(|()| dma.write(registers.dma_dst, &buf))
            .map_err(|e| {
                log::info!("reference device DMA failed: {e}");
                libc::EFAULT
            })
    };
    registers.dma_status = result.err().unwrap_or(0) as u32;
    registers.dma_count = registers.dma_count.wrapping_add(1);
    match registers.dma_irq {
        regs::IRQ_NONE => {}
        regs::IRQ_INTX => {
            interrupts.set_intx(true);
        }
        vector => {
            interrupts.trigger(PCI_MSIX_IRQ_INDEX, vector);
        }
    }
}

struct Worker {
    stop: OwnedFd,
    thread: JoinHandle<()>,
}

pub struct ReferenceDevice {
    config: ConfigSpace,
    bar2: Arc<File>,
    bar2_fd: Arc<OwnedFd>,
    doorbell: Arc<OwnedFd>,
    shared: Arc<Shared>,
    memory: GuestMemory,
    interrupts: Interrupts,
    worker: Option<Worker>,
}

fn initial_config() -> [u8; 256] {
    let mut config = [0u8; 256];
    config[0..2].copy_from_slice(&VENDOR_ID.to_le_bytes());
    config[2..4].copy_from_slice(&DEVICE_ID.to_le_bytes());
    // Status: capability list present.
    config[6] = 0x10;
    config[8] = 1; // revision
    config[9..12].copy_from_slice(&CLASS_CODE.to_le_bytes()[..3]);
    config[0x2c..0x2e].copy_from_slice(&VENDOR_ID.to_le_bytes());
    config[0x2e..0x30].copy_from_slice(&0x0001u16.to_le_bytes());
    config[0x34] = MSIX_CAP_OFFSET as u8;
    config[0x3d] = 1; // INTA
                      // MSI-X: id, next, control (table size - 1), table BIR 0 at 0x2000, PBA BIR 0 at 0x3000.
    config[MSIX_CAP_OFFSET] = 0x11;
    config[MSIX_CAP_OFFSET + 1] = 0;
    config[MSIX_CAP_OFFSET + 2..MSIX_CAP_OFFSET + 4]
        .copy_from_slice(&((MSIX_VECTORS - 1) as u16).to_le_bytes());
    config[MSIX_CAP_OFFSET + 4..MSIX_CAP_OFFSET + 8]
        .copy_from_slice(&(regs::MSIX_TABLE as u32).to_le_bytes());
    config[MSIX_CAP_OFFSET + 8..MSIX_CAP_OFFSET + 12]
        .copy_from_slice(&(regs::MSIX_PBA as u32).to_le_bytes());
    config
}

impl ReferenceDevice {
    pub fn new() -> io::Result<ReferenceDevice> {
        let bar2 = sys::memfd(c"reference-bar2", BAR2_SIZE)?;
        let bar2_fd = Arc::new(OwnedFd::from(bar2.try_clone()?));
        let mut registers = Registers::default();
        registers.reset();
        Ok(ReferenceDevice {
            config: ConfigSpace::new(initial_config(), MSIX_CAP_OFFSET),
            bar2: Arc::new(bar2),
            bar2_fd,
            doorbell: Arc::new(sys::eventfd(true)?),
            shared: Arc::new(Shared {
                registers: Mutex::new(registers),
            }),
            memory: GuestMemory::default(),
            interrupts: Interrupts::default(),
            worker: None,
        })
    }

    fn registers(&self) -> std::sync::MutexGuard<'_, Registers> {
        self.shared
            .registers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn start_worker(&mut self) -> io::Result<()> {
        let stop = sys::eventfd(true)?;
        let stop_for_thread = stop.try_clone()?;
        let doorbell = self.doorbell.clone();
        let shared = self.shared.clone();
        let mut memory = self.memory.clone();
        let interrupts = self.interrupts.clone();
        let thread = std::thread::spawn(move || loop {
            let mut fds = [
                libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&*doorbell),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&stop_for_thread),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds in a live local array.
            let ret = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ret < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            if fds[0].revents != 0 && sys::eventfd_read(doorbell.as_fd()).unwrap_or(0) > 0 {
                let mut registers = shared
                    .registers
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                run_dma(&mut registers, &interrupts, &mut memory);
            }
        });
        self.worker = Some(Worker { stop, thread });
        Ok(())
    }

    fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            let _ = sys::eventfd_signal(worker.stop.as_fd());
            let _ = worker.thread.join();
        }
    }

    fn bar0_read(&self, offset: u64, data: &mut [u8]) {
        let registers = self.registers();
        let value: u64 = match offset & !0x3 {
            regs::ID => u64::from(regs::MAGIC),
            regs::DMA_SRC => registers.dma_src,
            0x0c => registers.dma_src >> 32,
            regs::DMA_DST => registers.dma_dst,
            0x14 => registers.dma_dst >> 32,
            regs::DMA_LEN => u64::from(registers.dma_len),
            regs::DMA_IRQ => u64::from(registers.dma_irq),
            regs::DMA_STATUS => u64::from(registers.dma_status),
            regs::SCRATCH => registers.scratch,
            0x2c => registers.scratch >> 32,
            regs::DMA_COUNT => u64::from(registers.dma_count),
            regs::DMA_MAPS => self.memory.map_count() as u64,
            o if (regs::MSIX_TABLE..regs::MSIX_TABLE + 64).contains(&o) => {
                let i = (o - regs::MSIX_TABLE) as usize;
                u64::from(u32::from_le_bytes(
                    registers.msix_table[i..i + 4].try_into().unwrap(),
                ))
            }
            regs::MSIX_PBA => (0..MSIX_VECTORS)
                .filter(|&v| self.interrupts.is_pending(PCI_MSIX_IRQ_INDEX, v))
                .fold(0, |bits, v| bits | 1 << v),
            _ => 0,
        };
        let shift = (offset & 0x3) * 8;
        let bytes = (value >> shift).to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn bar0_write(&mut self, ctx: &mut DeviceContext, offset: u64, data: &[u8]) {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(raw);
        let mut registers = self.registers();
        let set_low = |field: &mut u64| *field = (*field & !0xffff_ffff) | (value & 0xffff_ffff);
        match offset {
            regs::DMA_SRC if n == 8 => registers.dma_src = value,
            regs::DMA_SRC => set_low(&mut registers.dma_src),
            0x0c => registers.dma_src = (registers.dma_src & 0xffff_ffff) | value << 32,
            regs::DMA_DST if n == 8 => registers.dma_dst = value,
            regs::DMA_DST => set_low(&mut registers.dma_dst),
            0x14 => registers.dma_dst = (registers.dma_dst & 0xffff_ffff) | value << 32,
            regs::DMA_LEN => registers.dma_len = value as u32,
            regs::DMA_IRQ => registers.dma_irq = value as u32,
            regs::DOORBELL => {
                // The trapped doorbell runs on the message loop, so DMA may also go through the
                // client for memory it shared without an fd.
                let interrupts = ctx.interrupts().clone();
                run_dma(&mut registers, &interrupts, ctx);
            }
            regs::SCRATCH if n == 8 => registers.scratch = value,
            regs::SCRATCH => set_low(&mut registers.scratch),
            0x2c => registers.scratch = (registers.scratch & 0xffff_ffff) | value << 32,
            regs::INTX => {
                ctx.interrupts().set_intx(value & 1 != 0);
            }
            o if (regs::MSIX_TABLE..regs::MSIX_TABLE + 64).contains(&o) => {
                let i = (o - regs::MSIX_TABLE) as usize;
                let end = (i + n).min(registers.msix_table.len());
                registers.msix_table[i..end].copy_from_slice(&data[..end - i]);
            }
            _ => {}
        }
    }
}

impl Device for ReferenceDevice {
    fn description(&self) -> DeviceDescription {
        let mut regions = vec![RegionDescription::default(); 9];
        regions[0] = RegionDescription::bar(
            BAR0_SIZE,
            BarType::Memory64 {
                prefetchable: false,
            },
        );
        regions[2] = RegionDescription {
            size: BAR2_SIZE,
            readable: true,
            writable: true,
            bar: BarType::Memory32 { prefetchable: true },
            mmap: Some(RegionMmap {
                fd: self.bar2_fd.clone(),
                offset: 0,
                // The first page stays trapped.
                sparse_areas: Some(vec![(0x1000, BAR2_SIZE - 0x1000)]),
            }),
        };
        regions[PCI_CONFIG_REGION_INDEX as usize] = RegionDescription::plain(256);
        DeviceDescription {
            regions,
            irqs: IrqCounts {
                intx: 1,
                msi: 0,
                msix: MSIX_VECTORS,
                err: 1,
                req: 1,
            },
            resettable: true,
            emulate_bars: true,
        }
    }

    fn connected(&mut self, memory: GuestMemory, interrupts: Interrupts) {
        self.memory = memory;
        self.interrupts = interrupts;
        if let Err(e) = self.start_worker() {
            log::error!("reference device: no doorbell worker: {e}");
        }
    }

    fn region_read(
        &mut self,
        _ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> io::Result<()> {
        match index {
            0 => self.bar0_read(offset, data),
            2 => self.bar2.read_exact_at(data, offset)?,
            PCI_CONFIG_REGION_INDEX => self.config.read(offset, data),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
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
            0 => self.bar0_write(ctx, offset, data),
            2 => self.bar2.write_all_at(data, offset)?,
            PCI_CONFIG_REGION_INDEX => self.config.write(offset, data),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
        Ok(())
    }

    fn region_io_fds(&self, index: u32) -> Vec<IoEventFd<'_>> {
        if index != 0 {
            return Vec::new();
        }
        vec![IoEventFd {
            offset: regs::DOORBELL,
            size: 4,
            datamatch: None,
            fd: self.doorbell.as_fd(),
        }]
    }

    fn reset(&mut self) -> io::Result<()> {
        self.registers().reset();
        self.config.reset();
        self.bar2.set_len(0)?;
        self.bar2.set_len(BAR2_SIZE)?;
        Ok(())
    }

    fn disconnected(&mut self) {
        self.stop_worker();
        self.memory = GuestMemory::default();
        self.interrupts = Interrupts::default();
    }
}

impl Drop for ReferenceDevice {
    fn drop(&mut self) {
        self.stop_worker();
    }
}
