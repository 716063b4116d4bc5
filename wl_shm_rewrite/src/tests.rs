// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use super::*;

/// A file in the temporary directory, unlinked at once.
fn scratch_file(size: u64) -> File {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "wl-shm-rewrite-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file.set_len(size).unwrap();
    file
}

fn identity(fd: BorrowedFd) -> (u64, u64) {
    let metadata = File::from(fd.try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    (metadata.dev(), metadata.ino())
}

/// A region file and the blobs placed in it.
struct FakeRegion {
    file: File,
    placed: Vec<((u64, u64), Placement)>,
}

impl FakeRegion {
    fn new(size: u64) -> FakeRegion {
        FakeRegion {
            file: scratch_file(size),
            placed: Vec::new(),
        }
    }

    /// A blob of `len` bytes placed at `offset`.
    fn place(&mut self, offset: u64, len: u64) -> File {
        let blob = scratch_file(len);
        self.placed
            .push((identity(blob.as_fd()), Placement { offset, len }));
        blob
    }

    fn is_region(&self, fd: &OwnedFd) -> bool {
        identity(fd.as_fd()) == identity(self.file.as_fd())
    }
}

impl SharedRegion for FakeRegion {
    fn placement(&self, fd: BorrowedFd) -> Option<Placement> {
        let identity = identity(fd);
        self.placed
            .iter()
            .find(|(placed, _)| *placed == identity)
            .map(|(_, placement)| *placement)
    }

    fn region_fd(&self) -> io::Result<OwnedFd> {
        self.file.as_fd().try_clone_to_owned()
    }
}

/// Builds a client's requests with fresh ids from 2 (1 is wl_display).
struct Client {
    bytes: Vec<u8>,
}

fn request(object: u32, opcode: u16, args: &[u32]) -> Vec<u8> {
    let size = 8 + 4 * args.len();
    let mut bytes = object.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&(((size as u32) << 16) | u32::from(opcode)).to_ne_bytes());
    for arg in args {
        bytes.extend_from_slice(&arg.to_ne_bytes());
    }
    bytes
}

fn bind(registry: u32, interface: &str, id: u32) -> Vec<u8> {
    let mut text = interface.as_bytes().to_vec();
    text.push(0);
    let len = text.len() as u32;
    while !text.len().is_multiple_of(4) {
        text.push(0);
    }
    let mut bytes = request(registry, REGISTRY_BIND, &[7, len]);
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(&1u32.to_ne_bytes());
    bytes.extend_from_slice(&id.to_ne_bytes());
    let size = bytes.len() as u32;
    wire::set_word(&mut bytes, 4, (size << 16) | u32::from(REGISTRY_BIND));
    bytes
}

impl Client {
    /// get_registry (id 2) and bind wl_shm (id 3).
    fn with_shm() -> Client {
        let mut bytes = request(WL_DISPLAY, DISPLAY_GET_REGISTRY, &[2]);
        bytes.extend(bind(2, "wl_compositor", 10));
        bytes.extend(bind(2, "wl_shm", 3));
        Client { bytes }
    }

    fn push(&mut self, message: Vec<u8>) -> &mut Client {
        self.bytes.extend(message);
        self
    }
}

fn create_pool(id: u32, size: u32) -> Vec<u8> {
    request(3, SHM_CREATE_POOL, &[id, size])
}

fn create_buffer(pool: u32, id: u32, offset: u32) -> Vec<u8> {
    request(pool, POOL_CREATE_BUFFER, &[id, offset, 16, 16, 64, 1])
}

/// The 32-bit word at `at` of the message that starts at `message`.
fn word_at(bytes: &[u8], message: usize, at: usize) -> u32 {
    wire::word(bytes, message + at).unwrap()
}

fn fd_of(file: &File) -> OwnedFd {
    file.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn a_placed_blob_pool_becomes_the_region_shifted() {
    let mut region = FakeRegion::new(0x100000);
    let blob = region.place(0x20000, 0x8000);
    let mut client = Client::with_shm();
    let setup = client.bytes.len();
    client
        .push(create_pool(4, 0x8000))
        .push(create_buffer(4, 5, 0x1000))
        .push(request(4, POOL_RESIZE, &[0x6000]))
        .push(request(4, POOL_RESIZE, &[0x100000]));
    let mut rewriter = Rewriter::new();
    let out = rewriter.process(&client.bytes, vec![fd_of(&blob)], &region);
    assert_eq!(out.pools_rewritten, 1);
    assert_eq!(out.bytes.len(), client.bytes.len());
    assert_eq!(
        &out.bytes[..setup],
        &client.bytes[..setup],
        "setup unchanged"
    );
    assert!(
        region.is_region(&out.fds[0]),
        "the pool's fd is the region's"
    );
    // create_pool: size B + size; create_buffer: offset B + offset; resize: shifted, and
    // clamped to the blob.
    assert_eq!(word_at(&out.bytes, setup, 12), 0x28000);
    assert_eq!(word_at(&out.bytes, setup + 16, 12), 0x21000);
    assert_eq!(word_at(&out.bytes, setup + 16 + 32, 8), 0x26000);
    assert_eq!(word_at(&out.bytes, setup + 16 + 32 + 12, 8), 0x28000);
    // The compositor reads, through the fd it got at the offset it got, what the guest drew in
    // the region where the blob is placed.
    region.file.write_all_at(b"guest pixels", 0x21000).unwrap();
    let mut back = [0u8; 12];
    File::from(out.fds.into_iter().next().unwrap())
        .read_exact_at(&mut back, 0x21000)
        .unwrap();
    assert_eq!(&back, b"guest pixels");
}

#[test]
fn what_cannot_be_rewritten_passes_unchanged() {
    let mut region = FakeRegion::new(0x100000);
    let placed = region.place(0x20000, 0x1000);
    let unplaced = scratch_file(0x1000);
    let cases: Vec<(Vec<u8>, Vec<OwnedFd>)> = vec![
        // Not a placed blob.
        (create_pool(4, 0x1000), vec![fd_of(&unplaced)]),
        // Larger than its blob.
        (create_pool(4, 0x2000), vec![fd_of(&placed)]),
        // A second fd in the chunk, for a request not followed (linux-dmabuf's add, say).
        (
            [create_pool(4, 0x1000), request(40, 0, &[0, 0, 0, 0, 0])].concat(),
            vec![fd_of(&placed), fd_of(&unplaced)],
        ),
    ];
    for (messages, fds) in cases {
        let mut client = Client::with_shm();
        client.push(messages);
        let identities: Vec<_> = fds.iter().map(|fd| identity(fd.as_fd())).collect();
        let out = Rewriter::new().process(&client.bytes, fds, &region);
        assert_eq!(out.pools_rewritten, 0);
        assert_eq!(out.bytes, client.bytes);
        let after: Vec<_> = out.fds.iter().map(|fd| identity(fd.as_fd())).collect();
        assert_eq!(after, identities);
    }
    // Beyond what an int32 pool size reaches.
    let mut far = FakeRegion::new(0x1000);
    let blob = far.place(3 << 30, 0x1000);
    let mut client = Client::with_shm();
    client.push(create_pool(4, 0x1000));
    let out = Rewriter::new().process(&client.bytes, vec![fd_of(&blob)], &far);
    assert_eq!(out.pools_rewritten, 0);
    assert_eq!(out.bytes, client.bytes);
}

#[test]
fn fragmented_streams_give_the_same_bytes() {
    let mut region = FakeRegion::new(0x100000);
    let blob = region.place(0x10000, 0x4000);
    let mut client = Client::with_shm();
    client
        .push(create_pool(4, 0x4000))
        .push(create_buffer(4, 5, 0x100));
    let whole = Rewriter::new().process(&client.bytes, vec![fd_of(&blob)], &region);
    // Cut after the create_pool's fd-carrying message, as a sendmsg of its own would be.
    let pool_at = client.bytes.len() - 16 - 32;
    for cut in 1..client.bytes.len() {
        let mut rewriter = Rewriter::new();
        let (first, second) = client.bytes.split_at(cut);
        // The fd rides with the chunk where the create_pool starts.
        let (first_fds, second_fds) = if cut > pool_at {
            (vec![fd_of(&blob)], vec![])
        } else {
            (vec![], vec![fd_of(&blob)])
        };
        let a = rewriter.process(first, first_fds, &region);
        let b = rewriter.process(second, second_fds, &region);
        let bytes = [a.bytes, b.bytes].concat();
        assert_eq!(bytes.len(), client.bytes.len(), "cut {cut}");
        if a.pools_rewritten + b.pools_rewritten == 1 {
            assert_eq!(bytes, whole.bytes, "cut {cut}");
        } else {
            // The create_pool was split from its fd: it keeps the blob, unchanged.
            assert!(cut > pool_at && cut < pool_at + 16, "cut {cut}");
            assert_eq!(bytes, client.bytes, "cut {cut}");
        }
    }
}

#[test]
fn batched_pools_get_their_own_fds() {
    let mut region = FakeRegion::new(0x100000);
    let first = region.place(0x10000, 0x1000);
    let unplaced = scratch_file(0x1000);
    let second = region.place(0x30000, 0x2000);
    let mut client = Client::with_shm();
    let setup = client.bytes.len();
    client
        .push(create_pool(4, 0x1000))
        .push(create_pool(5, 0x1000))
        .push(create_pool(6, 0x2000))
        .push(create_buffer(6, 7, 0x1000))
        .push(create_buffer(5, 8, 0x200));
    let out = Rewriter::new().process(
        &client.bytes,
        vec![fd_of(&first), fd_of(&unplaced), fd_of(&second)],
        &region,
    );
    assert_eq!(out.pools_rewritten, 2);
    assert!(region.is_region(&out.fds[0]));
    assert_eq!(identity(out.fds[1].as_fd()), identity(unplaced.as_fd()));
    assert!(region.is_region(&out.fds[2]));
    assert_eq!(word_at(&out.bytes, setup, 12), 0x11000);
    assert_eq!(word_at(&out.bytes, setup + 16, 12), 0x1000);
    assert_eq!(word_at(&out.bytes, setup + 32, 12), 0x32000);
    assert_eq!(word_at(&out.bytes, setup + 48, 12), 0x31000);
    assert_eq!(
        word_at(&out.bytes, setup + 80, 12),
        0x200,
        "the unplaced pool's buffer"
    );
}

#[test]
fn destroyed_ids_are_forgotten() {
    let mut region = FakeRegion::new(0x100000);
    let blob = region.place(0x10000, 0x1000);
    let unplaced = scratch_file(0x1000);
    let mut rewriter = Rewriter::new();
    let mut client = Client::with_shm();
    client.push(create_pool(4, 0x1000));
    let out = rewriter.process(&client.bytes, vec![fd_of(&blob)], &region);
    assert_eq!(out.pools_rewritten, 1);
    // Pool 4 goes; id 4 comes back as a pool of an unplaced file, then as a buffer of it.
    let later = [
        request(4, POOL_DESTROY, &[]),
        create_pool(4, 0x1000),
        create_buffer(4, 9, 0x100),
    ]
    .concat();
    let out = rewriter.process(&later, vec![fd_of(&unplaced)], &region);
    assert_eq!(out.pools_rewritten, 0);
    assert_eq!(out.bytes, later);
    // wl_shm released: its id no longer makes pools.
    let released = [request(3, SHM_RELEASE, &[]), create_pool(11, 0x1000)].concat();
    let out = rewriter.process(&released, vec![fd_of(&blob)], &region);
    assert_eq!(out.pools_rewritten, 0);
    assert_eq!(out.bytes, released);
}

#[test]
fn a_broken_stream_passes_unchanged_from_then_on() {
    let mut region = FakeRegion::new(0x100000);
    let blob = region.place(0x10000, 0x1000);
    let mut rewriter = Rewriter::new();
    let mut client = Client::with_shm();
    client.push(request(2, 0, &[]));
    let bad = client.bytes.len() - 8;
    wire::set_word(&mut client.bytes, bad + 4, 6 << 16);
    let out = rewriter.process(&client.bytes, vec![], &region);
    assert_eq!(out.bytes, client.bytes);
    assert!(rewriter.lost().is_some());
    let pool = create_pool(4, 0x1000);
    let out = rewriter.process(&pool, vec![fd_of(&blob)], &region);
    assert_eq!(out.bytes, pool);
    assert_eq!(out.pools_rewritten, 0);
}
