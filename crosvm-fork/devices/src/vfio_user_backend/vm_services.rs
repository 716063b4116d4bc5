// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The VM side of a crosvm `PciDevice`, answered on a thread since there is no VM.
//!
//! A device sends requests over tubes and waits for the answers inside `write_bar` and
//! `write_config_register`, which run on the vfio-user message loop, so they are answered here:
//! - MSI (`VmIrqRequest`): `MsixConfig` is answered with the client's MSI-X eventfd for the vector
//!   (`queue_id` is the vector index), which the device then signals itself: no thread between the
//!   device and the client. A route change (`AddMsiRoute`) brings the vector's current eventfd if
//!   the client gave it another one since (see [`Delivery`]). A vector allocated before the client
//!   gave it an eventfd keeps crosvm's own irqfd, relayed here to the client's eventfd until its
//!   route changes.
//! - ioevents (`VmMemoryRequest::IoEventRaw`): the events are kept; without them, crosvm's
//!   `write_bar` to the notify area signals the queue itself, so REGION_WRITE needs nothing more.
//! - shared memory (`VmMemoryRequest::RegisterMemory`/`UnregisterMemory` into the host-visible
//!   BAR): the file is placed in the BAR's [`ShadowMemory`], which the client maps, before the
//!   request is answered; its region id is its offset in the BAR. A BAR that is one file
//!   ([`FileRegion`], virtio-pmem's image) takes only that file, where it already is.
//! - memory a balloon frees (`VmMemoryRequest::DynamicallyFreeMemoryRanges`): a hole is punched in
//!   the client's memory file under each range, so the host gets the pages back as crosvm's VM
//!   would give them; reclaiming needs nothing (the pages return when touched), and the target
//!   reached is only acknowledged.
//! - the VM control tube (`VmRequest`): only the PM wakeup GPE, answered `Ok`.
//! - the INTx trigger, relayed to the client as an edge that the client's unmask resamples: crosvm
//!   takes INTx's events once, at `assign_irq`, before the client gives its eventfd.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use anyhow::bail;
use anyhow::Context;
use base::error;
use base::warn;
use base::AsRawDescriptor;
use base::Event;
use base::EventToken;
use base::EventWaitResult;
use base::Protection;
use base::SafeDescriptor;
use base::Tube;
use base::TubeError;
use base::WaitContext;
use base::WorkerThread;
use resources::Alloc;
use sync::Mutex;
use vfio_user_server::protocol::PCI_MSIX_IRQ_INDEX;
use vfio_user_server::EventfdId;
use vfio_user_server::FileRegion;
use vfio_user_server::GuestMemory as ClientMemory;
use vfio_user_server::Interrupts;
use vfio_user_server::RegionMapQueue;
use vfio_user_server::RegionMmap;
use vfio_user_server::ShadowMemory;
use vm_control::api::VmMemoryClient;
use vm_control::VmIrqRequest;
use vm_control::VmIrqResponse;
use vm_control::VmMemoryDestination;
use vm_control::VmMemoryRegionId;
use vm_control::VmMemoryRequest;
use vm_control::VmMemoryResponse;
use vm_control::VmMemorySource;
use vm_control::VmRequest;
use vm_control::VmResponse;
use vm_memory::GuestAddress;

use crate::IrqLevelEvent;

/// The device's ends of the VM services, handed to the factory that builds the device.
pub struct VmEndpoints {
    /// For `MsixConfig` (`VirtioPciDevice::new`'s `msi_device_tube`).
    pub msi_tube: Tube,
    /// For ioevent registration (`ioevent_vm_memory_client`).
    pub ioevent_client: VmMemoryClient,
    /// For shared-memory mappings, and a balloon's freed memory; a device that needs neither
    /// drops it.
    pub shared_memory_client: VmMemoryClient,
    /// `VirtioPciDevice::new`'s `vm_control_tube`.
    pub vm_control_tube: Tube,
}

/// The BAR that holds the device's host-visible memory, and the memory the client maps for it.
#[derive(Clone)]
pub struct HostVisibleBar {
    pub bar: u8,
    pub memory: HostVisibleMemory,
}

/// What backs a device's host-visible BAR.
#[derive(Clone)]
pub enum HostVisibleMemory {
    /// Files the device places while the guest runs (virtio-gpu's blobs), kept coherent with
    /// one file that the client maps.
    Shadow(Arc<ShadowMemory>),
    /// One file for the device's life, which the client maps itself (virtio-pmem's image).
    File(Arc<FileRegion>),
}

impl HostVisibleMemory {
    /// How the client maps the BAR of `size` bytes (`name` names a file made for it).
    pub fn region_mmap(&self, name: &str, size: u64) -> anyhow::Result<Option<RegionMmap>> {
        Ok(match self {
            HostVisibleMemory::Shadow(shadow) => Some(shadow.region_mmap(name, size)?),
            HostVisibleMemory::File(file) => file.region_mmap(size)?,
        })
    }

    /// A trapped read of the BAR.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> anyhow::Result<()> {
        match self {
            HostVisibleMemory::Shadow(shadow) => shadow.read(offset, data)?,
            HostVisibleMemory::File(file) => file.read(offset, data)?,
        }
        Ok(())
    }

    /// A trapped write to the BAR.
    pub fn write(&self, offset: u64, data: &[u8]) -> anyhow::Result<()> {
        match self {
            HostVisibleMemory::Shadow(shadow) => shadow.write(offset, data)?,
            HostVisibleMemory::File(file) => file.write(offset, data)?,
        }
        Ok(())
    }

    /// The client's REGION_MAP queue, for files placed while it is connected.
    pub fn set_region_maps(&self, queue: Option<Arc<RegionMapQueue>>, bar: u8) {
        if let HostVisibleMemory::Shadow(shadow) = self {
            shadow.set_region_maps(queue, u32::from(bar));
        }
    }

    /// Removes whatever the device placed: it is gone.
    pub fn unmap_all(&self) {
        if let HostVisibleMemory::Shadow(shadow) = self {
            shadow.unmap_all();
        }
    }

    /// Places `size` bytes of `fd` from `fd_offset` at `offset`.
    fn place(
        &self,
        offset: u64,
        fd: std::os::fd::BorrowedFd,
        fd_offset: u64,
        size: u64,
        writable: bool,
    ) -> anyhow::Result<()> {
        match self {
            HostVisibleMemory::Shadow(shadow) => {
                shadow.map(offset, fd, fd_offset, size, writable)?
            }
            // The client maps the file already: the device can only name it.
            HostVisibleMemory::File(file) => {
                if !file.holds(fd, fd_offset, offset, size) {
                    bail!("only the BAR's own file can be placed in it, where it is");
                }
            }
        }
        Ok(())
    }

    fn remove(&self, offset: u64) -> anyhow::Result<()> {
        if let HostVisibleMemory::Shadow(shadow) = self {
            shadow.unmap(offset)?;
        }
        Ok(())
    }
}

/// Queue notification events the device registered, by guest address.
pub type IoEvents = Arc<Mutex<BTreeMap<u64, Event>>>;

/// How the interrupts of an MSI-X vector that `MsixConfig` allocated reach the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The device signals the client's eventfd of this assignment itself.
    Direct(EventfdId),
    /// The device signals its own irqfd, which the VM services thread relays: the client had
    /// given the vector no eventfd when it was allocated.
    Relayed,
}

/// By MSI-X vector.
type Deliveries = Arc<Mutex<BTreeMap<u32, Delivery>>>;

/// The thread answering one device instance's requests; stopped on drop.
pub struct VmServices {
    _worker: WorkerThread<()>,
    intx_resample: Event,
    io_events: IoEvents,
    deliveries: Deliveries,
}

/// An MSI that `MsixConfig` allocated.
struct Msi {
    vector: u32,
    /// crosvm's own irqfd, while relayed.
    relayed: Option<Event>,
}

struct Responder {
    msi: Tube,
    ioevent: Tube,
    shared_memory: Tube,
    vm_control: Tube,
    intx_trigger: Event,
    interrupts: Interrupts,
    /// By gsi.
    msis: BTreeMap<u32, Msi>,
    deliveries: Deliveries,
    next_gsi: u32,
    io_events: IoEvents,
    host_visible: Option<HostVisibleBar>,
    /// The client's memory, for a balloon's freed ranges.
    memory: ClientMemory,
}

#[derive(EventToken)]
enum Token {
    Kill,
    Msi,
    IoEvent,
    SharedMemory,
    VmControl,
    IntxTrigger,
    Irqfd(u32),
}

impl VmServices {
    /// Starts the thread, relaying interrupts to `interrupts`. Returns the device's ends and
    /// the INTx line for `assign_irq`.
    pub fn start(
        interrupts: Interrupts,
        host_visible: Option<HostVisibleBar>,
        memory: ClientMemory,
    ) -> anyhow::Result<(VmServices, VmEndpoints, IrqLevelEvent)> {
        let (msi_tube, msi) = Tube::pair().context("msi tube")?;
        let (ioevent_tube, ioevent) = Tube::pair().context("ioevent tube")?;
        let (shared_memory_tube, shared_memory) = Tube::pair().context("shared memory tube")?;
        let (vm_control_tube, vm_control) = Tube::pair().context("vm control tube")?;
        let intx = IrqLevelEvent::new().context("INTx event")?;
        let io_events = IoEvents::default();
        let deliveries = Deliveries::default();
        let responder = Responder {
            msi,
            ioevent,
            shared_memory,
            vm_control,
            intx_trigger: intx.get_trigger().try_clone()?,
            interrupts,
            msis: BTreeMap::new(),
            deliveries: deliveries.clone(),
            // Any unique numbers do; 0-23 look like legacy IRQs in logs.
            next_gsi: 24,
            io_events: io_events.clone(),
            host_visible,
            memory,
        };
        let intx_resample = intx.get_resample().try_clone()?;
        let worker = WorkerThread::start("v_vfio_user_vm", move |kill| {
            if let Err(e) = responder.run(kill) {
                error!("vfio-user VM services stopped: {e:#}");
            }
        });
        let services = VmServices {
            _worker: worker,
            intx_resample,
            io_events,
            deliveries,
        };
        let endpoints = VmEndpoints {
            msi_tube,
            ioevent_client: VmMemoryClient::new(ioevent_tube),
            shared_memory_client: VmMemoryClient::new(shared_memory_tube),
            vm_control_tube,
        };
        Ok((services, endpoints, intx))
    }

    /// The client unmasked INTx (its end-of-interrupt): crosvm re-asserts the line if the
    /// device still needs service.
    pub fn intx_unmasked(&self) {
        if let Err(e) = self.intx_resample.signal() {
            warn!("failed to signal the INTx resample event: {e}");
        }
    }

    /// The queue notification events the device registered, by guest address.
    pub fn io_events(&self) -> &IoEvents {
        &self.io_events
    }

    /// How an MSI-X vector's interrupts reach the client, if `MsixConfig` allocated it.
    pub fn delivery(&self, vector: u32) -> Option<Delivery> {
        self.deliveries.lock().get(&vector).copied()
    }
}

impl Responder {
    fn run(mut self, kill: Event) -> anyhow::Result<()> {
        let wait_ctx = WaitContext::build_with(&[
            (&kill, Token::Kill),
            (&self.msi, Token::Msi),
            (&self.ioevent, Token::IoEvent),
            (&self.shared_memory, Token::SharedMemory),
            (&self.vm_control, Token::VmControl),
            (&self.intx_trigger, Token::IntxTrigger),
        ])
        .context("wait context")?;
        loop {
            for event in wait_ctx.wait().context("wait")?.iter() {
                let result = match event.token {
                    Token::Kill => return Ok(()),
                    Token::Msi => self.msi_request(&wait_ctx),
                    Token::IoEvent => self.ioevent_request(),
                    Token::SharedMemory => self.shared_memory_request(),
                    Token::VmControl => self.vm_control_request(),
                    Token::IntxTrigger => {
                        self.intx_trigger.wait().context("INTx trigger")?;
                        // An edge: the client's unmask resamples the level (`intx_unmasked`).
                        self.interrupts.set_intx(true);
                        self.interrupts.set_intx(false);
                        Ok(())
                    }
                    Token::Irqfd(gsi) => self.relay_msi(gsi),
                };
                match result {
                    // The device dropped its end of a tube (e.g. the unused shared-memory one).
                    Err(e) if is_disconnected(&e) => {
                        let tube = match event.token {
                            Token::Msi => &self.msi,
                            Token::IoEvent => &self.ioevent,
                            Token::SharedMemory => &self.shared_memory,
                            _ => &self.vm_control,
                        };
                        wait_ctx.delete(tube).context("wait context delete")?;
                    }
                    Err(e) => error!("vfio-user VM services: {e:#}"),
                    Ok(()) => {}
                }
            }
        }
    }

    fn relay_msi(&mut self, gsi: u32) -> anyhow::Result<()> {
        let Some(Msi {
            vector,
            relayed: Some(irqfd),
        }) = self.msis.get(&gsi)
        else {
            return Ok(());
        };
        irqfd.wait().context("irqfd")?;
        self.interrupts.trigger(PCI_MSIX_IRQ_INDEX, *vector);
        Ok(())
    }

    fn msi_request(&mut self, wait_ctx: &WaitContext<Token>) -> anyhow::Result<()> {
        let request: VmIrqRequest = self.msi.recv()?;
        let response = match request {
            VmIrqRequest::AllocateOneMsi {
                irqfd, queue_id, ..
            } => {
                let gsi = self.next_gsi;
                self.next_gsi += 1;
                match self.allocate(wait_ctx, gsi, queue_id, irqfd)? {
                    Some(irqfd) => VmIrqResponse::Irqfd { gsi, irqfd },
                    None => VmIrqResponse::AllocateOneMsi { gsi },
                }
            }
            VmIrqRequest::AllocateOneMsiAtGsi {
                irqfd,
                gsi,
                queue_id,
                ..
            } => match self.allocate(wait_ctx, gsi, queue_id, irqfd)? {
                Some(irqfd) => VmIrqResponse::Irqfd { gsi, irqfd },
                None => VmIrqResponse::Ok,
            },
            // The client routes the vector and the address and data crosvm holds are
            // placeholders, so a route change only asks whether the eventfd changed.
            VmIrqRequest::AddMsiRoute { gsi, .. } => match self.reroute(wait_ctx, gsi)? {
                Some(irqfd) => VmIrqResponse::Irqfd { gsi, irqfd },
                None => VmIrqResponse::Ok,
            },
            VmIrqRequest::ReleaseOneIrq { gsi, .. } => {
                if let Some(msi) = self.msis.remove(&gsi) {
                    if let Some(irqfd) = &msi.relayed {
                        wait_ctx.delete(irqfd).context("wait context delete")?;
                    }
                    self.deliveries.lock().remove(&msi.vector);
                }
                VmIrqResponse::Ok
            }
        };
        self.msi.send(&response)?;
        Ok(())
    }

    /// Takes an MSI that `MsixConfig` allocated: returns the client's eventfd for the device to
    /// signal, or relays the device's `irqfd` if the client gave the vector none yet.
    fn allocate(
        &mut self,
        wait_ctx: &WaitContext<Token>,
        gsi: u32,
        vector: usize,
        irqfd: Event,
    ) -> anyhow::Result<Option<Event>> {
        let vector = u32::try_from(vector).context("MSI-X vector")?;
        if let Some(old) = self.msis.remove(&gsi) {
            if let Some(old_irqfd) = &old.relayed {
                let _ = wait_ctx.delete(old_irqfd);
            }
        }
        let mut msi = Msi {
            vector,
            relayed: None,
        };
        let direct = self.client_eventfd(vector);
        if direct.is_none() {
            wait_ctx
                .add(&irqfd, Token::Irqfd(gsi))
                .context("wait context add")?;
            msi.relayed = Some(irqfd);
            self.deliveries.lock().insert(vector, Delivery::Relayed);
        }
        self.msis.insert(gsi, msi);
        Ok(direct)
    }

    /// The vector's current eventfd, if the device does not signal it already.
    fn reroute(
        &mut self,
        wait_ctx: &WaitContext<Token>,
        gsi: u32,
    ) -> anyhow::Result<Option<Event>> {
        let Some(vector) = self.msis.get(&gsi).map(|msi| msi.vector) else {
            return Ok(None);
        };
        let current = self.interrupts.eventfd_id(PCI_MSIX_IRQ_INDEX, vector);
        let delivery = self.deliveries.lock().get(&vector).copied();
        if current.is_none() || current.map(Delivery::Direct) == delivery {
            return Ok(None);
        }
        let Some(eventfd) = self.client_eventfd(vector) else {
            return Ok(None);
        };
        let relayed = self.msis.get_mut(&gsi).and_then(|msi| msi.relayed.take());
        if let Some(irqfd) = relayed {
            wait_ctx.delete(&irqfd).context("wait context delete")?;
            // An interrupt not relayed yet is passed on, not lost with the irqfd.
            if irqfd.wait_timeout(Duration::ZERO).context("irqfd")? == EventWaitResult::Signaled {
                self.interrupts.trigger(PCI_MSIX_IRQ_INDEX, vector);
            }
        }
        Ok(Some(eventfd))
    }

    /// A duplicate of the client's eventfd for `vector`, recorded as the one the device signals.
    fn client_eventfd(&mut self, vector: u32) -> Option<Event> {
        let (id, fd) = self.interrupts.eventfd(PCI_MSIX_IRQ_INDEX, vector)?;
        self.deliveries.lock().insert(vector, Delivery::Direct(id));
        Some(Event::from(SafeDescriptor::from(fd)))
    }

    fn ioevent_request(&mut self) -> anyhow::Result<()> {
        let request: VmMemoryRequest = self.ioevent.recv()?;
        let response = match request {
            VmMemoryRequest::IoEventRaw(update) => {
                let mut io_events = self.io_events.lock();
                if update.register {
                    io_events.insert(update.addr, update.event);
                } else {
                    io_events.remove(&update.addr);
                }
                VmMemoryResponse::Ok
            }
            _ => VmMemoryResponse::Err(anyhow!("not supported over vfio-user").into()),
        };
        self.ioevent.send(&response)?;
        Ok(())
    }

    fn shared_memory_request(&mut self) -> anyhow::Result<()> {
        let request: VmMemoryRequest = self.shared_memory.recv()?;
        let response = match self.shared_memory_response(request) {
            Ok(response) => response,
            Err(e) => {
                warn!("vfio-user: shared memory request refused: {e:#}");
                VmMemoryResponse::Err(e.into())
            }
        };
        self.shared_memory.send(&response)?;
        Ok(())
    }

    fn shared_memory_response(
        &mut self,
        request: VmMemoryRequest,
    ) -> anyhow::Result<VmMemoryResponse> {
        match request {
            VmMemoryRequest::DynamicallyFreeMemoryRanges { ranges } => {
                for (address, len) in ranges {
                    self.memory
                        .release(address.offset(), len)
                        .with_context(|| format!("freeing {:#x}+{len:#x}", address.offset()))?;
                }
                return Ok(VmMemoryResponse::Ok);
            }
            // The pages come back when the guest touches them.
            VmMemoryRequest::DynamicallyReclaimMemoryRanges { .. } => {
                return Ok(VmMemoryResponse::Ok)
            }
            // Only a hypervisor that follows the balloon acts on it (crosvm's
            // `Vm::handle_balloon_event`); vfio-user has no message for it.
            VmMemoryRequest::BalloonTargetReached { .. } => return Ok(VmMemoryResponse::Ok),
            _ => {}
        }
        let Some(host_visible) = &self.host_visible else {
            bail!("the device has no host-visible BAR");
        };
        match request {
            // The shadow needs no preparation: it exists since the device was described.
            VmMemoryRequest::PrepareSharedMemoryRegion { .. } => Ok(VmMemoryResponse::Ok),
            VmMemoryRequest::RegisterMemory {
                source,
                dest: VmMemoryDestination::ExistingAllocation { allocation, offset },
                prot,
                cache: _,
            } => {
                match allocation {
                    Alloc::PciBar { bar, .. } if bar == host_visible.bar => {}
                    other => bail!("mapping into {other:?}, not the host-visible BAR"),
                }
                let writable = prot.allows(&Protection::write());
                let (descriptor, fd_offset, size) = match &source {
                    VmMemorySource::Descriptor {
                        descriptor,
                        offset,
                        size,
                    } => (descriptor.as_raw_descriptor(), *offset, *size),
                    VmMemorySource::SharedMemory(shm) => (shm.as_raw_descriptor(), 0, shm.size()),
                    // A pointer into this process (`ExternalMapping`) or a Vulkan allocation:
                    // crosvm exports memfd-backed blobs as descriptors, and GPU memory cannot
                    // be reached here.
                    _ => bail!("only file-backed memory can be shared with the client"),
                };
                // SAFETY: the descriptor is owned by `source`, alive until the end of this arm.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(descriptor) };
                host_visible
                    .memory
                    .place(offset, fd, fd_offset, size, writable)
                    .with_context(|| format!("placing {size:#x} bytes at {offset:#x}"))?;
                Ok(VmMemoryResponse::RegisterMemory {
                    region_id: VmMemoryRegionId(GuestAddress(offset)),
                    slot: 0,
                })
            }
            VmMemoryRequest::UnregisterMemory(VmMemoryRegionId(GuestAddress(offset))) => {
                host_visible
                    .memory
                    .remove(offset)
                    .with_context(|| format!("removing the mapping at {offset:#x}"))?;
                Ok(VmMemoryResponse::Ok)
            }
            _ => bail!("not supported over vfio-user"),
        }
    }

    fn vm_control_request(&mut self) -> anyhow::Result<()> {
        let request: VmRequest = self.vm_control.recv()?;
        let response = match request {
            // PME wakeup: the client has no way to learn of it; the interrupt itself follows.
            VmRequest::Gpe { .. } => VmResponse::Ok,
            _ => VmResponse::Err(base::Error::new(libc::ENOTSUP)),
        };
        self.vm_control.send(&response)?;
        Ok(())
    }
}

fn is_disconnected(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<TubeError>(), Some(TubeError::Disconnected))
}
