// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Malformed input from a client: every case ends in an error reply of the right shape or a
//! clean disconnect, never a hang or a crash, and the server goes on serving.

mod common;

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;

use common::*;
use integration::raw_client::RawClient;
use integration::raw_client::Received;
use integration::reference::regs;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;
use zerocopy::IntoBytes;

fn assert_error(reply: &Received, errno: i32, body_len: usize) {
    assert_eq!(
        reply.header.flags,
        header_flags::TYPE_REPLY | header_flags::ERROR,
        "{reply:?}"
    );
    assert_eq!(reply.header.error, errno as u32, "{reply:?}");
    assert_eq!(reply.body.len(), body_len, "error reply shape: {reply:?}");
}

fn region_read(region: u32, offset: u64, count: u32) -> Vec<u8> {
    RegionAccess {
        offset,
        region,
        count,
    }
    .as_bytes()
    .to_vec()
}

#[test]
fn short_header_then_disconnect() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    client.send_raw(&[1, 0, 4, 0, 0x20, 0, 0, 0], &[]).unwrap();
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(client.is_closed());
    assert_serving(&mut server);
}

#[test]
fn disconnect_mid_body() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    let header = Header {
        msg_id: 9,
        command: command::REGION_WRITE,
        msg_size: 64,
        ..Default::default()
    };
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    client.send_raw(&bytes, &[]).unwrap();
    drop(client);
    assert_serving(&mut server);
}

#[test]
fn message_size_smaller_than_header_closes() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    let header = Header {
        msg_id: 3,
        command: command::DEVICE_GET_INFO,
        msg_size: 8,
        ..Default::default()
    };
    client.send_raw(header.as_bytes(), &[]).unwrap();
    let reply = client.recv().unwrap();
    assert_eq!(reply.header.msg_id, 3);
    assert_error(&reply, libc::EINVAL, 0);
    assert!(client.is_closed());
    assert_serving(&mut server);
}

#[test]
fn message_too_large_to_discard_closes_with_e2big() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    let header = Header {
        msg_id: 4,
        command: command::REGION_WRITE,
        msg_size: 0x7fff_ffff,
        ..Default::default()
    };
    client.send_raw(header.as_bytes(), &[]).unwrap();
    let reply = client.recv().unwrap();
    assert_eq!(reply.header.msg_id, 4);
    // E2BIG, not the EINVAL of a size smaller than the header.
    assert_error(&reply, libc::E2BIG, 0);
    assert!(client.is_closed());
    assert_serving(&mut server);
    let expected = "message of 2147483647 bytes is too large";
    let log = server.log_containing(expected);
    assert!(log.contains(expected), "server log: {log}");
}

#[test]
fn message_larger_than_max_transfer_is_skipped() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let data = vec![0u8; 2 << 20];
    let mut body = RegionAccess {
        offset: 0,
        region: 2,
        count: data.len() as u32,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&data);
    // Send from a thread: the server reads (and drops) the body while we wait for the reply.
    let stream = client.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut sender = RawClient::from_stream(stream);
        sender.send(command::REGION_WRITE, 0, &body, &[]).unwrap()
    });
    let reply = client.recv().unwrap();
    let msg_id = sender.join().unwrap();
    assert_eq!(reply.header.msg_id, msg_id);
    assert_error(&reply, libc::E2BIG, 0);
    assert_alive(&mut client);
}

#[test]
fn unknown_and_server_only_commands() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let reply = client.call(99, &[1, 2, 3], &[]).unwrap();
    assert_error(&reply, libc::ENOSYS, 0);
    let reply = client.call(command::DMA_READ, &[0u8; 16], &[]).unwrap();
    assert_error(&reply, libc::ENOTSUP, 0);
    assert_alive(&mut client);
}

#[test]
fn commands_before_version_are_refused() {
    let server = ServerProcess::start();
    let mut client = RawClient::connect(&server.socket).unwrap();
    let reply = client
        .call(command::REGION_READ, &region_read(7, 0, 4), &[])
        .unwrap();
    // Shaped for a client that reads fixed-size replies: request echoed, data all ones.
    assert_error(&reply, libc::ENOTSUP, 16 + 4);
    assert_eq!(&reply.body[16..], &[0xff; 4]);
    client.negotiate().unwrap();
    assert_alive(&mut client);
}

#[test]
fn bad_version() {
    let mut server = ServerProcess::start();
    let mut client = RawClient::connect(&server.socket).unwrap();
    let mut body = Version { major: 1, minor: 0 }.as_bytes().to_vec();
    body.extend_from_slice(b"{}\0");
    let reply = client.call(command::VERSION, &body, &[]).unwrap();
    assert_error(&reply, libc::ENOTSUP, 0);
    assert!(client.is_closed());

    let mut client = RawClient::connect(&server.socket).unwrap();
    let mut body = Version { major: 0, minor: 0 }.as_bytes().to_vec();
    body.extend_from_slice(b"{\"capabilities\": [}\0");
    let reply = client.call(command::VERSION, &body, &[]).unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    assert!(client.is_closed());

    let mut client = RawClient::connect(&server.socket).unwrap();
    let reply = client.call(command::VERSION, &[0], &[]).unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    // One client at a time: this one has to go before the next is served.
    drop(client);
    assert_serving(&mut server);
}

#[test]
fn bad_argsz_gets_a_clamped_error() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let request = RegionInfo {
        argsz: 8,
        index: 0,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_REGION_INFO, request.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 8);
    let request = IrqInfo {
        argsz: 4,
        index: 0,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_IRQ_INFO, request.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 4);
    // Truncated body: the fixed part is missing, but argsz still bounds the shaped reply.
    let reply = client
        .call(command::DEVICE_GET_REGION_INFO, &[32, 0, 0, 0], &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 32);
    assert_alive(&mut client);
}

#[test]
fn indices_out_of_range_get_full_size_errors() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let reply = client
        .call(command::REGION_READ, &region_read(20, 0, 4), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 20);
    let request = RegionInfo {
        argsz: 32,
        index: 9,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_REGION_INFO, request.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 32);
    let request = IrqInfo {
        argsz: 16,
        index: 5,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_IRQ_INFO, request.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 16);
    let set = IrqSet {
        argsz: 20,
        flags: IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
        index: PCI_MSIX_IRQ_INDEX,
        start: 3,
        count: 2,
    };
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    assert_alive(&mut client);
}

#[test]
fn offsets_that_overflow_or_overrun() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    for (region, offset, count) in [
        (0, u64::MAX - 1, 4),
        (0, 0x3ffe, 4),
        (7, 0xff, 2),
        (7, 0, u32::MAX),
    ] {
        let reply = client
            .call(
                command::REGION_READ,
                &region_read(region, offset, count),
                &[],
            )
            .unwrap();
        let expected = if count == u32::MAX {
            (libc::E2BIG, 16)
        } else {
            (libc::EINVAL, 16 + count as usize)
        };
        assert_error(&reply, expected.0, expected.1);
    }
    // A write whose count disagrees with the data sent.
    let mut body = RegionAccess {
        offset: 0,
        region: 0,
        count: 8,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&[1, 2, 3, 4]);
    let reply = client.call(command::REGION_WRITE, &body, &[]).unwrap();
    assert_error(&reply, libc::EINVAL, 16);
    assert_alive(&mut client);
}

fn dma_map(address: u64, size: u64) -> Vec<u8> {
    DmaMap {
        argsz: 32,
        flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
        offset: 0,
        address,
        size,
    }
    .as_bytes()
    .to_vec()
}

#[test]
fn dma_maps_that_overlap_or_wrap() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let ram = GuestRam::new(0x10000);
    let fd = ram.fd();
    let fds = [fd.as_fd()];
    let ok = client
        .call(command::DMA_MAP, &dma_map(0x10000, 0x10000), &fds)
        .unwrap();
    assert!(!ok.header.is_error());
    // The identical map again is accepted.
    let again = client
        .call(command::DMA_MAP, &dma_map(0x10000, 0x10000), &fds)
        .unwrap();
    assert!(!again.header.is_error());
    let overlap = client
        .call(command::DMA_MAP, &dma_map(0x18000, 0x10000), &fds)
        .unwrap();
    assert_error(&overlap, libc::EEXIST, 0);
    let wrap = client
        .call(command::DMA_MAP, &dma_map(u64::MAX - 0xfff, 0x2000), &[])
        .unwrap();
    assert_error(&wrap, libc::EINVAL, 0);
    let empty = client
        .call(command::DMA_MAP, &dma_map(0x100000, 0), &[])
        .unwrap();
    assert_error(&empty, libc::EINVAL, 0);
    let unmap = DmaUnmap {
        argsz: 24,
        flags: 0,
        address: 0x10000,
        size: 0x8000,
    };
    let partial = client
        .call(command::DMA_UNMAP, unmap.as_bytes(), &[])
        .unwrap();
    assert_error(&partial, libc::EINVAL, 24);
    let unmap_all_with_range = DmaUnmap {
        argsz: 24,
        flags: DMA_UNMAP_FLAG_ALL,
        address: 0x10000,
        size: 0x10000,
    };
    let reply = client
        .call(command::DMA_UNMAP, unmap_all_with_range.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 24);
    let unknown = DmaUnmap {
        argsz: 24,
        flags: 0,
        address: 0x900000,
        size: 0x1000,
    };
    let reply = client
        .call(command::DMA_UNMAP, unknown.as_bytes(), &[])
        .unwrap();
    assert!(!reply.header.is_error(), "unknown ranges are tolerated");
    assert_eq!(reply.body, unknown.as_bytes());
    assert_alive(&mut client);
}

fn eventfds(count: usize) -> Vec<std::os::fd::OwnedFd> {
    (0..count).map(|_| sys::eventfd(true).unwrap()).collect()
}

#[test]
fn too_many_fds() {
    let mut server = ServerProcess::start();
    let mut client = connect(&server);
    let baseline = server.open_fds();
    let fds = eventfds(20);
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|fd| fd.as_fd()).collect();
    let set = IrqSet {
        argsz: 20,
        flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        index: PCI_MSIX_IRQ_INDEX,
        start: 0,
        count: 20,
    };
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &borrowed)
        .unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    // More than the server can even receive: the kernel truncates, the server says so.
    let fds = eventfds(100);
    let borrowed: Vec<BorrowedFd> = fds.iter().map(|fd| fd.as_fd()).collect();
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &borrowed)
        .unwrap();
    assert_error(&reply, libc::E2BIG, 0);
    // fds on a command that takes none.
    let reply = client
        .call(
            command::REGION_READ,
            &region_read(0, regs::ID, 4),
            &borrowed[..1],
        )
        .unwrap();
    assert_error(&reply, libc::EINVAL, 20);
    assert_eq!(
        server.wait_for_fds(baseline),
        baseline,
        "refused fds are closed"
    );
    assert_alive(&mut client);
    drop(client);
    assert_serving(&mut server);
}

#[test]
fn reply_flagged_message_from_client() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let msg_id = client
        .send(
            command::DEVICE_GET_INFO,
            header_flags::TYPE_REPLY,
            &[0u8; 16],
            &[],
        )
        .unwrap();
    let reply = client.recv().unwrap();
    assert_eq!(reply.header.msg_id, msg_id);
    assert_error(&reply, libc::EINVAL, 0);
    assert_alive(&mut client);
}

#[test]
fn failed_no_reply_command_stays_silent() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    client
        .send(
            command::REGION_WRITE,
            header_flags::NO_REPLY,
            &region_read(30, 0, 0),
            &[],
        )
        .unwrap();
    // The next reply is the answer to the next command, not an error for the posted write.
    assert_alive(&mut client);
}

#[test]
fn bad_set_irqs_data() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    // DATA_BOOL with fewer bytes than count.
    let set = IrqSet {
        argsz: 22,
        flags: IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_MASK,
        index: PCI_MSIX_IRQ_INDEX,
        start: 0,
        count: 4,
    };
    let mut body = set.as_bytes().to_vec();
    body.extend_from_slice(&[1, 1]);
    let reply = client.call(command::DEVICE_SET_IRQS, &body, &[]).unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    // Two actions at once.
    let set = IrqSet {
        argsz: 20,
        flags: IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK,
        index: PCI_MSIX_IRQ_INDEX,
        start: 0,
        count: 1,
    };
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    // start + count overflows.
    let set = IrqSet {
        argsz: 20,
        flags: IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
        index: PCI_MSIX_IRQ_INDEX,
        start: u32::MAX,
        count: 2,
    };
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 0);
    assert_alive(&mut client);
}

#[test]
fn bad_write_multi() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let mut body = WriteMultiHeader { wr_cnt: 3 }.as_bytes().to_vec();
    body.extend_from_slice(
        WriteMultiEntry {
            offset: regs::SCRATCH,
            region: 0,
            count: 4,
            data: [1; 8],
        }
        .as_bytes(),
    );
    let reply = client
        .call(command::REGION_WRITE_MULTI, &body, &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 8);
    let mut body = WriteMultiHeader { wr_cnt: 1 }.as_bytes().to_vec();
    body.extend_from_slice(
        WriteMultiEntry {
            offset: regs::SCRATCH,
            region: 0,
            count: 9,
            data: [1; 8],
        }
        .as_bytes(),
    );
    let reply = client
        .call(command::REGION_WRITE_MULTI, &body, &[])
        .unwrap();
    assert_error(&reply, libc::E2BIG, 8);
    let body = WriteMultiHeader { wr_cnt: u64::MAX }.as_bytes().to_vec();
    let reply = client
        .call(command::REGION_WRITE_MULTI, &body, &[])
        .unwrap();
    assert_error(&reply, libc::EINVAL, 8);
    assert_alive(&mut client);
}

#[test]
fn garbage_stream_never_hangs_the_server() {
    let mut server = ServerProcess::start();
    // Deterministic pseudo-random bytes after a valid VERSION: the server answers or closes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        let mut client = connect(&server);
        let garbage: Vec<u8> = (0..512)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = client.send_raw(&garbage, &[]);
        drop(client);
    }
    assert_serving(&mut server);
    // And a connection that is closed before VERSION.
    drop(UnixStream::connect(&server.socket).unwrap());
    assert_serving(&mut server);
}
