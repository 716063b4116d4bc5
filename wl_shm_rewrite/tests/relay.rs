// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The rewriter in the relay, between a device and a compositor stand-in of ours: what the
//! compositor receives, and what it reads through the fds it gets.

use std::fs::File;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use vfio_user_server::sys;
use vfio_user_server::sys::MappedFile;
use vfio_user_server::ShadowMemory;
use vfio_user_server::SocketRelay;
use wl_shm_rewrite::Rewriter;

const REGISTRY: u32 = 2;
const SHM: u32 = 3;

fn request(object: u32, opcode: u16, args: &[u32]) -> Vec<u8> {
    let size = 8 + 4 * args.len();
    let mut bytes = object.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&(((size as u32) << 16) | u32::from(opcode)).to_ne_bytes());
    for arg in args {
        bytes.extend_from_slice(&arg.to_ne_bytes());
    }
    bytes
}

fn bind(interface: &str, id: u32) -> Vec<u8> {
    let mut text = interface.as_bytes().to_vec();
    text.push(0);
    let len = text.len() as u32;
    text.resize(text.len().div_ceil(4) * 4, 0);
    let mut bytes = request(REGISTRY, 0, &[1, len]);
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(&1u32.to_ne_bytes());
    bytes.extend_from_slice(&id.to_ne_bytes());
    let size = bytes.len() as u32;
    bytes[4..8].copy_from_slice(&(size << 16).to_ne_bytes());
    bytes
}

fn create_pool(id: u32, size: u32) -> Vec<u8> {
    request(SHM, 0, &[id, size])
}

fn create_buffer(pool: u32, id: u32, offset: u32) -> Vec<u8> {
    request(pool, 0, &[id, offset, 16, 16, 64, 1])
}

fn destroy(object: u32) -> Vec<u8> {
    // wl_shm_pool.destroy is opcode 1, wl_buffer.destroy opcode 0.
    request(object, if object < 100 { 1 } else { 0 }, &[])
}

/// One message as the compositor got it.
#[derive(Debug)]
struct Message {
    object: u32,
    opcode: u16,
    args: Vec<u32>,
}

/// A compositor stand-in: keeps every byte and fd it receives until the relay closes.
fn compositor(path: &Path) -> JoinHandle<(Vec<u8>, Vec<File>)> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        let mut files = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let received = sys::recv_with_fds(stream.as_fd(), &mut buf).unwrap();
            if received.len == 0 && received.fds.is_empty() {
                return (bytes, files);
            }
            bytes.extend_from_slice(&buf[..received.len]);
            files.extend(received.fds.into_iter().map(File::from));
        }
    })
}

fn parse(bytes: &[u8]) -> Vec<Message> {
    let word = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut messages = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let size = (word(at + 4) >> 16) as usize;
        messages.push(Message {
            object: word(at),
            opcode: word(at + 4) as u16,
            args: (at + 8..at + size).step_by(4).map(word).collect(),
        });
        at += size;
    }
    messages
}

fn send(device: &UnixStream, bytes: &[u8], fds: &[BorrowedFd]) {
    let sent = sys::send_with_fds(device.as_fd(), &[IoSlice::new(bytes)], fds).unwrap();
    assert_eq!(sent, bytes.len());
}

fn same_file(a: BorrowedFd, b: BorrowedFd) -> bool {
    sys::file_identity(a).unwrap() == sys::file_identity(b).unwrap()
}

#[test]
fn the_compositor_reads_placed_pools_in_the_region_and_the_rest_as_before() {
    let dir = std::env::temp_dir().join(format!("wl-shm-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let received = compositor(&dir.join("compositor"));

    const REGION: u64 = 4 << 20;
    let shadow = ShadowMemory::new();
    let mmap = shadow.region_mmap("test", REGION).unwrap();
    let guest = MappedFile::map(mmap.fd.as_fd(), 0, REGION as usize, true, true).unwrap();
    let guest_write = |offset: u64, text: &[u8]| {
        assert!(offset + text.len() as u64 <= REGION);
        // SAFETY: the range is inside the REGION-byte view (asserted above).
        unsafe {
            sys::copy_guest(
                text.as_ptr(),
                guest.as_ptr().add(offset as usize),
                text.len(),
            )
        }
    };
    let placed = |offset: u64, len: u64| {
        let file = sys::memfd(c"blob", len).unwrap();
        shadow.map(offset, file.as_fd(), 0, len, true).unwrap();
        file
    };
    let a = placed(0x10000, 0x10000);
    let b = placed(0x40000, 0x4000);
    let c = placed(0x80000, 0x4000);
    let unplaced = sys::memfd(c"unplaced", 0x4000).unwrap();

    let filters: vfio_user_server::FilterFactory =
        Arc::new(|| Box::new(Rewriter::new()) as Box<dyn vfio_user_server::StreamFilter>);
    let relay = SocketRelay::start_filtered(
        &dir.join("relay"),
        &dir.join("compositor"),
        shadow.clone(),
        Some(filters),
    )
    .unwrap();
    let device = UnixStream::connect(relay.path()).unwrap();

    // Setup, then a pool of many buffers, in one message with its fd.
    let setup = [
        request(1, 1, &[REGISTRY]),
        bind("wl_compositor", 10),
        bind("wl_shm", SHM),
    ]
    .concat();
    let mut many = create_pool(4, 0x10000);
    for i in 0..8 {
        many.extend(create_buffer(4, 100 + i, i * 0x2000));
    }
    send(&device, &[setup, many].concat(), &[a.as_fd()]);
    // Batched: two pools in one message, one of a placed blob, one not.
    let batched = [
        create_pool(5, 0x4000),
        create_pool(6, 0x4000),
        create_buffer(5, 110, 0x1000),
        create_buffer(6, 111, 0x1000),
    ]
    .concat();
    send(&device, &batched, &[b.as_fd(), unplaced.as_fd()]);
    // A pool split from its fd (the fd comes with a partial message): not rewritten, copied.
    let split = [create_pool(7, 0x4000), create_buffer(7, 112, 0)].concat();
    send(&device, &split[..10], &[c.as_fd()]);
    send(&device, &split[10..], &[]);
    // Ids destroyed and reused: pool 4 comes back as a pool of the unplaced file.
    let mut reuse = destroy(4);
    for i in 0..8 {
        reuse.extend(destroy(100 + i));
    }
    reuse.extend([create_pool(4, 0x4000), create_buffer(4, 100, 0x100)].concat());
    send(&device, &reuse, &[unplaced.as_fd()]);
    // The guest draws, then something that makes the compositor look (a commit).
    guest_write(0x10000 + 3 * 0x2000, b"pixels of buffer 103");
    guest_write(0x40000 + 0x1000, b"pixels of buffer 110");
    guest_write(0x80000, b"pixels of buffer 112");
    send(&device, &request(20, 6, &[]), &[]);
    drop(device);
    let (bytes, files) = received.join().unwrap();
    drop(relay);

    let messages = parse(&bytes);
    let pools: Vec<&Message> = messages
        .iter()
        .filter(|m| m.object == SHM && m.opcode == 0)
        .collect();
    assert_eq!(pools.len(), 5);
    assert_eq!(files.len(), 5, "one fd per pool, in order");
    // Pool 4 of blob A at 0x10000: the region's file, B + size.
    assert_eq!(pools[0].args, vec![4, 0x20000]);
    assert!(same_file(files[0].as_fd(), mmap.fd.as_fd()));
    let buffers: Vec<u32> = messages
        .iter()
        .filter(|m| m.object == 4 && m.opcode == 0)
        .map(|m| m.args[1])
        .collect();
    let shifted: Vec<u32> = (0..8).map(|i| 0x10000 + i * 0x2000).collect();
    assert_eq!(&buffers[..8], &shifted[..]);
    let mut seen = [0u8; 20];
    files[0]
        .read_exact_at(&mut seen, 0x10000 + 3 * 0x2000)
        .unwrap();
    assert_eq!(&seen, b"pixels of buffer 103", "read in place");
    a.read_exact_at(&mut seen, 3 * 0x2000).unwrap();
    assert_eq!(seen, [0u8; 20], "blob A itself is never copied to");
    // Batched: B rewritten, the unplaced one as it came.
    assert_eq!(pools[1].args, vec![5, 0x44000]);
    assert!(same_file(files[1].as_fd(), mmap.fd.as_fd()));
    assert_eq!(pools[2].args, vec![6, 0x4000]);
    assert!(same_file(files[2].as_fd(), unplaced.as_fd()));
    let of = |pool: u32, id: u32| {
        messages
            .iter()
            .find(|m| m.object == pool && m.opcode == 0 && m.args[0] == id)
            .unwrap()
            .args[1]
    };
    assert_eq!(of(5, 110), 0x41000);
    assert_eq!(of(6, 111), 0x1000);
    files[1].read_exact_at(&mut seen, 0x41000).unwrap();
    assert_eq!(&seen, b"pixels of buffer 110");
    // Split from its fd: blob C's own file, unchanged messages, and the guest's pixels copied
    // into it before the commit.
    assert_eq!(pools[3].args, vec![7, 0x4000]);
    assert!(same_file(files[3].as_fd(), c.as_fd()));
    assert_eq!(of(7, 112), 0);
    files[3].read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(
        &seen, b"pixels of buffer 112",
        "copied out before the commit"
    );
    // Id 4 reused for an unplaced pool: nothing shifted.
    assert_eq!(pools[4].args, vec![4, 0x4000]);
    assert!(same_file(files[4].as_fd(), unplaced.as_fd()));
    assert_eq!(buffers.last(), Some(&0x100));
    // Everything else arrived byte for byte.
    assert_eq!(messages.len(), 3 + 9 + 4 + 2 + 9 + 2 + 1);
    let _ = std::fs::remove_dir_all(&dir);
}
