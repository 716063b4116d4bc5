// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! crosvm PCI devices served over vfio-user, so that a VMM such as QEMU (`vfio-user-pci`) or
//! cloud-hypervisor (`--user-device`) runs them in this process.
//!
//! [`PciDeviceAdapter`] turns a `PciDevice` into a `vfio_user_server::Device`; the VM services a
//! device expects (MSI allocation, ioevents, VM control) are answered by [`VmServices`] on a
//! thread, and interrupts relayed to the client's eventfds. The device is built by a
//! [`PciDeviceFactory`] once the client's memory is known, and again for every client.
//!
//! A virtio device's shared memory BAR (virtio-gpu's host-visible memory) is offered to the
//! client as one mappable file, a `ShadowMemory` that the blobs the device maps are copied into
//! and out of; see `vfio_user_server::shadow` for what that keeps coherent. A device that passes
//! blobs to a Wayland compositor talks to it through a `SocketRelay` on the same shadow. A BAR
//! that is one file for the device's life (virtio-pmem's image) is that file, mapped by the
//! client itself: a `FileRegion`.

mod adapter;
mod config;
mod no_vm;
mod vm_services;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

pub use adapter::PciDeviceAdapter;
use anyhow::anyhow;
use anyhow::bail;
use anyhow::Context;
use base::debug;
use base::info;
use base::warn;
use base::Descriptor;
use base::EventToken;
use base::RawDescriptor;
use base::SignalFd;
use base::WaitContext;
use hypervisor::ProtectionType;
pub use no_vm::NoVm;
use resources::AddressRange;
use resources::SystemAllocator;
use resources::SystemAllocatorConfig;
pub use vfio_user_server;
use vfio_user_server::sys::FaultGuard;
use vfio_user_server::Connection;
use vfio_user_server::GuestMemory as ClientMemory;
use vfio_user_server::Interrupts;
use vfio_user_server::Listener;
use vfio_user_server::Server;
use vfio_user_server::ServerCapabilities;
use vfio_user_server::ShadowMemory;
use vfio_user_server::Status;
use vm_control::api::VmMemoryClient;
use vm_control::AnyControlTube;
use vm_memory::GuestAddress;
use vm_memory::GuestMemory;
use vm_memory::MemoryRegion;
pub use vm_services::Delivery;
pub use vm_services::HostVisibleBar;
pub use vm_services::HostVisibleMemory;
pub use vm_services::IoEvents;
pub use vm_services::VmEndpoints;
pub use vm_services::VmServices;

use crate::virtio::VirtioDevice;
use crate::PciDevice;
use crate::PciInterruptPin;
use crate::VirtioDeviceArgs;
use crate::VirtioDeviceModule;
use crate::VirtioPciDevice;

/// Builds the device from the client's memory and the VM services' ends.
pub type PciDeviceFactory =
    Box<dyn FnMut(GuestMemory, VmEndpoints) -> anyhow::Result<Box<dyn PciDevice>> + Send>;

/// A factory for a virtio device behind crosvm's own `VirtioPciDevice` transport.
pub fn virtio_pci_factory(
    mut make: impl FnMut() -> anyhow::Result<Box<dyn VirtioDevice>> + Send + 'static,
) -> PciDeviceFactory {
    Box::new(move |memory, endpoints| {
        let device = make()?;
        let shared_memory_client = device
            .get_shared_memory_region()
            .map(|_| endpoints.shared_memory_client);
        let device = VirtioPciDevice::new(
            memory,
            device,
            endpoints.msi_tube,
            false,
            shared_memory_client,
            endpoints.ioevent_client,
            endpoints.vm_control_tube,
        )?;
        Ok(Box::new(device))
    })
}

/// As [`virtio_pci_factory`], for a device that asks the VM to manage guest memory: `make` gets
/// the memory client the VM services answer (a balloon frees the pages its driver gives up
/// through it). The device may not have a shared memory region, whose mappings go the same way.
pub fn virtio_pci_factory_with_memory_client(
    mut make: impl FnMut(VmMemoryClient) -> anyhow::Result<Box<dyn VirtioDevice>> + Send + 'static,
) -> PciDeviceFactory {
    Box::new(move |memory, endpoints| {
        let device = make(endpoints.shared_memory_client)?;
        if device.get_shared_memory_region().is_some() {
            bail!("a device given the memory client cannot have a shared memory region");
        }
        let device = VirtioPciDevice::new(
            memory,
            device,
            endpoints.msi_tube,
            false,
            None,
            endpoints.ioevent_client,
            endpoints.vm_control_tube,
        )?;
        Ok(Box::new(device))
    })
}

/// A factory for a virtio device made by a `VirtioDeviceModule` (rng, for one). Modules get a
/// [`NoVm`]; control tubes they add have no VM to answer them and are dropped.
pub fn virtio_module_factory(module: impl VirtioDeviceModule + Send + 'static) -> PciDeviceFactory {
    virtio_pci_factory(move || {
        let vm = NoVm::new()?;
        let mut resources = standalone_allocator()?;
        let mut add_control_tube = |_tube: AnyControlTube| {
            warn!(
                "vfio-user: {} wants a control tube; none is served",
                module.sort_name()
            );
        };
        module.create(&mut VirtioDeviceArgs {
            vm: &vm,
            resources: &mut resources,
            add_control_tube: &mut add_control_tube,
            protection_type: ProtectionType::Unprotected,
        })
    })
}

/// One built device and the thread answering it. The device goes first: its teardown may still
/// ask the services.
struct Instance {
    device: Box<dyn PciDevice>,
    /// Guards crosvm's mappings of the client's memory (the device's `GuestMemory`): a client
    /// that shrinks its file under them loses its connection, the process lives on. Right after
    /// the device, which holds that memory, so they end when it is gone.
    _memory_guards: Vec<FaultGuard>,
    services: VmServices,
    /// `ClientMemory::generation` of the maps the device's memory was built from.
    memory_generation: u64,
    /// Where the device was told its shared memory BAR lies, when the client had placed it.
    shared_memory_at: Option<u64>,
    /// A BAR was accessed: the driver runs, so the device is no longer rebuilt.
    started: bool,
    host_visible: Option<HostVisibleBar>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.device.destroy_device();
        // The device's blobs go with it; the client sees their ranges as zeros.
        if let Some(host_visible) = &self.host_visible {
            host_visible.memory.unmap_all();
        }
    }
}

/// Builds and sets up a device as crosvm's `arch` does for a VM, against a standalone allocator:
/// address, I/O and device BARs, INTx, capabilities, then `on_device_sandboxed`.
///
/// With `shared_memory_at`, the device's shared memory BAR gets that address, where the client
/// placed it: a device may hand its driver addresses inside the BAR (virtio-wl does, to drivers
/// without VIRTIO_WL_F_USE_SHMEM). The device's other BARs keep addresses nothing sees.
fn build_instance(
    factory: &mut PciDeviceFactory,
    memory: &ClientMemory,
    interrupts: Interrupts,
    host_visible: Option<HostVisibleBar>,
    shared_memory_at: Option<AddressRange>,
) -> anyhow::Result<Instance> {
    let memory_generation = memory.generation();
    let guest_memory = guest_memory_from_maps(memory)?;
    let memory_guards = guard_guest_memory(memory, &guest_memory)?;
    let (services, endpoints, intx) =
        VmServices::start(interrupts, host_visible.clone(), memory.clone())?;
    let mut device = factory(guest_memory, endpoints)?;
    let mut allocator = match shared_memory_at {
        Some(range) => allocator_placing(range)?,
        None => standalone_allocator()?,
    };
    device.allocate_address(&mut allocator)?;
    device.allocate_io_bars(&mut allocator)?;
    device.allocate_device_bars(&mut allocator)?;
    let irq = allocator.allocate_irq().context("no IRQ number")?;
    device.assign_irq(intx, PciInterruptPin::IntA, irq);
    device.register_device_capabilities()?;
    device.on_device_sandboxed();
    debug!(
        "vfio-user: built {} over {} client maps",
        device.debug_label(),
        memory.map_count()
    );
    Ok(Instance {
        device,
        _memory_guards: memory_guards,
        services,
        memory_generation,
        shared_memory_at: shared_memory_at.map(|range| range.start),
        started: false,
        host_visible,
    })
}

/// Address space for BARs that nothing maps: the client places the BARs itself.
pub fn standalone_allocator() -> anyhow::Result<SystemAllocator> {
    let config = SystemAllocatorConfig {
        io: Some(AddressRange::from_start_and_end(0x1000, 0xffff)),
        low_mmio: AddressRange::from_start_and_end(0xc000_0000, 0xfebf_ffff),
        high_mmio: AddressRange::from_start_and_end(0x10_0000_0000, 0xff_ffff_ffff),
        platform_mmio: None,
        first_irq: 5,
    };
    Ok(SystemAllocator::new(config, None, &[])?)
}

/// A standalone allocator whose only 64-bit prefetchable space is `range`, which the shared memory
/// BAR (the one prefetchable BAR of a virtio device) then takes whole; the 32-bit BARs go
/// elsewhere.
fn allocator_placing(range: AddressRange) -> anyhow::Result<SystemAllocator> {
    let low = [
        AddressRange::from_start_and_end(0xc000_0000, 0xfebf_ffff),
        AddressRange::from_start_and_end(0x8000_0000, 0xbfff_ffff),
    ]
    .into_iter()
    .find(|low| !low.overlaps(range))
    .context("no 32-bit MMIO space beside the shared memory BAR")?;
    let config = SystemAllocatorConfig {
        io: Some(AddressRange::from_start_and_end(0x1000, 0xffff)),
        low_mmio: low,
        high_mmio: range,
        platform_mmio: None,
        first_irq: 5,
    };
    Ok(SystemAllocator::new(config, None, &[])?)
}

/// crosvm's view of the client's memory: every map that came with an fd, mapped again.
/// Maps without one (QEMU's ROMs) stay out of reach of the device.
fn guest_memory_from_maps(memory: &ClientMemory) -> anyhow::Result<GuestMemory> {
    let mut regions = Vec::new();
    for map in memory.maps() {
        let Some((fd, offset)) = map.fd else {
            continue;
        };
        if !map.writable {
            debug!("vfio-user: read-only map at {:#x} left out", map.address);
            continue;
        }
        let file = File::from(fd.try_clone().context("dup of a DMA map's fd")?);
        let region = MemoryRegion::new_from_file(
            map.size,
            GuestAddress(map.address),
            offset,
            Arc::new(file),
        )
        .with_context(|| format!("mapping the client's memory at {:#x}", map.address))?;
        regions.push(region);
    }
    Ok(GuestMemory::from_regions(regions)?)
}

/// Guards each of crosvm's mappings of the client's memory against faults.
fn guard_guest_memory(
    memory: &ClientMemory,
    guest_memory: &GuestMemory,
) -> anyhow::Result<Vec<FaultGuard>> {
    guest_memory
        .regions()
        .map(|region| {
            // SAFETY: the region is a mapping of the client's fd that `guest_memory` made and
            // holds; it goes only to this instance's device, which is dropped (workers stopped)
            // just before the guards.
            unsafe {
                memory.guard_mapping(
                    region.host_addr as *mut u8,
                    region.size,
                    region.guest_addr.offset(),
                )
            }
            .context("guarding the client's memory")
        })
        .collect()
}

/// Serves a device on a unix socket bound at `socket_path`, or on an inherited `fd`: a
/// listening socket (clients one after another) or a connected one (that client only). Every
/// client gets a freshly built device.
///
/// Returns `Ok` on SIGTERM or SIGINT, after tearing down the current connection (its eventfds
/// closed, its memory unmapped, the device reset) and removing the socket file it bound.
///
/// After each message the server spins on the client's socket for up to `poll` before sleeping
/// (adaptive, see `vfio_user_server::AdaptivePoll`; zero never spins).
pub fn run_server(
    socket_path: Option<&str>,
    fd: Option<RawDescriptor>,
    factory: PciDeviceFactory,
    poll: Duration,
) -> anyhow::Result<()> {
    let memory = HostVisibleMemory::Shadow(ShadowMemory::new());
    run_server_with_memory(socket_path, fd, factory, memory, true, poll)
}

/// As [`run_server`], with the memory that backs the device's shared memory BAR, if it has one,
/// given by the caller (who may relay the device's sockets through its shadow). Unless
/// `mappable`, the BAR is offered only through REGION_READ/WRITE.
pub fn run_server_with_memory(
    socket_path: Option<&str>,
    fd: Option<RawDescriptor>,
    factory: PciDeviceFactory,
    memory: HostVisibleMemory,
    mappable: bool,
    poll: Duration,
) -> anyhow::Result<()> {
    // Before any thread starts: the signals stay blocked in the threads started later (the VM
    // services, the device's workers), so they are only ever read here.
    let signals = [
        SignalFd::new(libc::SIGTERM).context("creating a signalfd for SIGTERM")?,
        SignalFd::new(libc::SIGINT).context("creating a signalfd for SIGINT")?,
    ];
    let result = serve_until_signal(socket_path, fd, factory, memory, mappable, poll, &signals);
    // Consumed, or the signal that stopped the server would kill it when dropping its SignalFd
    // unblocks it.
    for signal in &signals {
        let _ = signal.read();
    }
    result
}

fn serve_until_signal(
    socket_path: Option<&str>,
    fd: Option<RawDescriptor>,
    factory: PciDeviceFactory,
    memory: HostVisibleMemory,
    mappable: bool,
    poll: Duration,
    signals: &[SignalFd],
) -> anyhow::Result<()> {
    let wait_ctx = WaitContext::new().context("creating the wait context")?;
    for signal in signals {
        wait_ctx
            .add(signal, Token::Terminate)
            .context("waiting on a signalfd")?;
    }
    let mut adapter = PciDeviceAdapter::new(factory, memory, mappable)?;
    let capabilities = ServerCapabilities::default();
    let listener = match (socket_path, fd) {
        (Some(path), None) => Listener::bind(path).with_context(|| format!("binding {path}"))?,
        (None, Some(fd)) => {
            let fd = OwnedFd::from(base::safe_descriptor_from_cmdline_fd(&fd)?);
            let stream = UnixStream::from(fd);
            // A listening socket has no peer.
            if stream.peer_addr().is_ok() {
                let mut connection = Connection::new(stream, &mut adapter, capabilities)
                    .map_err(|e| anyhow!("{e}"))?;
                connection.set_polling(poll);
                serve(connection, &wait_ctx)?;
                return Ok(());
            }
            Listener::from_fd(stream.into())
        }
        (Some(_), Some(_)) => bail!("a socket path and a file descriptor cannot both be given"),
        (None, None) => {
            bail!("a socket path (--socket-path) or a file descriptor (--fd) is needed")
        }
    };
    let mut server = Server::new(listener, adapter, capabilities).map_err(|e| anyhow!("{e}"))?;
    server.set_polling(poll);
    let listening = Descriptor(server.listener().as_raw_fd());
    wait_ctx
        .add(&listening, Token::Listener)
        .context("waiting on the socket")?;
    loop {
        if wait_for_client(&wait_ctx)? == Token::Terminate {
            break;
        }
        let connection = server.accept().context("accepting a client")?;
        if serve(connection, &wait_ctx)? == Served::Terminated {
            break;
        }
    }
    info!("terminating");
    Ok(())
}

#[derive(EventToken, Clone, Copy, PartialEq, Eq)]
enum Token {
    Terminate,
    Listener,
    Client,
    RegionMaps,
}

#[derive(PartialEq, Eq)]
enum Served {
    Disconnected,
    Terminated,
}

/// Waits until a client connects or a signal asks the server to stop; returns which.
fn wait_for_client(wait_ctx: &WaitContext<Token>) -> anyhow::Result<Token> {
    loop {
        let events = wait_ctx.wait().context("waiting for a client")?;
        if events.iter().any(|e| e.token == Token::Terminate) {
            return Ok(Token::Terminate);
        }
        if events.iter().any(|e| e.token == Token::Listener) {
            return Ok(Token::Listener);
        }
    }
}

/// Serves `connection` until the client goes away or a signal asks the server to stop. The
/// connection is torn down either way, when it is dropped here.
fn serve(
    mut connection: Connection<'_, UnixStream>,
    wait_ctx: &WaitContext<Token>,
) -> anyhow::Result<Served> {
    let client = Descriptor(connection.as_raw_fd());
    wait_ctx
        .add(&client, Token::Client)
        .context("waiting on the client")?;
    // The device's requests for the client (blob mappings, with the REGION_MAP extension) are
    // sent from this thread, the socket's only writer.
    let region_maps = Descriptor(connection.region_map_fd().as_raw_fd());
    wait_ctx
        .add(&region_maps, Token::RegionMaps)
        .context("waiting on the region map queue")?;
    let served = loop {
        // Messages already read from the socket do not wake the wait; with polling on, one that
        // arrives within the spin is handled without sleeping. An error is left for the receive
        // to report.
        if !connection.spin_for_message().unwrap_or(true) {
            let slept = Instant::now();
            let events = wait_ctx.wait().context("waiting for the client")?;
            if events.iter().any(|e| e.token == Token::Client) {
                connection.slept(slept.elapsed());
            }
            if events.iter().any(|e| e.token == Token::Terminate) {
                info!("terminating: closing the client's connection");
                break Served::Terminated;
            }
            if events.iter().any(|e| e.token == Token::RegionMaps)
                && connection.handle_region_maps() == Status::Closed
            {
                info!("client disconnected");
                break Served::Disconnected;
            }
            if !events.iter().any(|e| e.token == Token::Client) {
                continue;
            }
        }
        if connection.handle_message() == Status::Closed {
            info!("client disconnected");
            break Served::Disconnected;
        }
    };
    wait_ctx
        .delete(&client)
        .context("forgetting the client's socket")?;
    wait_ctx
        .delete(&region_maps)
        .context("forgetting the region map queue")?;
    Ok(served)
}
