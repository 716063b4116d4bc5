// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Conformance with the rust-vmm `vfio_user` crate's `Client`, the library cloud-hypervisor
//! links: its startup sequence replayed against the reference device, then DMA, interrupts,
//! mmapped regions, reset, and reconnection.

mod common;

use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;

use common::*;
use integration::reference::regs;
use integration::reference::BAR0_SIZE;
use integration::reference::BAR2_SIZE;
use integration::reference::DEVICE_ID;
use integration::reference::MSIX_CAP_OFFSET;
use integration::reference::MSIX_VECTORS;
use integration::reference::VENDOR_ID;
use vfio_user::Client;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;

const RAM_SIZE: u64 = 2 << 20;

fn read32(client: &mut Client, region: u32, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    client.region_read(region, offset, &mut data).unwrap();
    u32::from_le_bytes(data)
}

fn write32(client: &mut Client, region: u32, offset: u64, value: u32) {
    client
        .region_write(region, offset, &value.to_le_bytes())
        .unwrap();
}

fn write64(client: &mut Client, offset: u64, value: u64) {
    client
        .region_write(0, offset, &value.to_le_bytes())
        .unwrap();
}

fn eventfds(count: usize) -> Vec<OwnedFd> {
    (0..count).map(|_| sys::eventfd(true).unwrap()).collect()
}

fn raw(fds: &[OwnedFd]) -> Vec<RawFd> {
    fds.iter().map(|fd| fd.as_raw_fd()).collect()
}

/// cloud-hypervisor's order: VERSION, GET_INFO, GET_REGION_INFO for every region (inside
/// `Client::new`), config capability walk, GET_IRQ_INFO, INTx SET_IRQS, DMA_MAP of RAM, BAR
/// sizing by writing all ones to config space.
#[test]
fn cloud_hypervisor_startup_sequence() {
    let server = ServerProcess::start();
    let mut client = Client::new(&server.socket).expect("handshake and region discovery");

    let bar0 = client.region(0).unwrap();
    assert_eq!(bar0.size, BAR0_SIZE);
    assert_eq!(
        bar0.flags & REGION_INFO_FLAG_MMAP,
        0,
        "BAR0 holds the MSI-X table"
    );
    assert!(bar0.file_offset.is_none());
    assert_eq!(
        client.region(1).unwrap().size,
        0,
        "upper half of 64-bit BAR0"
    );
    let bar2 = client.region(2).unwrap();
    assert_eq!(bar2.size, BAR2_SIZE);
    assert_ne!(bar2.flags & REGION_INFO_FLAG_MMAP, 0);
    assert!(
        bar2.file_offset.is_some(),
        "the fd of the second (full) reply is kept"
    );
    let areas: Vec<(u64, u64)> = bar2
        .sparse_areas
        .iter()
        .map(|a| (a.offset, a.size))
        .collect();
    assert_eq!(areas, vec![(0x1000, BAR2_SIZE - 0x1000)]);
    assert_eq!(client.region(PCI_CONFIG_REGION_INDEX).unwrap().size, 256);
    // The crate's reset check is inverted: a server that advertises RESET looks non-resettable
    // to it, so cloud-hypervisor skips DEVICE_RESET at startup against us.
    assert!(!client.resettable());

    // Capability walk with byte and dword reads.
    let ids = read32(&mut client, PCI_CONFIG_REGION_INDEX, 0);
    assert_eq!(ids, u32::from(VENDOR_ID) | u32::from(DEVICE_ID) << 16);
    let mut cap_ptr = [0u8; 1];
    client
        .region_read(PCI_CONFIG_REGION_INDEX, 0x34, &mut cap_ptr)
        .unwrap();
    assert_eq!(cap_ptr[0] as usize, MSIX_CAP_OFFSET);
    let cap = read32(&mut client, PCI_CONFIG_REGION_INDEX, MSIX_CAP_OFFSET as u64);
    assert_eq!(cap & 0xff, 0x11, "MSI-X capability");
    assert_eq!((cap >> 16) & 0x7ff, MSIX_VECTORS - 1);

    assert_eq!(client.get_irq_info(PCI_MSI_IRQ_INDEX).unwrap().count, 0);
    let msix = client.get_irq_info(PCI_MSIX_IRQ_INDEX).unwrap();
    assert_eq!(msix.count, MSIX_VECTORS);
    assert_ne!(msix.flags & IRQ_INFO_EVENTFD, 0);
    let intx = client.get_irq_info(PCI_INTX_IRQ_INDEX).unwrap();
    assert_eq!(intx.count, 1);
    let intx_fd = eventfds(1);
    client
        .set_irqs(
            PCI_INTX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &raw(&intx_fd),
        )
        .unwrap();

    let ram = GuestRam::new(RAM_SIZE);
    client
        .dma_map(0, 0, RAM_SIZE, ram.fd().as_raw_fd())
        .unwrap();
    assert_eq!(read32(&mut client, 0, regs::DMA_MAPS), 1);

    // BAR sizing: all ones written, never restored.
    let mut sizes = Vec::new();
    for offset in (0x10..0x28).step_by(4) {
        write32(&mut client, PCI_CONFIG_REGION_INDEX, offset, 0xffff_ffff);
        sizes.push(read32(&mut client, PCI_CONFIG_REGION_INDEX, offset));
    }
    assert_eq!(
        sizes,
        vec![
            !(BAR0_SIZE as u32 - 1) | 0x4,
            0xffff_ffff,
            !(BAR2_SIZE as u32 - 1) | 0x8,
            0,
            0,
            0
        ]
    );
    // Config space beyond the BARs still reaches the device.
    assert_eq!(
        read32(&mut client, PCI_CONFIG_REGION_INDEX, 0x08) >> 8,
        integration::reference::CLASS_CODE
    );
}

#[test]
fn device_dma_reaches_client_memory_and_raises_msix() {
    let server = ServerProcess::start();
    let mut client = Client::new(&server.socket).unwrap();
    let ram = GuestRam::new(RAM_SIZE);
    client
        .dma_map(0, 0, RAM_SIZE, ram.fd().as_raw_fd())
        .unwrap();
    let vectors = eventfds(MSIX_VECTORS as usize);
    client
        .set_irqs(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            0,
            MSIX_VECTORS,
            &raw(&vectors),
        )
        .unwrap();

    let data = pattern(64 << 10, 7);
    ram.write(0x10000, &data);
    write64(&mut client, regs::DMA_SRC, 0x10000);
    write64(&mut client, regs::DMA_DST, 0x100000);
    write32(&mut client, 0, regs::DMA_LEN, data.len() as u32);
    write32(&mut client, 0, regs::DMA_IRQ, 2);
    write32(&mut client, 0, regs::DOORBELL, 1);

    assert_eq!(wait_event(&vectors[2]), 1, "MSI-X vector 2 fired");
    assert_eq!(poll_event(&vectors[0]), 0);
    assert_eq!(read32(&mut client, 0, regs::DMA_STATUS), 0);
    assert_eq!(ram.read(0x100000, data.len()), data);

    // A DMA that runs past the end of guest RAM is refused without touching memory.
    write64(&mut client, regs::DMA_DST, RAM_SIZE - 16);
    write32(&mut client, 0, regs::DMA_LEN, 32);
    write32(&mut client, 0, regs::DOORBELL, 1);
    assert_eq!(wait_event(&vectors[2]), 1);
    assert_eq!(
        read32(&mut client, 0, regs::DMA_STATUS),
        libc::EFAULT as u32
    );
    assert_eq!(ram.read(RAM_SIZE - 16, 16), vec![0u8; 16]);

    // Unmapped: the server holds no map, and DMA fails.
    client.dma_unmap(0, RAM_SIZE).unwrap();
    assert_eq!(read32(&mut client, 0, regs::DMA_MAPS), 0);
    write64(&mut client, regs::DMA_DST, 0x100000);
    write32(&mut client, 0, regs::DOORBELL, 1);
    assert_eq!(wait_event(&vectors[2]), 1);
    assert_eq!(
        read32(&mut client, 0, regs::DMA_STATUS),
        libc::EFAULT as u32
    );
}

#[test]
fn intx_fires_until_deasserted() {
    let server = ServerProcess::start();
    let mut client = Client::new(&server.socket).unwrap();
    let fd = eventfds(1);
    client
        .set_irqs(
            PCI_INTX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            0,
            1,
            &raw(&fd),
        )
        .unwrap();
    let unmask = |client: &mut Client| {
        client
            .set_irqs(
                PCI_INTX_IRQ_INDEX,
                IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK,
                0,
                1,
                &[],
            )
            .unwrap()
    };
    write32(&mut client, 0, regs::INTX, 1);
    assert_eq!(poll_event(&fd[0]), 1);
    // Automasked: asserting again does nothing until the client unmasks.
    write32(&mut client, 0, regs::INTX, 1);
    assert_eq!(poll_event(&fd[0]), 0);
    unmask(&mut client);
    assert_eq!(poll_event(&fd[0]), 1, "still asserted at unmask");
    write32(&mut client, 0, regs::INTX, 0);
    unmask(&mut client);
    assert_eq!(poll_event(&fd[0]), 0, "deasserted: no more interrupts");
}

#[test]
fn mmapped_bar_is_coherent_with_trapped_access() {
    let server = ServerProcess::start();
    let mut client = Client::new(&server.socket).unwrap();
    let region = client.region(2).unwrap();
    let file_offset = region.file_offset.as_ref().unwrap();
    let area = region.sparse_areas[0];
    let map = sys::MappedFile::map(
        std::os::fd::AsFd::as_fd(file_offset.file()),
        file_offset.start() + area.offset,
        area.size as usize,
        true,
        true,
    )
    .unwrap();
    let data = pattern(256, 3);
    // SAFETY: the mapping is area.size (>= 256 + 0x100) bytes long and owned by this test.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), map.as_ptr().add(0x100), data.len()) };
    let mut back = vec![0u8; data.len()];
    client
        .region_read(2, area.offset + 0x100, &mut back)
        .unwrap();
    assert_eq!(back, data, "trapped read sees the client's mmap writes");

    // The trapped first page is outside the sparse area but works through messages.
    client.region_write(2, 0x10, b"trapped").unwrap();
    let mut back = [0u8; 7];
    client.region_read(2, 0x10, &mut back).unwrap();
    assert_eq!(&back, b"trapped");
}

#[test]
fn reset_and_reconnect_start_from_a_clean_device() {
    let mut server = ServerProcess::start();
    let mut client = Client::new(&server.socket).unwrap();
    // Let the server settle into its serving state before counting its fds.
    read32(&mut client, 0, regs::ID);
    let baseline = server.open_fds();

    write64(&mut client, regs::SCRATCH, 0x1234_5678_9abc_def0);
    client.reset().unwrap();
    assert_eq!(
        read32(&mut client, 0, regs::SCRATCH),
        0,
        "DEVICE_RESET clears state"
    );

    let ram = GuestRam::new(RAM_SIZE);
    client
        .dma_map(0, 0, RAM_SIZE, ram.fd().as_raw_fd())
        .unwrap();
    let vectors = eventfds(MSIX_VECTORS as usize);
    client
        .set_irqs(
            PCI_MSIX_IRQ_INDEX,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            0,
            MSIX_VECTORS,
            &raw(&vectors),
        )
        .unwrap();
    write64(&mut client, regs::SCRATCH, 42);
    assert!(
        server.open_fds() > baseline,
        "server holds the client's fds"
    );

    // Disconnect without any unmap: the server must drop everything itself.
    client.shutdown().unwrap();
    drop(client);
    let mut client = Client::new(&server.socket).expect("the server accepts the next client");
    assert_eq!(read32(&mut client, 0, regs::DMA_MAPS), 0, "maps gone");
    assert_eq!(read32(&mut client, 0, regs::SCRATCH), 0, "device reset");
    assert_eq!(
        server.wait_for_fds(baseline),
        baseline,
        "eventfds and memfd closed"
    );
    assert!(server.alive());
}

#[test]
fn many_reconnects_leak_nothing() {
    let server = ServerProcess::start();
    let ram = GuestRam::new(RAM_SIZE);
    let mut baseline = None;
    for round in 0..20u64 {
        let mut client = Client::new(&server.socket).unwrap();
        assert_eq!(read32(&mut client, 0, regs::DMA_MAPS), 0);
        let fds = baseline.get_or_insert_with(|| server.open_fds());
        assert_eq!(server.open_fds(), *fds, "round {round}");
        client
            .dma_map(0, 0, RAM_SIZE, ram.fd().as_raw_fd())
            .unwrap();
        let vectors = eventfds(2);
        client
            .set_irqs(
                PCI_MSIX_IRQ_INDEX,
                IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                1,
                2,
                &raw(&vectors),
            )
            .unwrap();
        write64(&mut client, regs::SCRATCH, round);
    }
}

/// Socket activation: the listening socket arrives as an inherited fd.
#[test]
fn serves_an_inherited_listening_socket() {
    use std::os::unix::net::UnixListener;
    use std::os::unix::process::CommandExt;

    let dir = std::env::temp_dir().join(format!("vfio-user-fd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("activated.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let listener_fd = listener.as_raw_fd();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reference-server"));
    command.args(["--fd", "3"]);
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the child between fork and exec,
    // where they place the listening socket at fd 3 without close-on-exec, as a service manager
    // would. The listener may already be fd 3 (tests run in parallel, so numbers vary): dup2 of
    // an fd onto itself leaves close-on-exec set, so that case clears the flag instead.
    unsafe {
        command.pre_exec(move || {
            let rc = if listener_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(listener_fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop(listener);
    let mut client = Client::new(&path).expect("served on the inherited socket");
    assert_eq!(read32(&mut client, 0, regs::ID), regs::MAGIC);
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--fd N` for a descriptor the server was not given is refused at start, with the reason.
#[test]
fn refuses_an_fd_it_was_not_given() {
    // The child inherits none of this process's descriptors (std opens them close-on-exec).
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reference-server"))
        .args(["--fd", "40"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--fd 40 is not open"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}
