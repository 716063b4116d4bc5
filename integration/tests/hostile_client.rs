// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A client that attacks the server through its memory: fds that cannot back their maps, more
//! maps and files than the server allows, and a file that shrinks under a map the device uses.
//! Each case ends in an error reply or a dropped client, and the server serves the next client
//! with everything released.

mod common;

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;

use common::*;
use integration::raw_client::RawClient;
use integration::raw_client::Received;
use integration::reference::regs;
use vfio_user_server::protocol::*;
use zerocopy::IntoBytes;

/// What the server advertises as `max_dma_maps`, and enforces.
const MAX_DMA_MAPS: usize = 1024;
/// Most distinct files the server keeps for one client's maps.
const MAX_DMA_FILES: usize = 256;

fn dma_map(address: u64, size: u64, offset: u64, flags: u32) -> Vec<u8> {
    DmaMap {
        argsz: 32,
        flags,
        offset,
        address,
        size,
    }
    .as_bytes()
    .to_vec()
}

const RW: u32 = DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE;

fn map(client: &mut RawClient, address: u64, size: u64, offset: u64, fd: BorrowedFd) -> Received {
    client
        .call(command::DMA_MAP, &dma_map(address, size, offset, RW), &[fd])
        .unwrap()
}

fn assert_refused(reply: &Received, errno: i32) {
    assert!(reply.header.is_error(), "{reply:?}");
    assert_eq!(reply.header.error, errno as u32, "{reply:?}");
}

fn assert_ok(reply: &Received) {
    assert!(!reply.header.is_error(), "{reply:?}");
}

/// A REGION_WRITE body for BAR0 at `offset`.
fn bar0_write(offset: u64, data: &[u8]) -> Vec<u8> {
    [
        RegionAccess {
            offset,
            region: 0,
            count: data.len() as u32,
        }
        .as_bytes(),
        data,
    ]
    .concat()
}

/// Programs the reference device's DMA engine (no interrupt) and sends its doorbell without
/// waiting for the reply: the access it starts may end the connection first.
fn ring_dma(client: &mut RawClient, src: u64, dst: u64, len: u32) {
    for (register, value) in [
        (regs::DMA_SRC, &src.to_le_bytes()[..]),
        (regs::DMA_DST, &dst.to_le_bytes()[..]),
        (regs::DMA_LEN, &len.to_le_bytes()[..]),
        (regs::DMA_IRQ, &regs::IRQ_NONE.to_le_bytes()[..]),
    ] {
        let reply = client
            .call(command::REGION_WRITE, &bar0_write(register, value), &[])
            .unwrap();
        assert_ok(&reply);
    }
    client
        .send(
            command::REGION_WRITE,
            0,
            &bar0_write(regs::DOORBELL, &1u32.to_le_bytes()),
            &[],
        )
        .unwrap();
}

/// Mappings the server process holds (lines of /proc/PID/maps).
fn mappings(server: &ServerProcess) -> usize {
    std::fs::read_to_string(format!("/proc/{}/maps", server.child.id()))
        .unwrap()
        .lines()
        .count()
}

/// Waits up to 5 s for `count` to return `expected`, and returns the last value.
fn settle(expected: usize, count: impl Fn() -> usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = count();
        if now == expected || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn maps_past_the_end_of_their_file_are_refused() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    // 2 MiB at offset 0 of a 4 KiB file: the first access past 4 KiB would raise SIGBUS.
    let small = GuestRam::new(0x1000);
    let reply = map(&mut client, 0x100000, 2 << 20, 0, small.fd().as_fd());
    assert_refused(&reply, libc::EINVAL);
    // 4 KiB at offset 4 MiB of a 2 MiB file.
    let ram = GuestRam::new(2 << 20);
    let reply = map(&mut client, 0x100000, 0x1000, 4 << 20, ram.fd().as_fd());
    assert_refused(&reply, libc::EINVAL);
    // An offset that wraps when the size is added.
    let reply = map(
        &mut client,
        0x100000,
        0x2000,
        u64::MAX - 0xfff,
        ram.fd().as_fd(),
    );
    assert_refused(&reply, libc::EINVAL);
    let log = server.log_containing("runs past the file's end");
    assert!(
        log.contains("DMA map 0x100000+0x200000 at offset 0x0 of its file runs past the file's end (0x1000 bytes)"),
        "one line per refusal, naming the problem: {log}"
    );
    // The same file, inside its bounds, is fine; nothing was left mapped by the refusals.
    assert_ok(&map(&mut client, 0x100000, 2 << 20, 0, ram.fd().as_fd()));
    assert_alive(&mut client);
    drop(client);
    assert_serving(&mut server);
}

#[test]
fn fds_that_cannot_back_a_map_are_refused() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    let (reader, _writer) = std::io::pipe().unwrap();
    let reply = map(&mut client, 0x100000, 0x1000, 0, reader.as_fd());
    assert_refused(&reply, libc::EINVAL);
    let eventfd = vfio_user_server::sys::eventfd(true).unwrap();
    let reply = map(&mut client, 0x100000, 0x1000, 0, eventfd.as_fd());
    assert_refused(&reply, libc::EINVAL);

    // A read-only fd: refused for a writable map, accepted for a read-only one.
    let dir = std::env::temp_dir().join(format!("hostile-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ram");
    std::fs::write(&path, vec![0u8; 0x1000]).unwrap();
    let read_only = OwnedFd::from(std::fs::File::open(&path).unwrap());
    let reply = map(&mut client, 0x100000, 0x1000, 0, read_only.as_fd());
    assert_refused(&reply, libc::EACCES);
    let reply = client
        .call(
            command::DMA_MAP,
            &dma_map(0x100000, 0x1000, 0, DMA_MAP_FLAG_READ),
            &[read_only.as_fd()],
        )
        .unwrap();
    assert_ok(&reply);
    std::fs::remove_dir_all(&dir).unwrap();
    let log = server.log_containing("cannot be mapped writable");
    assert!(log.contains("is a pipe, not a regular file"), "{log}");
    assert!(
        log.contains("cannot be mapped writable: the fd was opened read-only"),
        "{log}"
    );
    assert_alive(&mut client);
    drop(client);
    assert_serving(&mut server);
}

#[test]
fn the_advertised_map_limit_is_enforced_and_released_on_disconnect() {
    let mut server = ServerProcess::start();
    let ram = GuestRam::new((MAX_DMA_MAPS as u64 + 1) * 0x1000);
    // A first client leaves the server's own setup behind (threads, allocator arenas).
    let mut warm_up = connect(&server);
    assert_ok(&map(&mut warm_up, 0, 0x1000, 0, ram.fd().as_fd()));
    assert_alive(&mut warm_up);
    drop(warm_up);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let baseline_mappings = mappings(&server);
    let baseline_fds = server.open_fds();
    for round in 0..2 {
        let mut client = RawClient::connect(&server.socket).unwrap();
        let reply = client.negotiate().unwrap();
        let json = String::from_utf8_lossy(&reply.body[4..]).to_string();
        assert!(
            json.contains(&format!("\"max_dma_maps\":{MAX_DMA_MAPS}")),
            "the bound is advertised: {json}"
        );
        let fd = ram.fd();
        // Distinct 4 KiB windows of one file: one mapping each in the server.
        for i in 0..MAX_DMA_MAPS as u64 {
            let reply = map(
                &mut client,
                0x1000_0000 + i * 0x2000,
                0x1000,
                i * 0x1000,
                fd.as_fd(),
            );
            assert_ok(&reply);
        }
        let next = MAX_DMA_MAPS as u64;
        let reply = map(
            &mut client,
            0x1000_0000 + next * 0x2000,
            0x1000,
            next * 0x1000,
            fd.as_fd(),
        );
        assert_refused(&reply, libc::ENOSPC);
        assert!(
            mappings(&server) >= baseline_mappings + MAX_DMA_MAPS,
            "round {round}"
        );
        assert_alive(&mut client);
        drop(client);
        assert_eq!(
            settle(baseline_mappings, || mappings(&server)),
            baseline_mappings,
            "round {round}: every map is released on disconnect"
        );
        assert_eq!(
            server.wait_for_fds(baseline_fds),
            baseline_fds,
            "round {round}: every fd is closed on disconnect"
        );
    }
    assert!(server
        .log_containing("more than 1024 DMA maps")
        .contains("more than 1024 DMA maps"));
    assert_serving(&mut server);
}

#[test]
fn distinct_files_are_bounded_and_released_on_disconnect() {
    let mut server = ServerProcess::start();
    let baseline_fds = server.open_fds();
    let mut client = connect(&server);
    let files: Vec<GuestRam> = (0..=MAX_DMA_FILES).map(|_| GuestRam::new(0x1000)).collect();
    for (i, file) in files.iter().enumerate().take(MAX_DMA_FILES) {
        assert_ok(&map(
            &mut client,
            (i as u64 + 1) << 20,
            0x1000,
            0,
            file.fd().as_fd(),
        ));
    }
    let reply = map(
        &mut client,
        0x4000_0000,
        0x1000,
        0,
        files[MAX_DMA_FILES].fd().as_fd(),
    );
    assert_refused(&reply, libc::ENOSPC);
    // Another map of a file already held costs no fd and is accepted.
    assert_ok(&map(
        &mut client,
        0x4000_0000,
        0x1000,
        0,
        files[0].fd().as_fd(),
    ));
    assert!(server.open_fds() >= baseline_fds + MAX_DMA_FILES);
    let log = server.log_containing("distinct files");
    assert!(
        log.contains("DMA maps of more than 256 distinct files"),
        "{log}"
    );
    drop(client);
    assert_eq!(server.wait_for_fds(baseline_fds), baseline_fds);
    assert_serving(&mut server);
}

/// The reference device DMAs from a map whose file the client shrank: the server logs the
/// fault, drops that client and serves the next.
#[test]
fn a_file_that_shrinks_under_a_map_drops_the_client_not_the_server() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    let ram = GuestRam::new(1 << 20);
    assert_ok(&map(&mut client, 0, 1 << 20, 0, ram.fd().as_fd()));
    ram.file.set_len(0x4000).unwrap();
    // The device reads 0x8000, past the file's new end.
    ring_dma(&mut client, 0x8000, 0x1000, 64);
    let log = server.log_containing("guest memory fault at");
    assert!(
        log.contains("guest memory fault at 0x80"),
        "the fault is logged with the client's address: {log}"
    );
    assert!(client.is_closed() || client.device_info().is_err());
    assert_serving(&mut server);
}

/// While the server waits for the client to answer its DMA_READ, the client floods it with
/// large commands instead: the server keeps at most 16 MiB of them, then drops the client.
#[test]
fn commands_flooded_while_the_server_waits_are_bounded() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    // Memory without an fd: the device reaches it by asking the client.
    let fdless = dma_map(0x40000, 0x10000, 0, RW);
    assert_ok(&client.call(command::DMA_MAP, &fdless, &[]).unwrap());
    ring_dma(&mut client, 0x40000, 0x48000, 64);
    let request = client.recv().unwrap();
    assert_eq!(request.header.command, command::DMA_READ, "{request:?}");
    // 20 commands of 1 MiB each, none of which the server may handle before its answer.
    let data = vec![0u8; (1 << 20) - 16];
    let big = [
        RegionAccess {
            offset: 0,
            region: 2,
            count: data.len() as u32,
        }
        .as_bytes(),
        &data,
    ]
    .concat();
    for _ in 0..20 {
        if client.send(command::REGION_WRITE, 0, &big, &[]).is_err() {
            break;
        }
    }
    let log = server.log_containing("too many client commands");
    assert!(
        log.contains("too many client commands while waiting for a reply"),
        "{log}"
    );
    assert!(client.is_closed() || client.device_info().is_err());
    assert_serving(&mut server);
}
