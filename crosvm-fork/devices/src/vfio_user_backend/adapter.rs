// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A crosvm `PciDevice` as a `vfio_user_server::Device`.
//!
//! Guest memory: crosvm fixes a device's `GuestMemory` when it is built, and the client's memory
//! is only known from its DMA_MAPs, which QEMU sends before config accesses and
//! cloud-hypervisor after its capability walk. So the device is built lazily from the maps there
//! are at the first access, and built again at the first BAR access if the maps changed since
//! (firmware remaps low memory while it enumerates), replaying the client's config writes. It is
//! also built again then if the client has placed the shared memory BAR, which the device is
//! then told (virtio-wl hands drivers without VIRTIO_WL_F_USE_SHMEM addresses inside it). From
//! the first BAR access on, the device is kept until DEVICE_RESET or the disconnect; a fresh one
//! serves the next client.
//!
//! BARs: the server emulates the BAR registers (`emulate_bars`), so sizing probes work for both
//! clients and crosvm never sees the client's addresses. crosvm's BARs keep the addresses of the
//! standalone allocator; they only name ioevents (address = crosvm's BAR base + offset), since
//! `read_bar`/`write_bar` take offsets.
//!
//! Shared memory: a virtio shared memory BAR (found by its capability) is offered mappable
//! whole, backed by a `ShadowMemory` that outlives device instances, so the client's mapping
//! stays valid when a device is rebuilt; the VM services place the device's blobs in it. Or, for
//! a BAR that is one file (virtio-pmem), by that `FileRegion`, mappable up to the file's end.
//!
//! MSI-X: the client emulates the table and the Message Control word and sends only eventfds
//! (SET_IRQS). crosvm's own MSI-X state is derived from those alone: enabled while any vector has
//! an eventfd, with those vectors unmasked in its table (placeholder address and data) unless the
//! client masked them with SET_IRQS, so that `MsixConfig` allocates each vector, and the VM
//! services answer with the client's eventfd, which the device then signals itself. When the
//! client gives a vector another eventfd, the vector's message is changed so that crosvm routes
//! it again and takes the new one. The client's writes to Message Control are kept here and read
//! back, never passed on: with the guest's function mask passed on, crosvm would not allocate
//! vectors unmasked meanwhile.

use std::io;
use std::sync::Arc;

use anyhow::Context;
use base::debug;
use base::error;
use base::warn;
use resources::AddressRange;
use vfio_user_server::protocol::PCI_CONFIG_REGION_INDEX;
use vfio_user_server::protocol::PCI_INTX_IRQ_INDEX;
use vfio_user_server::protocol::PCI_MSIX_IRQ_INDEX;
use vfio_user_server::BarType;
use vfio_user_server::Device;
use vfio_user_server::DeviceContext;
use vfio_user_server::DeviceDescription;
use vfio_user_server::GuestMemory as ClientMemory;
use vfio_user_server::Interrupts;
use vfio_user_server::IrqCounts;
use vfio_user_server::RegionDescription;
use vfio_user_server::RegionMapQueue;

use super::build_instance;
use super::config::shared_memory_bar;
use super::config::write_config;
use super::config::MsixLayout;
use super::config::VectorPlan;
use super::Delivery;
use super::HostVisibleBar;
use super::HostVisibleMemory;
use super::Instance;
use super::PciDeviceFactory;

/// The BAR of a virtio-pci device's shared memory region (`SHMEM_BAR_NUM` in crosvm's
/// `VirtioPciDevice`).
const VIRTIO_SHARED_MEMORY_BAR: u8 = 2;

/// Config writes kept for a rebuild; a client that writes more before touching a BAR keeps the
/// device built from the earlier maps.
const MAX_REPLAYED_WRITES: usize = 4096;

pub struct PciDeviceAdapter {
    factory: PciDeviceFactory,
    description: DeviceDescription,
    msix: Option<MsixLayout>,
    instance: Option<Instance>,
    memory: ClientMemory,
    interrupts: Interrupts,
    /// The client's config writes since the device was built, for a rebuild.
    config_writes: Vec<(u64, Vec<u8>)>,
    /// Message Control of MSI-X as the client wrote it.
    msix_control: u16,
    host_visible: Option<HostVisibleBar>,
}

impl PciDeviceAdapter {
    /// Builds the device once to describe it; `factory` builds it again for every client.
    /// `memory` backs the device's shared memory BAR, if it has one, offered for mapping if
    /// `mappable` and through REGION_READ/WRITE in any case.
    pub fn new(
        mut factory: PciDeviceFactory,
        memory: HostVisibleMemory,
        mappable: bool,
    ) -> anyhow::Result<PciDeviceAdapter> {
        // A device may place memory in its BAR as it is built (virtio-pmem its image): the
        // probe gets the memory at virtio-pci's shared memory BAR, the one BAR a virtio device
        // maps into (found again from the capability below).
        let probe_host_visible = HostVisibleBar {
            bar: VIRTIO_SHARED_MEMORY_BAR,
            memory: memory.clone(),
        };
        let probe = build_instance(
            &mut factory,
            &ClientMemory::default(),
            Interrupts::default(),
            Some(probe_host_visible),
            None,
        )
        .context("failed to build the device")?;
        let msix = MsixLayout::parse(probe.device.as_ref());
        let host_visible =
            shared_memory_bar(probe.device.as_ref()).map(|bar| HostVisibleBar { bar, memory });
        let description = describe(&probe, msix.as_ref(), host_visible.as_ref(), mappable)?;
        Ok(PciDeviceAdapter {
            factory,
            description,
            msix,
            instance: None,
            memory: ClientMemory::default(),
            interrupts: Interrupts::default(),
            config_writes: Vec::new(),
            msix_control: 0,
            host_visible,
        })
    }

    fn instance(&mut self) -> io::Result<&mut Instance> {
        if self.instance.is_none() {
            self.instance = Some(self.build()?);
        }
        Ok(self.instance.as_mut().expect("built above"))
    }

    fn build(&mut self) -> io::Result<Instance> {
        self.build_placing(None)
    }

    fn build_placing(&mut self, shared_memory_at: Option<AddressRange>) -> io::Result<Instance> {
        build_instance(
            &mut self.factory,
            &self.memory,
            self.interrupts.clone(),
            self.host_visible.clone(),
            shared_memory_at,
        )
        .map_err(|e| {
            error!("vfio-user: failed to build the device: {e:#}");
            io::Error::from_raw_os_error(libc::EIO)
        })
    }

    /// The device for a BAR access: rebuilt first if this is the first one and the client's
    /// maps changed since the device was built, or the client placed the shared memory BAR
    /// elsewhere than the device was told.
    fn started_instance(&mut self, ctx: &DeviceContext) -> io::Result<&mut Instance> {
        let generation = self.memory.generation();
        let placed = self.shared_memory_placement(ctx);
        let stale = self.instance.as_ref().is_some_and(|i| {
            !i.started
                && (i.memory_generation != generation
                    || i.shared_memory_at != placed.map(|range| range.start))
        });
        if stale && self.config_writes.len() < MAX_REPLAYED_WRITES {
            self.instance = None;
            let mut instance = self.build_placing(placed)?;
            for (offset, data) in &self.config_writes {
                write_config(instance.device.as_mut(), *offset, data);
            }
            self.instance = Some(instance);
            self.sync_msix()?;
        }
        if self.instance.is_none() {
            self.instance = Some(self.build_placing(placed)?);
        }
        let instance = self.instance()?;
        instance.started = true;
        Ok(instance)
    }

    /// Where the client placed the shared memory BAR, once it has.
    fn shared_memory_placement(&self, ctx: &DeviceContext) -> Option<AddressRange> {
        let bar = self.host_visible.as_ref()?.bar;
        let size = self.description.regions.get(usize::from(bar))?.size;
        let address = ctx.bar_address(usize::from(bar)).filter(|&a| a != 0)?;
        AddressRange::from_start_and_size(address, size)
    }

    fn config_read(&mut self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let msix = self.msix;
        let guest_control = self.msix_control;
        let device = self.instance()?.device.as_ref();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            let mut value = device.read_config_register((at / 4) as usize);
            if let Some(msix) = msix.filter(|m| m.control_reg() == (at / 4) as usize) {
                value = msix.merge_control(value, guest_control);
            }
            *byte = value.to_le_bytes()[(at % 4) as usize];
        }
        Ok(())
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        // Message Control of MSI-X stays here (see the module comment); the rest goes on.
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (i, &byte) in data.iter().enumerate() {
            let at = offset + i as u64;
            if let Some(shift) = self.msix.and_then(|m| m.control_byte(at)) {
                self.msix_control &= !(0xff << shift);
                self.msix_control |= u16::from(byte) << shift;
                continue;
            }
            match runs.last_mut() {
                Some((start, run)) if *start + run.len() as u64 == at => run.push(byte),
                _ => runs.push((at, vec![byte])),
            }
        }
        for (start, run) in runs {
            write_config(self.instance()?.device.as_mut(), start, &run);
            if self.config_writes.len() < MAX_REPLAYED_WRITES {
                self.config_writes.push((start, run));
            }
        }
        Ok(())
    }

    /// Programs crosvm's MSI-X state to match the client's eventfds and masks.
    fn sync_msix(&mut self) -> io::Result<()> {
        let Some(msix) = self.msix else {
            return Ok(());
        };
        let interrupts = self.interrupts.clone();
        let instance = self.instance()?;
        let plans: Vec<VectorPlan> = (0..msix.vectors)
            .map(|v| {
                let id = interrupts.eventfd_id(PCI_MSIX_IRQ_INDEX, v);
                VectorPlan {
                    assigned: id.is_some(),
                    masked: interrupts.is_masked(PCI_MSIX_IRQ_INDEX, v),
                    reroute: match (id, instance.services.delivery(v)) {
                        (Some(id), Some(Delivery::Direct(signalled))) => id != signalled,
                        (Some(_), Some(Delivery::Relayed)) => true,
                        _ => false,
                    },
                }
            })
            .collect();
        msix.program(instance.device.as_mut(), &plans);
        Ok(())
    }
}

fn describe(
    instance: &Instance,
    msix: Option<&MsixLayout>,
    host_visible: Option<&HostVisibleBar>,
    mappable: bool,
) -> anyhow::Result<DeviceDescription> {
    let mut regions = vec![RegionDescription::default(); 9];
    for (index, region) in regions.iter_mut().enumerate().take(6) {
        let Some(bar) = instance.device.get_bar_configuration(index) else {
            continue;
        };
        let kind = if bar.is_io() {
            BarType::Io
        } else if bar.is_64bit_memory() {
            BarType::Memory64 {
                prefetchable: bar.is_prefetchable(),
            }
        } else {
            BarType::Memory32 {
                prefetchable: bar.is_prefetchable(),
            }
        };
        // Trapped, never mmappable: virtio-pci keeps its MSI-X table in BAR0.
        *region = RegionDescription::bar(bar.size(), kind);
        if let Some(host_visible) = host_visible.filter(|h| usize::from(h.bar) == index) {
            if msix.is_some_and(|m| m.table_bar == index) {
                anyhow::bail!("the MSI-X table is in the shared memory BAR {index}");
            }
            let name = format!("{}-bar{index}", instance.device.debug_label());
            let mmap = host_visible
                .memory
                .region_mmap(&name, bar.size())
                .context("the shared memory BAR's file")?;
            region.mmap = mmap.filter(|_| mappable);
        }
    }
    regions[PCI_CONFIG_REGION_INDEX as usize] = RegionDescription::plain(256);
    Ok(DeviceDescription {
        regions,
        irqs: IrqCounts {
            intx: 1,
            msix: msix.map_or(0, |m| m.vectors),
            ..Default::default()
        },
        resettable: true,
        emulate_bars: true,
    })
}

impl Device for PciDeviceAdapter {
    fn description(&self) -> DeviceDescription {
        self.description.clone()
    }

    fn region_maps(&mut self, queue: Arc<RegionMapQueue>) {
        // A client that takes the proposed REGION_MAP extension maps blobs itself: no copies.
        if let Some(host_visible) = &self.host_visible {
            host_visible
                .memory
                .set_region_maps(Some(queue), host_visible.bar);
        }
    }

    fn connected(&mut self, memory: ClientMemory, interrupts: Interrupts) {
        self.memory = memory;
        self.interrupts = interrupts;
        // Built again at the first access, with this client's maps and interrupts.
        self.reset_state();
    }

    fn region_read(
        &mut self,
        ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> io::Result<()> {
        match index {
            PCI_CONFIG_REGION_INDEX => self.config_read(offset, data),
            // A client that does not map the shared memory BAR reaches the same bytes.
            _ if self.is_host_visible(index) => {
                self.host_visible_access(|memory| memory.read(offset, data))
            }
            0..=5 => {
                let instance = self.started_instance(ctx)?;
                instance.device.read_bar(index as usize, offset, data);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn region_write(
        &mut self,
        ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        match index {
            PCI_CONFIG_REGION_INDEX => self.config_write(offset, data),
            _ if self.is_host_visible(index) => {
                self.host_visible_access(|memory| memory.write(offset, data))
            }
            0..=5 => {
                // A write to the notify area signals the queue's event: crosvm's write_bar does
                // that itself whether or not an ioevent was registered for it.
                let instance = self.started_instance(ctx)?;
                instance.device.write_bar(index as usize, offset, data);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn interrupts_changed(&mut self, _ctx: &mut DeviceContext, index: u32, _: u32, _: u32) {
        let result = match index {
            PCI_INTX_IRQ_INDEX => self.instance().map(|i| i.services.intx_unmasked()),
            PCI_MSIX_IRQ_INDEX => self.sync_msix(),
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn!("vfio-user: interrupt change not applied: {e}");
        }
    }

    fn dma_unmapping(&mut self, address: u64, size: u64) {
        // crosvm's GuestMemory holds its own mappings of the client's fds, so the device cannot
        // fault; it keeps the old view of the range until it is built again (DEVICE_RESET, next
        // client). Every disconnect unmaps everything, so this is only logged.
        if self.instance.as_ref().is_some_and(|i| i.started) {
            debug!("vfio-user: client unmapped {address:#x}+{size:#x} under a running device");
        }
    }

    fn reset(&mut self) -> io::Result<()> {
        self.reset_state();
        Ok(())
    }

    fn disconnected(&mut self) {
        self.memory = ClientMemory::default();
        self.interrupts = Interrupts::default();
        if let Some(host_visible) = &self.host_visible {
            host_visible.memory.set_region_maps(None, host_visible.bar);
        }
    }
}

impl PciDeviceAdapter {
    fn is_host_visible(&self, index: u32) -> bool {
        self.host_visible
            .as_ref()
            .is_some_and(|h| u32::from(h.bar) == index)
    }

    fn host_visible_access(
        &self,
        access: impl FnOnce(&HostVisibleMemory) -> anyhow::Result<()>,
    ) -> io::Result<()> {
        let memory = &self.host_visible.as_ref().expect("checked").memory;
        access(memory).map_err(|e| {
            debug!("vfio-user: shared memory BAR access refused: {e:#}");
            io::Error::from_raw_os_error(libc::EINVAL)
        })
    }

    fn reset_state(&mut self) {
        self.instance = None;
        self.config_writes.clear();
        self.msix_control = 0;
    }
}
