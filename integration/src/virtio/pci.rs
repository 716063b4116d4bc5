// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The virtio-pci modern transport (virtio 1.x, section 4.1) as a `vfio_user_server::Device`.
//!
//! BAR0 (32-bit, trapped, never mmappable because the MSI-X table lives in it):
//! common config 0x0000, ISR 0x1000, device config 0x2000, notify 0x3000 (4 bytes per queue),
//! MSI-X table 0x4000, PBA 0x5000. Queue notifications are handled on the message loop.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use log::error;
use log::warn;
use vfio_user_server::protocol::PCI_CONFIG_REGION_INDEX;
use vfio_user_server::protocol::PCI_MSIX_IRQ_INDEX;
use vfio_user_server::sys::FaultGuard;
use vfio_user_server::BarType;
use vfio_user_server::Device;
use vfio_user_server::DeviceContext;
use vfio_user_server::DeviceDescription;
use vfio_user_server::GuestMemory;
use vfio_user_server::Interrupts;
use vfio_user_server::IrqCounts;
use vfio_user_server::RegionDescription;
use virtio_queue::Queue;
use virtio_queue::QueueT;
use vm_memory::FileOffset;
use vm_memory::GuestAddress;
use vm_memory::GuestMemoryBackend;
use vm_memory::GuestMemoryMmap;
use vm_memory::GuestMemoryRegion;
use vm_memory::GuestRegionMmap;
use vm_memory::MmapRegion;

use super::VirtioDevice;
use crate::config_space::ConfigSpace;

pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;
/// Modern virtio-pci device IDs are 0x1040 + the virtio device type.
pub const VIRTIO_PCI_DEVICE_ID_BASE: u16 = 0x1040;

pub const BAR0_SIZE: u64 = 0x8000;
pub const COMMON_CFG: u64 = 0x0000;
pub const ISR_CFG: u64 = 0x1000;
pub const DEVICE_CFG: u64 = 0x2000;
pub const NOTIFY_CFG: u64 = 0x3000;
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const MSIX_TABLE: u64 = 0x4000;
pub const MSIX_PBA: u64 = 0x5000;
const REGION_LEN: u64 = 0x1000;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const NO_VECTOR: u16 = 0xffff;

/// device_status bits.
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_NEEDS_RESET: u8 = 0x40;

/// Config-space layout of the capabilities.
const CAP_COMMON: usize = 0x40;
const CAP_ISR: usize = 0x50;
const CAP_DEVICE: usize = 0x60;
const CAP_NOTIFY: usize = 0x70;
const CAP_MSIX: usize = 0x88;

/// virtio_pci_cap cfg_type values.
const CFG_TYPE_COMMON: u8 = 1;
const CFG_TYPE_NOTIFY: u8 = 2;
const CFG_TYPE_ISR: u8 = 3;
const CFG_TYPE_DEVICE: u8 = 4;

struct QueueState {
    queue: Queue,
    msix_vector: u16,
}

/// A virtio device with its transport state.
pub struct VirtioPci<D: VirtioDevice> {
    device: D,
    config: ConfigSpace,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    config_msix_vector: u16,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    queues: Vec<QueueState>,
    isr: u8,
    msix_table: Vec<u8>,
    /// The driver's memory, built from the client's DMA maps, and the maps' generation it was
    /// built from: QEMU remaps parts of RAM while devices run (SeaBIOS programs the chipset
    /// while it drives virtio-blk to boot from it), so the view is rebuilt when maps change.
    memory: Option<DriverMemory>,
    client_memory: GuestMemory,
    interrupts: Interrupts,
}

/// The driver's memory: the client's fds mapped again, each mapping guarded against faults.
struct DriverMemory {
    /// Declared first: the guards end before the mappings go.
    _guards: Vec<FaultGuard>,
    memory: GuestMemoryMmap,
    /// `GuestMemory::generation` of the maps it was built from.
    generation: u64,
}

fn put_u16(config: &mut [u8], at: usize, value: u16) {
    config[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(config: &mut [u8], at: usize, value: u32) {
    config[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// Writes a virtio_pci_cap (16 bytes, 20 for notify) at `at`.
fn put_virtio_cap(config: &mut [u8], at: usize, next: usize, cfg_type: u8, offset: u64, len: u32) {
    let cap_len = if cfg_type == CFG_TYPE_NOTIFY { 20 } else { 16 };
    config[at] = 0x09; // vendor-specific
    config[at + 1] = next as u8;
    config[at + 2] = cap_len;
    config[at + 3] = cfg_type;
    config[at + 4] = 0; // BAR0
    put_u32(config, at + 8, offset as u32);
    put_u32(config, at + 12, len);
    if cfg_type == CFG_TYPE_NOTIFY {
        put_u32(config, at + 16, NOTIFY_OFF_MULTIPLIER);
    }
}

impl<D: VirtioDevice> VirtioPci<D> {
    pub fn new(device: D) -> VirtioPci<D> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&size| QueueState {
                queue: Queue::new(size).expect("queue sizes are powers of two"),
                msix_vector: NO_VECTOR,
            })
            .collect::<Vec<_>>();
        let vectors = queues.len() + 1;
        let mut config = [0u8; 256];
        put_u16(&mut config, 0, VIRTIO_VENDOR_ID);
        put_u16(
            &mut config,
            2,
            VIRTIO_PCI_DEVICE_ID_BASE + device.device_type(),
        );
        config[6] = 0x10; // capability list
        config[8] = 1; // revision 1: modern
        config[9..12].copy_from_slice(&device.class_code().to_le_bytes()[..3]);
        put_u16(&mut config, 0x2c, VIRTIO_VENDOR_ID);
        put_u16(&mut config, 0x2e, 0x40);
        config[0x34] = CAP_COMMON as u8;
        config[0x3d] = 1; // INTA
        put_virtio_cap(
            &mut config,
            CAP_COMMON,
            CAP_ISR,
            CFG_TYPE_COMMON,
            COMMON_CFG,
            0x38,
        );
        put_virtio_cap(&mut config, CAP_ISR, CAP_DEVICE, CFG_TYPE_ISR, ISR_CFG, 1);
        put_virtio_cap(
            &mut config,
            CAP_DEVICE,
            CAP_NOTIFY,
            CFG_TYPE_DEVICE,
            DEVICE_CFG,
            REGION_LEN as u32,
        );
        put_virtio_cap(
            &mut config,
            CAP_NOTIFY,
            CAP_MSIX,
            CFG_TYPE_NOTIFY,
            NOTIFY_CFG,
            REGION_LEN as u32,
        );
        config[CAP_MSIX] = 0x11;
        config[CAP_MSIX + 1] = 0;
        put_u16(&mut config, CAP_MSIX + 2, (vectors - 1) as u16);
        put_u32(&mut config, CAP_MSIX + 4, MSIX_TABLE as u32);
        put_u32(&mut config, CAP_MSIX + 8, MSIX_PBA as u32);
        VirtioPci {
            device,
            config: ConfigSpace::new(config, CAP_MSIX),
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            config_msix_vector: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues,
            isr: 0,
            msix_table: vec![0; vectors * 16],
            memory: None,
            client_memory: GuestMemory::default(),
            interrupts: Interrupts::default(),
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    fn msix_vectors(&self) -> u32 {
        self.queues.len() as u32 + 1
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn reset_transport(&mut self) {
        self.device.reset();
        for state in &mut self.queues {
            state.queue.reset();
            state.msix_vector = NO_VECTOR;
        }
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.driver_features = 0;
        self.config_msix_vector = NO_VECTOR;
        self.status = 0;
        self.queue_select = 0;
        self.isr = 0;
        self.memory = None;
        self.interrupts.set_intx(false);
    }

    /// Builds the driver's memory from the client's maps that came with an fd. Maps without
    /// one (QEMU's BIOS ROM, or RAM that is not shared) stay out of reach: a ring placed there
    /// fails its access.
    fn build_memory(memory: &GuestMemory) -> io::Result<DriverMemory> {
        let generation = memory.generation();
        let mut regions = Vec::new();
        for map in memory.maps() {
            let Some((fd, offset)) = map.fd else {
                log::debug!("virtio: map at {:#x} has no fd, left out", map.address);
                continue;
            };
            let file = File::from(fd.as_fd().try_clone_to_owned()?);
            let mapping = MmapRegion::from_file(FileOffset::new(file, offset), map.size as usize)
                .map_err(io::Error::other)?;
            regions.push(
                GuestRegionMmap::new(mapping, GuestAddress(map.address))
                    .ok_or_else(|| io::Error::other("map wraps the address space"))?,
            );
        }
        let mapped = GuestMemoryMmap::from_regions(regions).map_err(io::Error::other)?;
        let mut guards = Vec::new();
        for region in mapped.iter() {
            // SAFETY: the region is a mapping of the client's memory owned by `mapped`, which
            // lives in the same `DriverMemory` as the guards and is dropped after them. Only
            // this device reaches it, through `&mut self`, so no access runs when they go.
            let guard = unsafe {
                memory.guard_mapping(
                    region.as_ptr(),
                    region.len() as usize,
                    region.start_addr().0,
                )
            }
            .map_err(io::Error::other)?;
            guards.push(guard);
        }
        Ok(DriverMemory {
            _guards: guards,
            memory: mapped,
            generation,
        })
    }

    fn set_status(&mut self, status: u8) {
        if status == 0 {
            self.reset_transport();
            return;
        }
        self.status = status;
        if status & STATUS_FEATURES_OK != 0 && self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            // A legacy driver: refuse FEATURES_OK.
            self.status &= !STATUS_FEATURES_OK;
        }
    }

    /// The driver's memory as of the current maps, rebuilt if they changed since last time.
    fn current_memory(&mut self) -> io::Result<&GuestMemoryMmap> {
        let generation = self.client_memory.generation();
        if self
            .memory
            .as_ref()
            .is_none_or(|built| built.generation != generation)
        {
            self.memory = None;
            self.memory = Some(Self::build_memory(&self.client_memory)?);
        }
        Ok(&self.memory.as_ref().expect("built above").memory)
    }

    fn selected(&mut self) -> Option<&mut QueueState> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn common_read(&mut self, offset: u64) -> u64 {
        let select = self.queue_select as usize;
        let queue = self.queues.get(select);
        match offset {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.device_features() & 0xffff_ffff,
                1 => self.device_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.config_msix_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_select),
            0x18 => queue.map_or(0, |q| u64::from(q.queue.size())),
            0x1a => queue.map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector)),
            0x1c => queue.map_or(0, |q| u64::from(q.queue.ready())),
            0x1e => select as u64,
            0x20 => queue.map_or(0, |q| q.queue.desc_table() & 0xffff_ffff),
            0x24 => queue.map_or(0, |q| q.queue.desc_table() >> 32),
            0x28 => queue.map_or(0, |q| q.queue.avail_ring() & 0xffff_ffff),
            0x2c => queue.map_or(0, |q| q.queue.avail_ring() >> 32),
            0x30 => queue.map_or(0, |q| q.queue.used_ring() & 0xffff_ffff),
            0x34 => queue.map_or(0, |q| q.queue.used_ring() >> 32),
            _ => 0,
        }
    }

    fn common_write(&mut self, offset: u64, value: u64) {
        let low = Some(value as u32);
        match offset {
            0x00 => self.device_feature_select = value as u32,
            0x08 => self.driver_feature_select = value as u32,
            0x0c => {
                let offered = self.device_features();
                match self.driver_feature_select {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | (value & offered & 0xffff_ffff)
                    }
                    1 => {
                        self.driver_features = (self.driver_features & 0xffff_ffff)
                            | ((value << 32) & offered & !0xffff_ffff)
                    }
                    _ => {}
                }
            }
            0x10 => self.config_msix_vector = value as u16,
            0x14 => self.set_status(value as u8),
            0x16 => self.queue_select = value as u16,
            0x18 => {
                if let Some(q) = self.selected() {
                    q.queue.set_size(value as u16);
                }
            }
            0x1a => {
                if let Some(q) = self.selected() {
                    q.msix_vector = value as u16;
                }
            }
            0x1c => {
                if let Some(q) = self.selected() {
                    q.queue.set_ready(value & 1 != 0);
                }
            }
            0x20 => self
                .selected()
                .into_iter()
                .for_each(|q| q.queue.set_desc_table_address(low, None)),
            0x24 => self
                .selected()
                .into_iter()
                .for_each(|q| q.queue.set_desc_table_address(None, low)),
            0x28 => self
                .selected()
                .into_iter()
                .for_each(|q| q.queue.set_avail_ring_address(low, None)),
            0x2c => self
                .selected()
                .into_iter()
                .for_each(|q| q.queue.set_avail_ring_address(None, low)),
            0x30 => self
                .selected()
                .into_iter()
                .for_each(|q| q.queue.set_used_ring_address(low, None)),
            0x34 => self
                .selected()
                .into_iter()
                .for_each(|q| q.queue.set_used_ring_address(None, low)),
            _ => {}
        }
    }

    /// Interrupts the driver for a queue: its MSI-X vector if the client gave an eventfd for it,
    /// INTx (with the ISR bit) otherwise.
    fn notify_driver(&mut self, interrupts: &Interrupts, vector: u16) {
        if vector != NO_VECTOR && interrupts.is_enabled(PCI_MSIX_IRQ_INDEX, u32::from(vector)) {
            interrupts.trigger(PCI_MSIX_IRQ_INDEX, u32::from(vector));
        } else {
            self.isr |= 1;
            interrupts.set_intx(true);
        }
    }

    fn queue_notify(&mut self, ctx: &mut DeviceContext, index: usize) {
        if self.status & STATUS_DRIVER_OK == 0 {
            return;
        }
        if let Err(e) = self.current_memory() {
            error!("virtio: no view of the driver's memory: {e}");
            self.status |= STATUS_NEEDS_RESET;
            return;
        }
        let Some(DriverMemory { memory, .. }) = self.memory.as_ref() else {
            return;
        };
        let Some(state) = self.queues.get_mut(index) else {
            warn!("virtio: notify for queue {index}, which does not exist");
            return;
        };
        if !state.queue.ready() {
            return;
        }
        match self.device.process_queue(index, &mut state.queue, memory) {
            Ok(true) => {
                let vector = state.msix_vector;
                let interrupts = ctx.interrupts().clone();
                self.notify_driver(&interrupts, vector);
            }
            Ok(false) => {}
            Err(e) => {
                error!("virtio: queue {index} failed: {e}");
                self.status |= STATUS_NEEDS_RESET;
            }
        }
    }

    fn bar0_read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            o if o < COMMON_CFG + REGION_LEN => self.common_read(o - COMMON_CFG),
            ISR_CFG => {
                // Reading the ISR acknowledges it and lowers INTx.
                let isr = self.isr;
                self.isr = 0;
                self.interrupts.set_intx(false);
                u64::from(isr)
            }
            o if (DEVICE_CFG..DEVICE_CFG + REGION_LEN).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG, data);
                return;
            }
            o if (MSIX_TABLE..MSIX_TABLE + self.msix_table.len() as u64).contains(&o) => {
                let at = (o - MSIX_TABLE) as usize;
                let end = (at + data.len()).min(self.msix_table.len());
                data[..end - at].copy_from_slice(&self.msix_table[at..end]);
                return;
            }
            o if (MSIX_PBA..MSIX_PBA + 8).contains(&o) => {
                (0..self.msix_vectors())
                    .filter(|&v| self.interrupts.is_pending(PCI_MSIX_IRQ_INDEX, v))
                    .fold(0u64, |bits, v| bits | 1 << v)
                    >> ((o - MSIX_PBA) * 8)
            }
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn bar0_write(&mut self, ctx: &mut DeviceContext, offset: u64, data: &[u8]) {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(raw);
        match offset {
            o if o < COMMON_CFG + REGION_LEN => self.common_write(o - COMMON_CFG, value),
            o if (NOTIFY_CFG..NOTIFY_CFG + REGION_LEN).contains(&o) => {
                let index = ((o - NOTIFY_CFG) / u64::from(NOTIFY_OFF_MULTIPLIER)) as usize;
                self.queue_notify(ctx, index);
            }
            o if (MSIX_TABLE..MSIX_TABLE + self.msix_table.len() as u64).contains(&o) => {
                let at = (o - MSIX_TABLE) as usize;
                let end = (at + n).min(self.msix_table.len());
                self.msix_table[at..end].copy_from_slice(&data[..end - at]);
            }
            _ => {}
        }
    }
}

impl<D: VirtioDevice> Device for VirtioPci<D> {
    fn description(&self) -> DeviceDescription {
        let mut regions = vec![RegionDescription::default(); 9];
        regions[0] = RegionDescription::bar(
            BAR0_SIZE,
            BarType::Memory32 {
                prefetchable: false,
            },
        );
        regions[PCI_CONFIG_REGION_INDEX as usize] = RegionDescription::plain(256);
        DeviceDescription {
            regions,
            irqs: IrqCounts {
                intx: 1,
                msi: 0,
                msix: self.msix_vectors(),
                err: 0,
                req: 0,
            },
            resettable: true,
            emulate_bars: true,
        }
    }

    fn connected(&mut self, memory: GuestMemory, interrupts: Interrupts) {
        self.client_memory = memory;
        self.interrupts = interrupts;
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
            PCI_CONFIG_REGION_INDEX => self.config.write(offset, data),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
        Ok(())
    }

    fn dma_unmapping(&mut self, _address: u64, _size: u64) {
        // Let go of our own mappings of the range; the next notification rebuilds the view from
        // whatever maps there are then.
        self.memory = None;
    }

    fn reset(&mut self) -> io::Result<()> {
        self.reset_transport();
        self.config.reset();
        self.msix_table.iter_mut().for_each(|b| *b = 0);
        Ok(())
    }

    fn disconnected(&mut self) {
        self.client_memory = GuestMemory::default();
        self.interrupts = Interrupts::default();
    }
}
