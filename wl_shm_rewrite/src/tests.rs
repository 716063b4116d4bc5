// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
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
    fn lend(&self, fd: BorrowedFd) -> Option<Placement> {
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

fn event(object: u32, opcode: u16, args: &[u32]) -> Vec<u8> {
    request(object, opcode, args)
}

fn release(buffer: u32) -> Vec<u8> {
    event(buffer, BUFFER_EVENT_RELEASE, &[])
}

fn delete_id(id: u32) -> Vec<u8> {
    event(WL_DISPLAY, DISPLAY_EVENT_DELETE_ID, &[id])
}

fn attach(surface: u32, buffer: u32) -> Vec<u8> {
    request(surface, SURFACE_ATTACH, &[buffer, 0, 0])
}

/// A rewriter that followed a client with a rewritten pool 4 of a blob placed at 0x10000 and
/// surfaces 20 and 21, and the region.
fn with_rewritten_pool() -> (Rewriter, FakeRegion, File) {
    let mut region = FakeRegion::new(0x100000);
    let blob = region.place(0x10000, 0x4000);
    let mut client = Client::with_shm();
    client
        .push(request(10, COMPOSITOR_CREATE_SURFACE, &[20]))
        .push(request(10, COMPOSITOR_CREATE_SURFACE, &[21]))
        .push(create_pool(4, 0x4000));
    let mut rewriter = Rewriter::new();
    let out = rewriter.process(&client.bytes, vec![fd_of(&blob)], &region);
    assert_eq!(out.pools_rewritten, 1);
    (rewriter, region, blob)
}

const BLOB: Range<u64> = 0x10000..0x14000;

/// Buffer 5 of pool 4, attached to surface 20, then the pool and the buffer destroyed.
fn destroyed_while_shown() -> Vec<u8> {
    [
        create_buffer(4, 5, 0),
        request(4, POOL_DESTROY, &[]),
        attach(20, 5),
        request(5, BUFFER_DESTROY, &[]),
    ]
    .concat()
}

#[test]
fn a_pool_and_its_buffers_are_lent_until_destroyed() {
    let (mut rewriter, region, _blob) = with_rewritten_pool();
    assert_eq!(rewriter.lent(), vec![BLOB]);
    let messages = [
        create_buffer(4, 5, 0),
        create_buffer(4, 6, 0x1000),
        request(4, POOL_DESTROY, &[]),
    ]
    .concat();
    rewriter.process(&messages, vec![], &region);
    assert_eq!(rewriter.lent(), vec![BLOB, BLOB], "two buffers, no pool");
    rewriter.process(&request(5, BUFFER_DESTROY, &[]), vec![], &region);
    assert_eq!(rewriter.lent(), vec![BLOB]);
    rewriter.process(&request(6, BUFFER_DESTROY, &[]), vec![], &region);
    assert_eq!(rewriter.lent(), vec![]);
}

#[test]
fn a_buffer_destroyed_while_shown_stays_lent_until_the_compositor_lets_go() {
    // Released by the compositor before it saw the destroy.
    let (mut rewriter, region, _blob) = with_rewritten_pool();
    let messages = destroyed_while_shown();
    rewriter.process(&messages, vec![], &region);
    assert_eq!(rewriter.lent(), vec![BLOB], "destroyed, still shown");
    rewriter.process_events(&release(5));
    assert_eq!(rewriter.lent(), vec![]);

    // Freed by the compositor first: a release for id 5 is then another object's.
    let (mut rewriter, region, _blob) = with_rewritten_pool();
    rewriter.process(&messages, vec![], &region);
    rewriter.process_events(&[delete_id(5), release(5)].concat());
    assert_eq!(rewriter.lent(), vec![BLOB]);
    // The surface shows a later buffer, and the compositor is done with that one.
    let later = [
        create_pool(7, 0x1000),
        create_buffer(7, 8, 0),
        attach(20, 8),
    ]
    .concat();
    rewriter.process(&later, vec![fd_of(&scratch_file(0x1000))], &region);
    assert_eq!(
        rewriter.lent(),
        vec![BLOB],
        "an unplaced buffer is not followed"
    );
    let (mut rewriter, region, _blob) = with_rewritten_pool();
    rewriter.process(&messages, vec![], &region);
    rewriter.process_events(&delete_id(5));
    let later = [create_buffer(4, 8, 0x1000), attach(21, 8), attach(20, 8)].concat();
    // Pool 4 was destroyed: id 4 makes nothing now, and buffer 8 is not followed.
    rewriter.process(&later, vec![], &region);
    assert_eq!(rewriter.lent(), vec![BLOB]);

    // A later buffer of the same surface, released.
    let (mut rewriter, region, _blob) = with_rewritten_pool();
    let messages = [
        create_buffer(4, 5, 0),
        create_buffer(4, 6, 0x1000),
        attach(20, 5),
        attach(21, 6),
        request(5, BUFFER_DESTROY, &[]),
        request(6, BUFFER_DESTROY, &[]),
        create_buffer(4, 7, 0x2000),
        attach(21, 7),
    ]
    .concat();
    rewriter.process(&messages, vec![], &region);
    assert_eq!(rewriter.lent().len(), 4, "pool, buffer 7, two orphans");
    rewriter.process_events(&[delete_id(5), delete_id(6), release(7)].concat());
    // Surface 21 is done with buffer 6; surface 20 still shows buffer 5.
    assert_eq!(rewriter.lent().len(), 3);
    // Destroying surface 20 ends what it showed.
    rewriter.process(&request(20, SURFACE_DESTROY, &[]), vec![], &region);
    assert_eq!(rewriter.lent().len(), 2, "pool and buffer 7");
}

#[test]
fn events_are_followed_across_chunks() {
    let messages = destroyed_while_shown();
    // Other events around the release, cut anywhere.
    let events = [event(20, 0, &[9]), release(5), event(1, 0, &[1, 2, 0])].concat();
    for cut in 0..events.len() {
        let (mut rewriter, region, _blob) = with_rewritten_pool();
        rewriter.process(&messages, vec![], &region);
        let (a, b) = events.split_at(cut);
        rewriter.process_events(a);
        rewriter.process_events(b);
        assert_eq!(rewriter.lent(), vec![], "cut {cut}");
    }
}

#[test]
fn a_broken_event_stream_keeps_everything_lent() {
    let (mut rewriter, region, _blob) = with_rewritten_pool();
    let messages = [create_buffer(4, 5, 0), attach(20, 5)].concat();
    rewriter.process(&messages, vec![], &region);
    let mut bad = release(5);
    wire::set_word(&mut bad, 4, 5 << 16);
    rewriter.process_events(&bad);
    assert!(rewriter.lost().is_some());
    let done = [
        request(5, BUFFER_DESTROY, &[]),
        request(4, POOL_DESTROY, &[]),
    ]
    .concat();
    let out = rewriter.process(&done, vec![], &region);
    assert_eq!(out.bytes, done);
    assert_eq!(rewriter.lent(), vec![BLOB, BLOB], "pool and buffer, frozen");
}

/// A small deterministic generator for the stream below.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

#[test]
fn any_stream_comes_out_whole_with_every_fd() {
    // Requests and events on small ids with arbitrary arguments, sometimes a broken header,
    // cut at arbitrary places: nothing panics, no byte or fd is lost or added, and only the
    // words a rewrite touches can differ.
    let mut region = FakeRegion::new(0x100000);
    let blobs: Vec<File> = (0..4).map(|i| region.place(i * 0x10000, 0x8000)).collect();
    let mut random = XorShift(0x9e3779b97f4a7c15);
    for _ in 0..300 {
        let mut rewriter = Rewriter::new();
        let mut stream = Client::with_shm().bytes;
        for _ in 0..random.below(40) {
            let object = 1 + random.below(12);
            let opcode = random.below(7) as u16;
            let args: Vec<u32> = (0..random.below(6))
                .map(|_| match random.below(3) {
                    0 => random.below(12),
                    1 => random.below(0x20000),
                    _ => random.next(),
                })
                .collect();
            stream.extend(request(object, opcode, &args));
            if random.below(60) == 0 {
                let at = stream.len() - 8 - 4 * args.len();
                wire::set_word(&mut stream, at + 4, random.next());
            }
        }
        let mut out = Vec::new();
        let mut fds_in = 0;
        let mut fds_out = 0;
        let mut at = 0;
        while at < stream.len() {
            let end = (at + 1 + random.below(64) as usize).min(stream.len());
            let fds: Vec<OwnedFd> = (0..random.below(3))
                .map(|_| fd_of(&blobs[random.below(4) as usize]))
                .collect();
            fds_in += fds.len();
            let chunk = rewriter.process(&stream[at..end], fds, &region);
            fds_out += chunk.fds.len();
            out.extend(chunk.bytes);
            let events: Vec<u8> = (0..random.below(3))
                .flat_map(|_| {
                    request(
                        random.below(12),
                        random.below(2) as u16,
                        &[random.below(12)],
                    )
                })
                .collect();
            rewriter.process_events(&events);
            at = end;
        }
        assert_eq!(out.len() + rewriter.held_back(), stream.len());
        out.extend(std::mem::take(&mut rewriter.partial));
        assert_eq!(out.len(), stream.len());
        assert_eq!(fds_in, fds_out);
        let _ = rewriter.lent();
    }
}

/// An object created with id 1, the display's, is never followed as that object: a message to
/// id 1 is the display's, whatever a client claimed, so that counting pools and rewriting them
/// read the stream alike. (A surface at id 1 made an attach, read as get_registry, hide wl_shm
/// from the count and not from the rewrite, which then took an fd the chunk did not have.)
#[test]
fn an_object_at_the_displays_id_is_the_display() {
    let region = FakeRegion::new(0x100000);
    let mut client = Client::with_shm();
    client
        .push(request(10, COMPOSITOR_CREATE_SURFACE, &[WL_DISPLAY]))
        .push(request(WL_DISPLAY, SURFACE_ATTACH, &[3, 0, 0]))
        .push(create_pool(4, 0x1000));
    let sent = client.bytes.clone();
    let out = Rewriter::new().process(&client.bytes, Vec::new(), &region);
    assert_eq!(out.bytes, sent);
    assert!(out.fds.is_empty());
    assert_eq!(out.pools_rewritten, 0);

    // With an fd: the message to id 1 made the registry id 3 (as the compositor reads it), so
    // no wl_shm is left to create the pool, and the fd passes unchanged.
    let mut region = FakeRegion::new(0x100000);
    let blob = region.place(0x10000, 0x1000);
    let out = Rewriter::new().process(&sent, vec![fd_of(&blob)], &region);
    assert_eq!(out.bytes, sent);
    assert_eq!(out.pools_rewritten, 0);
    assert_eq!(identity(out.fds[0].as_fd()), identity(blob.as_fd()));
}
