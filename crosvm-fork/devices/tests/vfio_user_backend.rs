// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! crosvm's virtio-rng behind `VirtioPciDevice`, served over vfio-user without a VM: a small
//! client on a socketpair enumerates it, sizes its BARs, gives it memory and MSI-X eventfds, and
//! drives a virtqueue round trip as a Linux driver would.

#![cfg(any(target_os = "android", target_os = "linux"))]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use base::Protection;
use devices::vfio_user_backend::vfio_user_server;
use devices::vfio_user_backend::virtio_module_factory;
use devices::vfio_user_backend::virtio_pci_factory;
use devices::vfio_user_backend::Delivery;
use devices::vfio_user_backend::HostVisibleBar;
use devices::vfio_user_backend::HostVisibleMemory;
use devices::vfio_user_backend::PciDeviceAdapter;
use devices::vfio_user_backend::PciDeviceFactory;
use devices::vfio_user_backend::VmServices;
use devices::virtio::DeviceType;
use devices::virtio::Interrupt;
use devices::virtio::MemSlotConfig;
use devices::virtio::Pmem;
use devices::virtio::PmemConfig;
use devices::virtio::Queue;
use devices::virtio::SharedMemoryMapper;
use devices::virtio::SharedMemoryRegion;
use devices::virtio::VirtioDevice;
use hypervisor::MemCacheType;
use resources::Alloc;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;
use vfio_user_server::Connection;
use vfio_user_server::FileRegion;
use vfio_user_server::Interrupts;
use vfio_user_server::IrqCounts;
use vfio_user_server::IrqSetRequest;
use vfio_user_server::ServerCapabilities;
use vfio_user_server::ShadowMemory;
use vm_control::api::VmMemoryClient;
use vm_control::VmIrqRequest;
use vm_control::VmIrqResponse;
use vm_control::VmMemoryDestination;
use vm_control::VmMemorySource;
use vm_memory::GuestAddress;
use vm_memory::GuestMemory;
use zerocopy::IntoBytes;

const MEMORY_BASE: u64 = 0x10_0000;
const MEMORY_SIZE: u64 = 0x10_0000;
const DESC_TABLE: u64 = 0x0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;
const BUFFER: u64 = 0x4000;
const BUFFER_LEN: u32 = 32;
const QUEUE_SIZE: u16 = 16;
const QUEUE_VECTOR: u32 = 1;

/// virtio-pci common configuration offsets in BAR0 (virtio 1.x, 4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE_REG: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_AVAIL: u64 = 0x28;
const QUEUE_USED: u64 = 0x30;
const NOTIFY: u64 = 0x3000;

/// A client that sends one command at a time and waits for its reply.
struct Client {
    stream: UnixStream,
    next_id: u16,
}

impl Client {
    fn call(&mut self, command: u16, body: &[u8], fds: &[BorrowedFd]) -> Vec<u8> {
        self.try_call(command, body, fds)
            .unwrap_or_else(|error| panic!("command {command} failed: {error}"))
    }

    /// The reply's body, or its error number.
    fn try_call(&mut self, command: u16, body: &[u8], fds: &[BorrowedFd]) -> Result<Vec<u8>, u32> {
        let header = Header {
            msg_id: self.next_id,
            command,
            msg_size: (HEADER_SIZE + body.len()) as u32,
            flags: header_flags::TYPE_COMMAND,
            error: 0,
        };
        self.next_id += 1;
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        let mut sent =
            sys::send_with_fds(self.stream.as_fd(), &[IoSlice::new(&bytes)], fds).expect("send");
        while sent < bytes.len() {
            sent += sys::send_with_fds(self.stream.as_fd(), &[IoSlice::new(&bytes[sent..])], &[])
                .expect("send");
        }
        let mut header_bytes = [0u8; HEADER_SIZE];
        self.read_exact(&mut header_bytes);
        let reply: Header = read_struct(&header_bytes).unwrap();
        assert_eq!(reply.msg_id, header.msg_id);
        let mut body = vec![0u8; reply.msg_size as usize - HEADER_SIZE];
        self.read_exact(&mut body);
        if reply.is_error() {
            return Err(reply.error);
        }
        Ok(body)
    }

    fn read_exact(&mut self, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            assert!(
                sys::wait_readable(self.stream.as_fd(), 5000).unwrap(),
                "no reply"
            );
            let got = sys::recv_with_fds(self.stream.as_fd(), &mut buf[done..]).unwrap();
            assert!(got.len > 0, "server closed the connection");
            done += got.len;
        }
    }

    fn negotiate(&mut self) {
        let mut body = Version { major: 0, minor: 0 }.as_bytes().to_vec();
        body.extend_from_slice(br#"{"capabilities":{"max_msg_fds":16}}"#);
        body.push(0);
        self.call(command::VERSION, &body, &[]);
    }

    fn read(&mut self, region: u32, offset: u64, count: u32) -> Vec<u8> {
        let access = RegionAccess {
            offset,
            region,
            count,
        };
        let reply = self.call(command::REGION_READ, access.as_bytes(), &[]);
        reply[size_of::<RegionAccess>()..].to_vec()
    }

    fn read_u32(&mut self, region: u32, offset: u64) -> u32 {
        u32::from_le_bytes(self.read(region, offset, 4).try_into().unwrap())
    }

    fn write(&mut self, region: u32, offset: u64, data: &[u8]) {
        self.try_write(region, offset, data)
            .unwrap_or_else(|error| panic!("write failed: {error}"));
    }

    fn try_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<(), u32> {
        let access = RegionAccess {
            offset,
            region,
            count: data.len() as u32,
        };
        let mut body = access.as_bytes().to_vec();
        body.extend_from_slice(data);
        self.try_call(command::REGION_WRITE, &body, &[]).map(drop)
    }

    fn region_size(&mut self, index: u32) -> u64 {
        let request = RegionInfo {
            argsz: size_of::<RegionInfo>() as u32,
            index,
            ..Default::default()
        };
        let reply = self.call(command::DEVICE_GET_REGION_INFO, request.as_bytes(), &[]);
        read_struct::<RegionInfo>(&reply).unwrap().size
    }

    fn dma_map(&mut self, memory: &File) {
        let map = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            offset: 0,
            address: MEMORY_BASE,
            size: MEMORY_SIZE,
        };
        self.call(command::DMA_MAP, map.as_bytes(), &[memory.as_fd()]);
    }

    fn set_msix(&mut self, eventfds: &[OwnedFd]) {
        let set = IrqSet {
            argsz: size_of::<IrqSet>() as u32,
            flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            index: PCI_MSIX_IRQ_INDEX,
            start: 0,
            count: eventfds.len() as u32,
        };
        let fds: Vec<BorrowedFd> = eventfds.iter().map(|fd| fd.as_fd()).collect();
        self.call(command::DEVICE_SET_IRQS, set.as_bytes(), &fds);
    }
}

/// Serves the rng on one end of a socketpair; the thread gives the adapter back at disconnect.
fn serve(mut adapter: PciDeviceAdapter) -> (Client, thread::JoinHandle<PciDeviceAdapter>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let server = thread::spawn(move || {
        let mut connection =
            Connection::new(theirs, &mut adapter, ServerCapabilities::default()).unwrap();
        connection.run();
        drop(connection);
        adapter
    });
    let mut client = Client {
        stream: ours,
        next_id: 1,
    };
    client.negotiate();
    (client, server)
}

fn rng_adapter() -> PciDeviceAdapter {
    PciDeviceAdapter::new(
        virtio_module_factory(device_virtio_rng::VirtioRngModule),
        HostVisibleMemory::Shadow(ShadowMemory::new()),
        true,
    )
    .unwrap()
}

/// Config offset of the capability with `id`.
fn find_capability(config: &[u8], id: u8) -> Option<usize> {
    let mut at = (config[0x34] & 0xfc) as usize;
    while at >= 0x40 {
        if config[at] == id {
            return Some(at);
        }
        at = (config[at + 1] & 0xfc) as usize;
    }
    None
}

fn put(memory: &File, address: u64, data: &[u8]) {
    memory.write_all_at(data, address).unwrap();
}

fn get(memory: &File, address: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    memory.read_exact_at(&mut data, address).unwrap();
    data
}

#[test]
fn vfio_user_rng_enumerates_and_sizes_bars() {
    let (mut client, server) = serve(rng_adapter());
    let config = client.read(PCI_CONFIG_REGION_INDEX, 0, 256);
    assert_eq!(u16::from_le_bytes([config[0], config[1]]), 0x1af4);
    assert_eq!(u16::from_le_bytes([config[2], config[3]]), 0x1044);

    assert_eq!(client.region_size(0), 0x8000, "virtio-pci BAR0");
    for index in 1..=5 {
        assert_eq!(client.region_size(index), 0, "BAR{index}");
    }
    // Sizing probe as cloud-hypervisor does it: all ones, read back.
    client.write(PCI_CONFIG_REGION_INDEX, 0x10, &u32::MAX.to_le_bytes());
    assert_eq!(client.read_u32(PCI_CONFIG_REGION_INDEX, 0x10), 0xffff_8000);

    let msix = find_capability(&config, 0x11).expect("MSI-X capability");
    let control = u16::from_le_bytes([config[msix + 2], config[msix + 3]]);
    assert_eq!(
        (control & 0x7ff) + 1,
        2,
        "one vector per queue and one for config"
    );
    // The client's Message Control writes are read back as written.
    client.write(
        PCI_CONFIG_REGION_INDEX,
        msix as u64 + 2,
        &0xc000u16.to_le_bytes(),
    );
    let back = client.read(PCI_CONFIG_REGION_INDEX, msix as u64 + 2, 2);
    assert_eq!(
        u16::from_le_bytes([back[0], back[1]]),
        0xc000 | (control & 0x7ff)
    );

    drop(client);
    server.join().unwrap();
}

/// Drives the rng as a Linux driver would, up to DRIVER_OK, with its one queue on
/// `QUEUE_VECTOR`: the client has mapped `memory` and given MSI-X eventfds.
fn start_rng_driver(client: &mut Client, memory: &File) {
    let bar0 = 0;
    let write8 = |client: &mut Client, offset: u64, value: u8| client.write(bar0, offset, &[value]);
    let write16 = |client: &mut Client, offset: u64, value: u16| {
        client.write(bar0, offset, &value.to_le_bytes())
    };
    let write32 = |client: &mut Client, offset: u64, value: u32| {
        client.write(bar0, offset, &value.to_le_bytes())
    };
    let write64 = |client: &mut Client, offset: u64, value: u64| {
        write32(client, offset, value as u32);
        write32(client, offset + 4, (value >> 32) as u32);
    };

    // Reset, ACKNOWLEDGE, DRIVER, then VIRTIO_F_VERSION_1 only, FEATURES_OK.
    write8(client, DEVICE_STATUS, 0);
    write8(client, DEVICE_STATUS, 1 | 2);
    write32(client, DEVICE_FEATURE_SELECT, 1);
    assert_ne!(
        client.read_u32(bar0, DEVICE_FEATURE) & 1,
        0,
        "VIRTIO_F_VERSION_1"
    );
    write32(client, DRIVER_FEATURE_SELECT, 1);
    write32(client, DRIVER_FEATURE, 1);
    write32(client, DRIVER_FEATURE_SELECT, 0);
    write32(client, DRIVER_FEATURE, 0);
    write8(client, DEVICE_STATUS, 1 | 2 | 8);
    assert_eq!(client.read(bar0, DEVICE_STATUS, 1)[0], 1 | 2 | 8);

    // One device-writable descriptor, offered by `offer_buffer`.
    let mut descriptor = (MEMORY_BASE + BUFFER).to_le_bytes().to_vec();
    descriptor.extend_from_slice(&BUFFER_LEN.to_le_bytes());
    descriptor.extend_from_slice(&2u16.to_le_bytes()); // VIRTQ_DESC_F_WRITE
    descriptor.extend_from_slice(&0u16.to_le_bytes());
    put(memory, DESC_TABLE, &descriptor);

    write16(client, CONFIG_MSIX_VECTOR, 0);
    write16(client, QUEUE_SELECT, 0);
    write16(client, QUEUE_SIZE_REG, QUEUE_SIZE);
    write16(client, QUEUE_MSIX_VECTOR, QUEUE_VECTOR as u16);
    assert_eq!(
        client.read(bar0, QUEUE_MSIX_VECTOR, 2),
        [QUEUE_VECTOR as u8, 0]
    );
    write64(client, QUEUE_DESC, MEMORY_BASE + DESC_TABLE);
    write64(client, QUEUE_AVAIL, MEMORY_BASE + AVAIL_RING);
    write64(client, QUEUE_USED, MEMORY_BASE + USED_RING);
    write16(client, QUEUE_ENABLE, 1);
    write8(client, DEVICE_STATUS, 1 | 2 | 8 | 4);
}

/// Offers the descriptor again, as the `count`th buffer of the queue, and notifies the device.
fn offer_buffer(client: &mut Client, memory: &File, count: u16) {
    let slot = (count - 1) % QUEUE_SIZE;
    put(
        memory,
        AVAIL_RING + 4 + 2 * u64::from(slot),
        &0u16.to_le_bytes(),
    );
    put(memory, AVAIL_RING + 2, &count.to_le_bytes());
    client.write(0, NOTIFY, &0u16.to_le_bytes());
}

/// The used ring's index: how many buffers the device gave back.
fn used_index(memory: &File) -> u16 {
    let used = get(memory, USED_RING + 2, 2);
    u16::from_le_bytes([used[0], used[1]])
}

/// Waits up to 5 s for the device to give back `count` buffers.
fn wait_used(memory: &File, count: u16) {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while used_index(memory) < count {
        assert!(Instant::now() < deadline, "buffer {count} never came back");
        thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn is_signalled(eventfd: &OwnedFd, timeout_ms: i32) -> bool {
    sys::wait_readable(eventfd.as_fd(), timeout_ms).unwrap()
        && sys::eventfd_read(eventfd.as_fd()).unwrap() > 0
}

#[test]
fn vfio_user_rng_fills_a_buffer_and_interrupts() {
    let (mut client, server) = serve(rng_adapter());
    let memory = sys::memfd(c"vfio-user-rng-test", MEMORY_SIZE).unwrap();
    client.dma_map(&memory);
    let eventfds: Vec<OwnedFd> = (0..2).map(|_| sys::eventfd(true).unwrap()).collect();
    client.set_msix(&eventfds);
    start_rng_driver(&mut client, &memory);

    let notified = Instant::now();
    offer_buffer(&mut client, &memory, 1);
    let vector = eventfds[QUEUE_VECTOR as usize].as_fd();
    assert!(
        sys::wait_readable(vector, 5000).unwrap(),
        "no MSI-X interrupt"
    );
    println!("notify to interrupt: {:?}", notified.elapsed());
    assert_eq!(sys::eventfd_read(vector).unwrap(), 1);

    let used = get(&memory, USED_RING, 12);
    assert_eq!(u16::from_le_bytes([used[2], used[3]]), 1, "used idx");
    assert_eq!(
        u32::from_le_bytes(used[4..8].try_into().unwrap()),
        0,
        "descriptor id"
    );
    assert_eq!(
        u32::from_le_bytes(used[8..12].try_into().unwrap()),
        BUFFER_LEN
    );
    let random = get(&memory, BUFFER, BUFFER_LEN as usize);
    assert!(random.iter().any(|&b| b != 0), "random bytes arrived");

    // A new client gets a fresh device: the driver status is back to 0.
    drop(client);
    let adapter = server.join().unwrap();
    let (mut client, server) = serve(adapter);
    assert_eq!(client.read(0, DEVICE_STATUS, 1)[0], 0);
    drop(client);
    server.join().unwrap();
}

/// The device signals whichever eventfd the client gave the vector last, keeps interrupts
/// pending while the client masks the vector or has taken its eventfd away, and delivers them
/// when it unmasks or gives a new one: none is lost, none goes to an eventfd given up.
#[test]
fn vfio_user_rng_interrupts_follow_set_irqs() {
    let (mut client, server) = serve(rng_adapter());
    let memory = sys::memfd(c"vfio-user-rng-test", MEMORY_SIZE).unwrap();
    client.dma_map(&memory);
    let eventfds: Vec<OwnedFd> = (0..2).map(|_| sys::eventfd(true).unwrap()).collect();
    client.set_msix(&eventfds);
    start_rng_driver(&mut client, &memory);
    let first = &eventfds[QUEUE_VECTOR as usize];
    offer_buffer(&mut client, &memory, 1);
    assert!(
        is_signalled(first, 5000),
        "no interrupt on the first eventfd"
    );

    let set_vector = |client: &mut Client, flags: u32, fds: &[BorrowedFd]| {
        let set = IrqSet {
            argsz: size_of::<IrqSet>() as u32,
            flags,
            index: PCI_MSIX_IRQ_INDEX,
            start: QUEUE_VECTOR,
            count: 1,
        };
        client.call(command::DEVICE_SET_IRQS, set.as_bytes(), fds);
    };
    let pba_bit = |client: &mut Client| client.read_u32(0, 0x7000) & (1 << QUEUE_VECTOR) != 0;

    // A new eventfd for the vector: the next interrupt goes there only.
    let second = sys::eventfd(true).unwrap();
    set_vector(
        &mut client,
        IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        &[second.as_fd()],
    );
    offer_buffer(&mut client, &memory, 2);
    assert!(
        is_signalled(&second, 5000),
        "no interrupt on the new eventfd"
    );
    assert!(
        !is_signalled(first, 0),
        "an interrupt on the eventfd given up"
    );

    // Masked: pending, in the PBA the client reads, and delivered at the unmask.
    set_vector(&mut client, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK, &[]);
    offer_buffer(&mut client, &memory, 3);
    wait_used(&memory, 3);
    assert!(!is_signalled(&second, 100), "an interrupt while masked");
    assert!(pba_bit(&mut client), "no pending bit while masked");
    set_vector(&mut client, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, &[]);
    assert!(
        is_signalled(&second, 5000),
        "the pending interrupt was lost"
    );
    assert!(!pba_bit(&mut client));

    // No eventfd for a while: pending until the client gives one.
    set_vector(
        &mut client,
        IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        &[],
    );
    offer_buffer(&mut client, &memory, 4);
    wait_used(&memory, 4);
    assert!(!is_signalled(&second, 100));
    let third = sys::eventfd(true).unwrap();
    set_vector(
        &mut client,
        IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        &[third.as_fd()],
    );
    assert!(
        is_signalled(&third, 5000),
        "the interrupt waiting for an eventfd was lost"
    );
    offer_buffer(&mut client, &memory, 5);
    assert!(is_signalled(&third, 5000));
    assert!(!is_signalled(&second, 0) && !is_signalled(first, 0));

    drop(client);
    server.join().unwrap();
}

#[test]
fn vfio_user_rng_msix_changes_do_not_panic() {
    let (mut client, server) = serve(rng_adapter());
    let eventfds: Vec<OwnedFd> = (0..2).map(|_| sys::eventfd(true).unwrap()).collect();
    // Before any memory, then partial de-assign, disable-all and assign again.
    client.set_msix(&eventfds);
    let set = |client: &mut Client, flags: u32, start: u32, count: u32| {
        let set = IrqSet {
            argsz: size_of::<IrqSet>() as u32,
            flags,
            index: PCI_MSIX_IRQ_INDEX,
            start,
            count,
        };
        client.call(command::DEVICE_SET_IRQS, set.as_bytes(), &[]);
    };
    set(
        &mut client,
        IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        1,
        1,
    );
    set(&mut client, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK, 0, 1);
    set(&mut client, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
    set(
        &mut client,
        IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
        0,
        0,
    );
    client.set_msix(&eventfds);
    // PBA reads reach crosvm's MsixConfig.
    let pba = client.read(0, 0x7000, 8);
    assert_eq!(pba, [0u8; 8]);
    drop(client);
    server.join().unwrap();
}

/// Gives MSI-X `vector` the eventfd `fd` (or takes its eventfd away) as SET_IRQS does.
fn assign_msix(interrupts: &Interrupts, vector: u32, fd: Option<&OwnedFd>) {
    interrupts
        .set_irqs(IrqSetRequest {
            set: IrqSet {
                argsz: size_of::<IrqSet>() as u32,
                flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                index: PCI_MSIX_IRQ_INDEX,
                start: vector,
                count: 1,
            },
            bools: &[],
            fds: fd.map(|fd| fd.try_clone().unwrap()).into_iter().collect(),
        })
        .unwrap();
}

/// `MsixConfig`'s side of the VM services' MSI protocol, as crosvm's msix.rs speaks it.
fn allocate_msi(tube: &base::Tube, vector: usize) -> (base::Event, VmIrqResponse) {
    let irqfd = base::Event::new().unwrap();
    tube.send(&VmIrqRequest::AllocateOneMsi {
        irqfd: irqfd.try_clone().unwrap(),
        device_id: vm_control::PciId::new(0x1af4, 0x1044).into(),
        queue_id: vector,
        device_name: "test".to_string(),
    })
    .unwrap();
    (irqfd, tube.recv().unwrap())
}

/// The VM services answer `MsixConfig` with the client's eventfd, which the device signals with
/// no thread between: it still arrives once the services are gone. A vector allocated before
/// the client gave it an eventfd is relayed until its route changes, with nothing lost.
#[test]
fn vfio_user_msix_vectors_signal_the_clients_eventfds() {
    let interrupts = Interrupts::new(IrqCounts {
        msix: 2,
        ..Default::default()
    });
    let direct = sys::eventfd(true).unwrap();
    assign_msix(&interrupts, 0, Some(&direct));
    let (services, endpoints, _intx) =
        VmServices::start(interrupts.clone(), None, Default::default()).unwrap();

    let (_, response) = allocate_msi(&endpoints.msi_tube, 0);
    let VmIrqResponse::Irqfd {
        irqfd: signalled, ..
    } = response
    else {
        panic!("answered {response:?}, not with the client's eventfd");
    };
    assert!(matches!(services.delivery(0), Some(Delivery::Direct(_))));

    // Vector 1 has no eventfd yet: crosvm's irqfd is relayed.
    let (relayed_irqfd, response) = allocate_msi(&endpoints.msi_tube, 1);
    let VmIrqResponse::AllocateOneMsi { gsi } = response else {
        panic!("answered {response:?} for a vector without an eventfd");
    };
    assert_eq!(services.delivery(1), Some(Delivery::Relayed));
    let relayed = sys::eventfd(true).unwrap();
    assign_msix(&interrupts, 1, Some(&relayed));
    relayed_irqfd.signal().unwrap();
    assert!(is_signalled(&relayed, 5000), "the relay delivered nothing");

    // Its route changes after the client gave it an eventfd: an interrupt the relay has not
    // passed on yet is delivered, and the device signals the eventfd itself from then on.
    relayed_irqfd.signal().unwrap();
    endpoints
        .msi_tube
        .send(&VmIrqRequest::AddMsiRoute {
            gsi,
            msi_address: 0xfee0_0000,
            msi_data: 1,
            #[cfg(target_arch = "aarch64")]
            pci_address: resources::PciAddress {
                bus: 0,
                dev: 1,
                func: 0,
            },
        })
        .unwrap();
    let response: VmIrqResponse = endpoints.msi_tube.recv().unwrap();
    let VmIrqResponse::Irqfd {
        irqfd: rerouted, ..
    } = response
    else {
        panic!("answered {response:?} to a route change with a new eventfd");
    };
    assert!(
        is_signalled(&relayed, 5000),
        "the interrupt in flight was lost"
    );
    assert!(matches!(services.delivery(1), Some(Delivery::Direct(_))));

    drop(services);
    signalled.signal().unwrap();
    rerouted.signal().unwrap();
    assert!(
        is_signalled(&direct, 0),
        "the device's signal is not the client's eventfd"
    );
    assert!(is_signalled(&relayed, 0));
}

/// A device's shared memory mappings (virtio-gpu's blobs) land in the BAR's shadow, which the
/// client maps: the blob's bytes appear at the offset the device chose, the guest's writes go
/// back into the blob when it is unmapped, and a mapping outside that BAR is refused.
#[test]
fn vfio_user_shared_memory_lands_in_the_bar_shadow() {
    let shadow = ShadowMemory::new();
    let mmap = shadow.region_mmap("test-bar2", 1 << 20).unwrap();
    let host_visible = HostVisibleBar {
        bar: 2,
        memory: HostVisibleMemory::Shadow(shadow.clone()),
    };
    let (_services, endpoints, _intx) = VmServices::start(
        vfio_user_server::Interrupts::default(),
        Some(host_visible),
        Default::default(),
    )
    .unwrap();
    let client = endpoints.shared_memory_client;

    let blob = base::SharedMemory::new("blob", 8192).unwrap();
    let blob_file = File::from(base::SafeDescriptor::from(blob.try_clone().unwrap()));
    blob_file.write_all_at(b"blob contents", 0).unwrap();
    let bar = |bar| Alloc::PciBar {
        bus: 0,
        dev: 1,
        func: 0,
        bar,
    };
    let region = client
        .register_memory(
            VmMemorySource::SharedMemory(blob),
            VmMemoryDestination::ExistingAllocation {
                allocation: bar(2),
                offset: 0x4000,
            },
            Protection::read_write(),
            MemCacheType::CacheCoherent,
        )
        .unwrap();
    let view = sys::MappedFile::map(mmap.fd.as_fd(), 0, 1 << 20, true, true).unwrap();
    let mut seen = [0u8; 13];
    // SAFETY: 0x4000 + 13 is inside the 1 MiB view.
    unsafe { sys::copy_guest(view.as_ptr().add(0x4000), seen.as_mut_ptr(), seen.len()) };
    assert_eq!(&seen, b"blob contents");
    // SAFETY: as above.
    unsafe { sys::copy_guest(b"guest".as_ptr(), view.as_ptr().add(0x4000), 5) };
    client.unregister_memory(region).unwrap();
    blob_file.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"guestcontents");
    assert_eq!(shadow.mapping_count(), 0);

    let other = base::SharedMemory::new("other", 4096).unwrap();
    assert!(client
        .register_memory(
            VmMemorySource::SharedMemory(other),
            VmMemoryDestination::ExistingAllocation {
                allocation: bar(0),
                offset: 0,
            },
            Protection::read_write(),
            MemCacheType::CacheCoherent,
        )
        .is_err());
    assert_eq!(shadow.mapping_count(), 0);
}

/// A virtio device with a shared memory region and nothing else, as virtio-gpu's host-visible
/// memory looks to the transport; the test drives its mapper as the GPU would.
struct HostVisibleDevice {
    mapper: Arc<Mutex<Option<Box<dyn SharedMemoryMapper>>>>,
    /// Where each build of the device was told its shared memory region lies.
    placed: Arc<Mutex<Vec<u64>>>,
}

const HOST_VISIBLE_SIZE: u64 = 0x10000;

impl VirtioDevice for HostVisibleDevice {
    fn keep_rds(&self) -> Vec<base::RawDescriptor> {
        Vec::new()
    }

    fn device_type(&self) -> DeviceType {
        DeviceType::Gpu
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }

    fn activate(
        &mut self,
        _mem: GuestMemory,
        _interrupt: Interrupt,
        _queues: BTreeMap<usize, Queue>,
    ) -> anyhow::Result<()> {
        Ok(())
    }

    fn get_shared_memory_region(&self) -> Option<SharedMemoryRegion> {
        Some(SharedMemoryRegion {
            id: 1,
            length: HOST_VISIBLE_SIZE,
        })
    }

    fn set_shared_memory_mapper(&mut self, mapper: Box<dyn SharedMemoryMapper>) {
        *self.mapper.lock().unwrap() = Some(mapper);
    }

    fn set_shared_memory_region(&mut self, region: resources::AddressRange) {
        self.placed.lock().unwrap().push(region.start);
    }
}

fn host_visible_adapter(
    mappable: bool,
) -> (
    PciDeviceAdapter,
    Arc<Mutex<Option<Box<dyn SharedMemoryMapper>>>>,
) {
    let (adapter, mapper, _) = host_visible_adapter_placing(mappable);
    (adapter, mapper)
}

/// `host_visible_adapter`, and where each build of the device was told its region lies.
fn host_visible_adapter_placing(
    mappable: bool,
) -> (
    PciDeviceAdapter,
    Arc<Mutex<Option<Box<dyn SharedMemoryMapper>>>>,
    Arc<Mutex<Vec<u64>>>,
) {
    let mapper: Arc<Mutex<Option<Box<dyn SharedMemoryMapper>>>> = Arc::default();
    let placed: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (slot, builds) = (mapper.clone(), placed.clone());
    let factory = virtio_pci_factory(move || {
        Ok(Box::new(HostVisibleDevice {
            mapper: slot.clone(),
            placed: builds.clone(),
        }) as Box<dyn VirtioDevice>)
    });
    let memory = HostVisibleMemory::Shadow(ShadowMemory::new());
    let adapter = PciDeviceAdapter::new(factory, memory, mappable).unwrap();
    (adapter, mapper, placed)
}

fn region_flags(client: &mut Client, index: u32) -> u32 {
    let request = RegionInfo {
        argsz: size_of::<RegionInfo>() as u32,
        index,
        ..Default::default()
    };
    let reply = client.call(command::DEVICE_GET_REGION_INFO, request.as_bytes(), &[]);
    read_struct::<RegionInfo>(&reply).unwrap().flags
}

/// The shared memory BAR is offered mappable (or not, when asked), and blobs the device maps
/// through crosvm's own shared memory mapper are reachable by a client that traps the BAR.
#[test]
fn vfio_user_host_visible_bar_serves_mapped_blobs() {
    let (adapter, mapper) = host_visible_adapter(true);
    let (mut client, server) = serve(adapter);
    assert_eq!(client.region_size(2), HOST_VISIBLE_SIZE);
    assert_ne!(region_flags(&mut client, 2) & REGION_INFO_FLAG_MMAP, 0);
    assert_eq!(
        region_flags(&mut client, 0) & REGION_INFO_FLAG_MMAP,
        0,
        "BAR0 trapped"
    );
    // A BAR access builds the device the client drives, which gets its mapper.
    client.read_u32(0, DEVICE_STATUS);
    let blob = base::SharedMemory::new("blob", 0x2000).unwrap();
    let blob_file = File::from(base::SafeDescriptor::from(blob.try_clone().unwrap()));
    blob_file.write_all_at(b"blob contents", 0).unwrap();
    mapper
        .lock()
        .unwrap()
        .as_mut()
        .expect("the device got a mapper")
        .add_mapping(
            VmMemorySource::SharedMemory(blob),
            0x4000,
            Protection::read_write(),
            MemCacheType::CacheCoherent,
        )
        .unwrap();
    assert_eq!(client.read(2, 0x4000, 13), b"blob contents");
    client.write(2, 0x4000, b"GUEST");
    assert_eq!(client.read(2, 0x4000, 13), b"GUESTcontents");
    mapper
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .remove_mapping(0x4000)
        .unwrap();
    assert_eq!(get(&blob_file, 0, 13), b"GUESTcontents");
    assert_eq!(client.read(2, 0x4000, 13), vec![0u8; 13]);
    drop(client);
    server.join().unwrap();

    let (adapter, _mapper) = host_visible_adapter(false);
    let (mut client, server) = serve(adapter);
    assert_eq!(region_flags(&mut client, 2) & REGION_INFO_FLAG_MMAP, 0);
    drop(client);
    server.join().unwrap();
}

const PMEM_SIZE: u64 = 2 << 20;

/// crosvm's virtio-pmem with its image in its shared memory region, over a `FileRegion`.
fn pmem_adapter(image: &File, writable: bool) -> PciDeviceAdapter {
    let region = FileRegion::new(OwnedFd::from(image.try_clone().unwrap()), writable).unwrap();
    let device_image = image.try_clone().unwrap();
    let factory = virtio_pci_factory(move || {
        let (tube, _) = base::Tube::pair()?;
        let pmem = Pmem::new(
            0,
            PmemConfig {
                disk_image: Some(device_image.try_clone()?),
                mapping_address: GuestAddress(0),
                mem_slot: MemSlotConfig::SharedMemoryRegion,
                mapping_size: PMEM_SIZE,
                pmem_device_tube: tube,
                swap_interval: None,
                mapping_writable: writable,
            },
        )?;
        Ok(Box::new(pmem) as Box<dyn VirtioDevice>)
    });
    let memory = HostVisibleMemory::File(Arc::new(region));
    PciDeviceAdapter::new(factory, memory, true).unwrap()
}

/// virtio-pmem's BAR is its image: offered for mapping (the file itself, no copy), and a client
/// that traps it reads and writes the image. The device's own mapping request, made when it is
/// built, is accepted as naming the file already there. A read-only image is trapped and
/// refuses stores.
#[test]
fn vfio_user_pmem_bar_is_its_image() {
    let image = tempfile::tempfile().unwrap();
    image.set_len(PMEM_SIZE).unwrap();
    image.write_all_at(b"on disk", 0x1000).unwrap();

    let (mut client, server) = serve(pmem_adapter(&image, true));
    assert_eq!(client.region_size(2), PMEM_SIZE);
    assert_ne!(region_flags(&mut client, 2) & REGION_INFO_FLAG_MMAP, 0);
    // A BAR access builds the device, which maps its image into the region.
    client.read_u32(0, DEVICE_STATUS);
    assert_eq!(client.read(2, 0x1000, 7), b"on disk");
    client.write(2, 0x1000, b"IN");
    assert_eq!(get(&image, 0x1000, 7), b"IN disk");
    drop(client);
    server.join().unwrap();

    let (mut client, server) = serve(pmem_adapter(&image, false));
    assert_eq!(region_flags(&mut client, 2) & REGION_INFO_FLAG_MMAP, 0);
    client.read_u32(0, DEVICE_STATUS);
    assert_eq!(client.read(2, 0x1000, 7), b"IN disk");
    assert!(client.try_write(2, 0x1000, b"on").is_err());
    assert_eq!(get(&image, 0x1000, 7), b"IN disk");
    drop(client);
    server.join().unwrap();
}

/// Into a `FileRegion` BAR the device can only place that file, where it already is.
#[test]
fn vfio_user_file_region_takes_only_its_own_file() {
    let image = tempfile::tempfile().unwrap();
    image.set_len(PMEM_SIZE).unwrap();
    let region = FileRegion::new(OwnedFd::from(image.try_clone().unwrap()), true).unwrap();
    let host_visible = HostVisibleBar {
        bar: 2,
        memory: HostVisibleMemory::File(Arc::new(region)),
    };
    let (_services, endpoints, _intx) = VmServices::start(
        vfio_user_server::Interrupts::default(),
        Some(host_visible),
        Default::default(),
    )
    .unwrap();
    let client = endpoints.shared_memory_client;
    let place = |file: &File, fd_offset: u64, offset: u64| {
        client.register_memory(
            VmMemorySource::Descriptor {
                descriptor: base::SafeDescriptor::from(file.try_clone().unwrap()),
                offset: fd_offset,
                size: PMEM_SIZE - offset,
            },
            VmMemoryDestination::ExistingAllocation {
                allocation: Alloc::PciBar {
                    bus: 0,
                    dev: 1,
                    func: 0,
                    bar: 2,
                },
                offset,
            },
            Protection::read_write(),
            MemCacheType::CacheCoherent,
        )
    };
    let region = place(&image, 0, 0).expect("the image where it is");
    client.unregister_memory(region).unwrap();
    assert!(place(&image, 0, 0x1000).is_err(), "moved");
    let other = tempfile::tempfile().unwrap();
    other.set_len(PMEM_SIZE).unwrap();
    assert!(place(&other, 0, 0).is_err(), "another file");
}

/// What a balloon frees goes back to the host: a hole is punched in the client's memory file
/// under exactly that range, and a range outside the client's memory is refused.
#[test]
fn vfio_user_freed_memory_returns_to_the_host() {
    let memory_client: Arc<Mutex<Option<VmMemoryClient>>> = Arc::default();
    let slot = memory_client.clone();
    let mut rng = virtio_module_factory(device_virtio_rng::VirtioRngModule);
    // The rng with the memory client a balloon would use kept here, as a balloon would keep it.
    let factory: PciDeviceFactory = Box::new(move |memory, mut endpoints| {
        let (unused, _) = base::Tube::pair()?;
        let kept = std::mem::replace(
            &mut endpoints.shared_memory_client,
            VmMemoryClient::new(unused),
        );
        *slot.lock().unwrap() = Some(kept);
        rng(memory, endpoints)
    });
    let memory_kind = HostVisibleMemory::Shadow(ShadowMemory::new());
    let adapter = PciDeviceAdapter::new(factory, memory_kind, true).unwrap();
    let (mut client, server) = serve(adapter);
    let memory = sys::memfd(c"vfio-user-balloon-test", MEMORY_SIZE).unwrap();
    client.dma_map(&memory);
    // A BAR access builds the device over the client's maps.
    client.read_u32(0, DEVICE_STATUS);
    put(&memory, 0, &vec![0x5a; MEMORY_SIZE as usize]);
    let allocated = || memory.metadata().unwrap().blocks() * 512;
    let before = allocated();

    let guard = memory_client.lock().unwrap();
    let vm = guard.as_ref().expect("the device was built");
    vm.dynamically_free_memory_ranges(vec![(GuestAddress(MEMORY_BASE + 0x8000), 0x4000)])
        .unwrap();
    assert_eq!(allocated(), before - 0x4000);
    assert!(get(&memory, 0x8000, 0x4000).iter().all(|&b| b == 0));
    assert!(get(&memory, 0x7000, 0x1000).iter().all(|&b| b == 0x5a));
    assert!(get(&memory, 0xc000, 0x1000).iter().all(|&b| b == 0x5a));
    // Past the end of the client's memory: nothing is freed.
    assert!(vm
        .dynamically_free_memory_ranges(vec![(
            GuestAddress(MEMORY_BASE + MEMORY_SIZE - 0x1000),
            0x2000
        )])
        .is_err());
    assert_eq!(allocated(), before - 0x4000);
    vm.dynamically_reclaim_memory_ranges(vec![(GuestAddress(MEMORY_BASE + 0x8000), 0x4000)])
        .unwrap();
    drop(guard);
    drop(client);
    server.join().unwrap();
}

/// The device is told where the client placed its shared memory BAR: the BAR's registers as the
/// client programmed them, read at the first BAR access, which builds the device again if it was
/// told otherwise.
#[test]
fn vfio_user_device_learns_where_the_client_placed_its_shared_memory() {
    let (adapter, _mapper, placed) = host_visible_adapter_placing(true);
    let (mut client, server) = serve(adapter);
    // BAR2 (64-bit, prefetchable) at 0x40_0000_0000, as a guest's firmware would place it.
    let config = PCI_CONFIG_REGION_INDEX;
    client.write(config, 0x18, &0u32.to_le_bytes());
    client.write(config, 0x1c, &0x40u32.to_le_bytes());
    client.read_u32(0, DEVICE_STATUS);
    assert_eq!(placed.lock().unwrap().last(), Some(&0x40_0000_0000));
    drop(client);
    server.join().unwrap();
}
