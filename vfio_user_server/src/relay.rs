// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A unix socket relay that keeps a peer's view of [`ShadowMemory`] files current.
//!
//! A device that hands files placed in a shadowed region to a peer (virtio-gpu's cross-domain
//! context passing blobs to a Wayland compositor) connects to the relay instead of the peer.
//! Each connection gets its own connection to the peer; bytes and fds pass unchanged both ways.
//! Before anything from the device reaches the peer, the files it carries are recorded as
//! exported and every exported file gets the region's current contents, so the peer reads what
//! the guest wrote before the message that tells it to look (a surface commit).
//!
//! With a [`StreamFilter`], which knows the protocol on the socket, the relay can do without the
//! copies: the filter may give the peer the region's own file in place of a placed file (see
//! [`crate::lease`]), so the peer reads the guest's bytes where the guest writes them. Only the
//! files the peer actually gets are exported. Before a lent range is freed, the relay follows
//! everything already sent on the connection; if the peer may still read the range, the
//! connection ends, and the relay waits for the peer to close its side (which a Wayland
//! compositor does after destroying the client's buffers).

use std::borrow::Cow;
use std::io;
use std::io::IoSlice;
use std::net::Shutdown;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::thread::JoinHandle;
use std::time::Duration;
use std::time::Instant;

use crate::lease::overlap;
use crate::lease::Borrower;
use crate::lease::Placement;
use crate::lease::SharedRegion;
use crate::lease::GIVE_BACK_TIMEOUT;
use crate::shadow::ShadowMemory;
use crate::sys;

/// Stream sockets deliver at most this much per read; a Wayland message is at most 4 KiB.
const CHUNK: usize = 64 * 1024;

/// At most this many receives are followed before a lent range is given back, so that a device
/// that never stops sending cannot hold an unmap forever.
const MAX_SETTLE_RECEIVES: usize = 4096;

/// Rewrites the stream from the device to the peer, for a protocol the relay itself does not
/// know. One filter follows one connection.
pub trait StreamFilter: Send {
    /// Takes one receive from the device (its bytes and the fds that came with them) and returns
    /// what to send the peer. The filter may hold bytes back (an incomplete message) and may give
    /// the peer the region's file in place of a placed file's, after [`SharedRegion::lend`].
    fn to_peer(&mut self, bytes: &[u8], fds: Vec<OwnedFd>, region: &dyn SharedRegion) -> Filtered;
    /// Sees what the peer sends the device, which passes unchanged.
    fn seen_from_peer(&mut self, bytes: &[u8]);
    /// The ranges of the region the peer may still read through the region's file, given what
    /// has passed both ways so far.
    fn lent(&self) -> Vec<Range<u64>>;
}

/// What a [`StreamFilter`] sends on.
#[derive(Debug, Default)]
pub struct Filtered {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// How many of `fds` are the region's file in place of a placed file.
    pub lent_files: usize,
}

/// Makes the filter of each new connection.
pub type FilterFactory = Arc<dyn Fn() -> Box<dyn StreamFilter> + Send + Sync>;

/// Relays connections to `listen_path` to `peer_path`; stops and removes its socket on drop.
pub struct SocketRelay {
    path: PathBuf,
    stop: Arc<OwnedFd>,
    acceptor: Option<JoinHandle<()>>,
}

impl SocketRelay {
    /// Binds `listen_path` (which must not exist) and relays each connection to it to a new
    /// connection to `peer_path`, copying `shadow`'s exported files out before each message
    /// toward the peer.
    pub fn start(
        listen_path: &Path,
        peer_path: &Path,
        shadow: Arc<ShadowMemory>,
    ) -> io::Result<SocketRelay> {
        SocketRelay::start_filtered(listen_path, peer_path, shadow, None)
    }

    /// As [`SocketRelay::start`], with the stream toward the peer going through a filter made by
    /// `filters` for each connection, when there is one.
    pub fn start_filtered(
        listen_path: &Path,
        peer_path: &Path,
        shadow: Arc<ShadowMemory>,
        filters: Option<FilterFactory>,
    ) -> io::Result<SocketRelay> {
        let listener = UnixListener::bind(listen_path)?;
        let stop = Arc::new(sys::eventfd(false)?);
        let peer_path = peer_path.to_path_buf();
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("socket-relay".into())
                .spawn(move || accept_loop(listener, peer_path, shadow, filters, stop))?
        };
        Ok(SocketRelay {
            path: listen_path.to_path_buf(),
            stop,
            acceptor: Some(acceptor),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketRelay {
    fn drop(&mut self) {
        // The eventfd stays signalled: every relay thread sees it and ends.
        if let Err(e) = sys::eventfd_signal(self.stop.as_fd()) {
            log::error!("socket relay: cannot signal the stop: {e}");
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: UnixListener,
    peer_path: PathBuf,
    shadow: Arc<ShadowMemory>,
    filters: Option<FilterFactory>,
    stop: Arc<OwnedFd>,
) {
    loop {
        match sys::wait_any_readable(&[listener.as_fd(), stop.as_fd()], -1) {
            Ok(ready) if ready[1] => return,
            Ok(ready) if ready[0] => {}
            Ok(_) => continue,
            Err(e) => {
                log::error!("socket relay: waiting for connections: {e}");
                return;
            }
        }
        let device_side = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                log::warn!("socket relay: accept: {e}");
                continue;
            }
        };
        // A peer that is not there closes the device's connection, as a failed connect would.
        let peer_side = match UnixStream::connect(&peer_path) {
            Ok(stream) => stream,
            Err(e) => {
                log::warn!("socket relay: connecting to {}: {e}", peer_path.display());
                continue;
            }
        };
        let filter = filters.as_ref().map(|make| make());
        let lease = match filter.is_some().then(PeerLease::new).transpose() {
            Ok(lease) => lease,
            Err(e) => {
                log::error!("socket relay: cannot create a lease: {e}");
                continue;
            }
        };
        if let Some(lease) = &lease {
            let weak: std::sync::Weak<PeerLease> = Arc::downgrade(lease);
            shadow.add_borrower(weak);
        }
        let mut connection = RelayConnection {
            device_side,
            peer_side,
            shadow: shadow.clone(),
            stop: stop.clone(),
            filter,
            lease,
            held_fds: Vec::new(),
            stats: Stats::default(),
        };
        let spawned = std::thread::Builder::new()
            .name("socket-relay-conn".into())
            .spawn(move || connection.run());
        if let Err(e) = spawned {
            log::error!("socket relay: cannot start a connection thread: {e}");
        }
    }
}

/// What passed over one connection.
#[derive(Default)]
struct Stats {
    messages: u64,
    copied_bytes: u64,
    copy_time: Duration,
    lent_files: u64,
}

/// Why following the stream stopped.
enum Ended {
    /// Either side closed, or the relay stops.
    Closed,
    /// The device freed a range the peer may still read: the connection was ended.
    TakenBack,
}

struct RelayConnection {
    device_side: UnixStream,
    peer_side: UnixStream,
    shadow: Arc<ShadowMemory>,
    stop: Arc<OwnedFd>,
    filter: Option<Box<dyn StreamFilter>>,
    /// With a filter: what the peer was lent.
    lease: Option<Arc<PeerLease>>,
    /// fds received with bytes the filter held back, for the next bytes sent.
    held_fds: Vec<OwnedFd>,
    stats: Stats,
}

impl RelayConnection {
    fn run(&mut self) {
        let result = self.relay_until_closed();
        if let Some(lease) = &self.lease {
            lease.end();
        }
        let stats = &self.stats;
        log::info!(
            "socket relay: connection closed after {} messages to the peer; copied out {} bytes \
             in {:.1} ms; lent the region's file {} times",
            stats.messages,
            stats.copied_bytes,
            stats.copy_time.as_secs_f64() * 1000.0,
            stats.lent_files,
        );
        match result {
            Ok(Ended::Closed) => {}
            Ok(Ended::TakenBack) => log::warn!(
                "socket relay: ended a connection whose peer could still read a range the device \
                 freed"
            ),
            Err(e) => log::warn!("socket relay: connection ended: {e}"),
        }
    }

    fn relay_until_closed(&mut self) -> io::Result<Ended> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let wake = self.lease.as_ref().map(|lease| lease.wake.as_fd());
            let mut fds = vec![
                self.device_side.as_fd(),
                self.peer_side.as_fd(),
                self.stop.as_fd(),
            ];
            fds.extend(wake);
            let ready = sys::wait_any_readable(&fds, -1)?;
            if ready[2] {
                return Ok(Ended::Closed);
            }
            if ready[0] && !self.device_to_peer(&mut buf)? {
                return Ok(Ended::Closed);
            }
            if ready[1] && !self.peer_to_device(&mut buf)? {
                return Ok(Ended::Closed);
            }
            if ready.get(3) == Some(&true) {
                if let Some(ended) = self.settle(&mut buf)? {
                    return Ok(ended);
                }
            }
        }
    }

    /// Relays one receive from the device; false once the device closed.
    fn device_to_peer(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let received = sys::recv_with_fds(self.device_side.as_fd(), buf)?;
        if received.len == 0 && received.fds.is_empty() {
            return Ok(false);
        }
        let (bytes, fds) = match (&mut self.filter, &self.lease) {
            (Some(filter), Some(lease)) => {
                let region = LeasedRegion {
                    shadow: &self.shadow,
                    lease,
                };
                let filtered = filter.to_peer(&buf[..received.len], received.fds, &region);
                lease.set_lent(filter.lent());
                self.stats.lent_files += filtered.lent_files as u64;
                (Cow::Owned(filtered.bytes), filtered.fds)
            }
            _ => (Cow::Borrowed(&buf[..received.len]), received.fds),
        };
        self.held_fds.extend(fds);
        // A stream socket drops fds sent with no bytes: they wait for the next bytes.
        if bytes.is_empty() {
            return Ok(true);
        }
        let fds = std::mem::take(&mut self.held_fds);
        for fd in &fds {
            self.shadow.note_exported(fd.as_fd());
        }
        let start = Instant::now();
        self.stats.copied_bytes += self.shadow.copy_out_exported();
        self.stats.copy_time += start.elapsed();
        self.stats.messages += 1;
        forward(self.peer_side.as_fd(), &bytes, &fds)?;
        Ok(true)
    }

    /// Relays one receive from the peer; false once the peer closed.
    fn peer_to_device(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let received = sys::recv_with_fds(self.peer_side.as_fd(), buf)?;
        if received.len == 0 && received.fds.is_empty() {
            return Ok(false);
        }
        if let (Some(filter), Some(lease)) = (&mut self.filter, &self.lease) {
            filter.seen_from_peer(&buf[..received.len]);
            lease.set_lent(filter.lent());
        }
        forward(
            self.device_side.as_fd(),
            &buf[..received.len],
            &received.fds,
        )?;
        Ok(true)
    }

    /// Answers the lease's requests to give ranges back. Everything the device sent before it
    /// freed a range (a client's destroy requests) is already in the socket, and so is what the
    /// peer sent before (its releases): both are followed first. A range the peer may then still
    /// read ends the connection.
    fn settle(&mut self, buf: &mut [u8]) -> io::Result<Option<Ended>> {
        let Some(lease) = self.lease.clone() else {
            return Ok(None);
        };
        let _ = sys::eventfd_read(lease.wake.as_fd());
        let ticket = lease.state().asked;
        for _ in 0..MAX_SETTLE_RECEIVES {
            let ready =
                sys::wait_any_readable(&[self.device_side.as_fd(), self.peer_side.as_fd()], 0)?;
            if !ready[0] && !ready[1] {
                break;
            }
            if ready[0] && !self.device_to_peer(buf)? {
                return Ok(Some(Ended::Closed));
            }
            if ready[1] && !self.peer_to_device(buf)? {
                return Ok(Some(Ended::Closed));
            }
        }
        let mut state = lease.state();
        // Requests made since the drain began wait for the next one: what their device sent
        // before them may not have been followed yet (their wakeup is still pending).
        let (wanted, later) = std::mem::take(&mut state.wanted_back)
            .into_iter()
            .partition::<Vec<_>, _>(|(asked, _)| *asked <= ticket);
        state.wanted_back = later;
        let still_read = wanted
            .iter()
            .map(|(_, range)| range)
            .find(|w| state.lent.iter().any(|l| overlap(w, l)))
            .cloned();
        if let Some(range) = still_read {
            drop(state);
            log::warn!(
                "socket relay: the device freed {:#x}..{:#x} while the peer may still read it; \
                 ending the connection",
                range.start,
                range.end
            );
            self.end_with_peer(Instant::now() + GIVE_BACK_TIMEOUT);
            return Ok(Some(Ended::TakenBack));
        }
        state.answered = ticket;
        lease.changed.notify_all();
        Ok(None)
    }

    /// Ends both sides, and waits until `deadline` for the peer to close its side: it has let go
    /// of what it was lent by then.
    fn end_with_peer(&mut self, deadline: Instant) {
        let _ = self.device_side.shutdown(Shutdown::Both);
        let _ = self.peer_side.shutdown(Shutdown::Write);
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match sys::wait_readable(self.peer_side.as_fd(), left.as_millis() as i32) {
                Ok(true) => match sys::recv_with_fds(self.peer_side.as_fd(), &mut buf) {
                    Ok(received) if received.len == 0 && received.fds.is_empty() => return,
                    Ok(_) => {}
                    Err(_) => return,
                },
                Ok(false) => {
                    log::warn!("socket relay: the peer did not close within the deadline");
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// The region, as one connection's filter sees it: what it lends is recorded in its lease.
struct LeasedRegion<'a> {
    shadow: &'a ShadowMemory,
    lease: &'a PeerLease,
}

impl SharedRegion for LeasedRegion<'_> {
    fn lend(&self, fd: BorrowedFd) -> Option<Placement> {
        self.shadow.lend(fd, self.lease)
    }

    fn region_fd(&self) -> io::Result<OwnedFd> {
        self.shadow.region_fd()
    }
}

/// What one connection's peer was lent, and the unmaps waiting for it back.
struct PeerLease {
    state: Mutex<LeaseState>,
    changed: Condvar,
    /// Wakes the connection's thread when a range is wanted back.
    wake: OwnedFd,
}

#[derive(Default)]
struct LeaseState {
    /// What the peer may read: the filter's view after the last receive, and what was lent
    /// since.
    lent: Vec<Range<u64>>,
    /// Ranges wanted back, with the number of their request.
    wanted_back: Vec<(u64, Range<u64>)>,
    /// Requests to give back made, and answered.
    asked: u64,
    answered: u64,
    ended: bool,
}

impl PeerLease {
    fn new() -> io::Result<Arc<PeerLease>> {
        Ok(Arc::new(PeerLease {
            state: Mutex::new(LeaseState::default()),
            changed: Condvar::new(),
            wake: sys::eventfd(true)?,
        }))
    }

    fn state(&self) -> MutexGuard<'_, LeaseState> {
        // Plain ranges and counters: nothing a panic can leave half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_lent(&self, lent: Vec<Range<u64>>) {
        self.state().lent = lent;
    }

    /// The connection is over: the peer has nothing more to give back.
    fn end(&self) {
        let mut state = self.state();
        state.ended = true;
        state.lent.clear();
        self.changed.notify_all();
    }
}

impl Borrower for PeerLease {
    fn may_read(&self, range: &Range<u64>) -> bool {
        let state = self.state();
        !state.ended && state.lent.iter().any(|l| overlap(l, range))
    }

    fn lent(&self, range: Range<u64>) {
        self.state().lent.push(range);
    }

    fn give_back(&self, range: &Range<u64>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        if state.ended {
            return true;
        }
        state.asked += 1;
        let ticket = state.asked;
        state.wanted_back.push((ticket, range.clone()));
        if let Err(e) = sys::eventfd_signal(self.wake.as_fd()) {
            log::error!("socket relay: cannot wake a connection: {e}");
            return false;
        }
        while !state.ended && state.answered < ticket {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Sends all of `data` with `fds` on the first piece.
fn forward(socket: BorrowedFd, mut data: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let fds: Vec<BorrowedFd> = fds.iter().map(|fd| fd.as_fd()).collect();
    let mut first = true;
    while !data.is_empty() || first {
        let pass = if first { &fds[..] } else { &[] };
        let sent = sys::send_with_fds(socket, &[IoSlice::new(data)], pass)?;
        if sent == 0 && !data.is_empty() {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        data = &data[sent..];
        first = false;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::path::PathBuf;

    use super::*;
    use crate::sys::MappedFile;

    /// A compositor stand-in: accepts one connection and, for each message, reports the bytes
    /// and what the files that came with it held at that moment.
    fn fake_peer(path: &Path) -> std::sync::mpsc::Receiver<(Vec<u8>, Vec<Vec<u8>>)> {
        let listener = UnixListener::bind(path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; CHUNK];
            let mut held: Vec<File> = Vec::new();
            loop {
                let received = sys::recv_with_fds(stream.as_fd(), &mut buf).unwrap();
                if received.len == 0 {
                    return;
                }
                held.extend(received.fds.into_iter().map(File::from));
                let contents = held
                    .iter()
                    .map(|f| {
                        let mut bytes = vec![0u8; 16];
                        f.read_exact_at(&mut bytes, 0).unwrap();
                        bytes
                    })
                    .collect();
                tx.send((buf[..received.len].to_vec(), contents)).unwrap();
                // An answer with an fd of its own, as a compositor's keymap.
                let keymap = sys::memfd(c"keymap", 16).unwrap();
                keymap.write_all_at(b"keymap from peer", 0).unwrap();
                forward(stream.as_fd(), b"ack", &[OwnedFd::from(keymap)]).unwrap();
            }
        });
        rx
    }

    #[test]
    fn the_peer_reads_what_the_guest_wrote_before_each_message() {
        let dir = std::env::temp_dir().join(format!("relay-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let peer_path = dir.join("peer");
        let relay_path = dir.join("relay");
        let _ = std::fs::remove_file(&peer_path);
        let _ = std::fs::remove_file(&relay_path);
        let messages = fake_peer(&peer_path);

        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap("test", 1 << 20).unwrap();
        let guest = MappedFile::map(mmap.fd.as_fd(), 0, 1 << 20, true, true).unwrap();
        let blob = sys::memfd(c"blob", 4096).unwrap();
        shadow.map(0x10000, blob.as_fd(), 0, 4096, true).unwrap();
        let relay = SocketRelay::start(&relay_path, &peer_path, shadow.clone()).unwrap();

        let device = UnixStream::connect(relay.path()).unwrap();
        let guest_write = |text: &[u8]| {
            // SAFETY: 0x10000 + text.len() is inside the 1 MiB view.
            unsafe { sys::copy_guest(text.as_ptr(), guest.as_ptr().add(0x10000), text.len()) }
        };
        let mut reply = vec![0u8; 64];

        guest_write(b"first frame.....");
        forward(device.as_fd(), b"create_pool", &[OwnedFd::from(blob)]).unwrap();
        let (bytes, contents) = messages.recv().unwrap();
        assert_eq!(bytes, b"create_pool");
        assert_eq!(contents, vec![b"first frame.....".to_vec()]);
        let answer = sys::recv_with_fds(device.as_fd(), &mut reply).unwrap();
        assert_eq!(&reply[..answer.len], b"ack");
        let keymap = File::from(answer.fds.into_iter().next().unwrap());
        let mut key = [0u8; 16];
        keymap.read_exact_at(&mut key, 0).unwrap();
        assert_eq!(&key, b"keymap from peer");

        // No fd this time: the file the peer already holds is brought up to date anyway.
        guest_write(b"second frame....");
        forward(device.as_fd(), b"commit", &[]).unwrap();
        let (bytes, contents) = messages.recv().unwrap();
        assert_eq!(bytes, b"commit");
        assert_eq!(contents, vec![b"second frame....".to_vec()]);

        drop(device);
        drop(relay);
        assert!(!relay_path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_peer_closes_the_device_connection() {
        let dir = std::env::temp_dir().join(format!("relay-missing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let relay_path = dir.join("relay");
        let _ = std::fs::remove_file(&relay_path);
        let relay =
            SocketRelay::start(&relay_path, &dir.join("nobody"), ShadowMemory::new()).unwrap();
        let device = UnixStream::connect(relay.path()).unwrap();
        let mut buf = [0u8; 8];
        let received = sys::recv_with_fds(device.as_fd(), &mut buf).unwrap();
        assert_eq!(received.len, 0, "EOF");
        drop(relay);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A filter for a toy protocol: every fd of a placed file is lent, and stays lent until the
    /// device sends "done".
    #[derive(Default)]
    struct LendEverything {
        lent: Vec<Range<u64>>,
    }

    impl StreamFilter for LendEverything {
        fn to_peer(
            &mut self,
            bytes: &[u8],
            fds: Vec<OwnedFd>,
            region: &dyn SharedRegion,
        ) -> Filtered {
            if bytes.windows(4).any(|w| w == b"done") {
                self.lent.clear();
            }
            let mut lent_files = 0;
            let fds = fds
                .into_iter()
                .map(|fd| match region.lend(fd.as_fd()) {
                    Some(placement) => {
                        self.lent.push(placement.range());
                        lent_files += 1;
                        region.region_fd().unwrap()
                    }
                    None => fd,
                })
                .collect();
            Filtered {
                bytes: bytes.to_vec(),
                fds,
                lent_files,
            }
        }

        fn seen_from_peer(&mut self, _bytes: &[u8]) {}

        fn lent(&self) -> Vec<Range<u64>> {
            self.lent.clone()
        }
    }

    /// A peer that hands each message's bytes and files to the test, answers "ack", and reports
    /// when the relay closes its side.
    fn keeping_peer(path: &Path) -> std::sync::mpsc::Receiver<Option<(Vec<u8>, Vec<File>)>> {
        let listener = UnixListener::bind(path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; CHUNK];
            loop {
                let received = sys::recv_with_fds(stream.as_fd(), &mut buf).unwrap();
                if received.len == 0 {
                    let _ = tx.send(None);
                    return;
                }
                let files = received.fds.into_iter().map(File::from).collect();
                let _ = tx.send(Some((buf[..received.len].to_vec(), files)));
                forward(stream.as_fd(), b"ack", &[]).unwrap();
            }
        });
        rx
    }

    struct Lending {
        dir: PathBuf,
        shadow: Arc<ShadowMemory>,
        guest: MappedFile,
        _relay: SocketRelay,
        peer: std::sync::mpsc::Receiver<Option<(Vec<u8>, Vec<File>)>>,
        device: UnixStream,
    }

    const AT: u64 = 0x10000;

    /// A relay lending everything, a blob placed at AT, and a device connected.
    fn lending(name: &str) -> (Lending, File) {
        let dir = std::env::temp_dir().join(format!("relay-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = keeping_peer(&dir.join("peer"));
        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap("test", 1 << 20).unwrap();
        let guest = MappedFile::map(mmap.fd.as_fd(), 0, 1 << 20, true, true).unwrap();
        let blob = sys::memfd(c"blob", 4096).unwrap();
        blob.write_all_at(b"copied in", 0).unwrap();
        shadow.map(AT, blob.as_fd(), 0, 4096, true).unwrap();
        let filters: FilterFactory = Arc::new(|| Box::new(LendEverything::default()));
        let relay = SocketRelay::start_filtered(
            &dir.join("relay"),
            &dir.join("peer"),
            shadow.clone(),
            Some(filters),
        )
        .unwrap();
        let device = UnixStream::connect(relay.path()).unwrap();
        let lending = Lending {
            dir,
            shadow,
            guest,
            _relay: relay,
            peer,
            device,
        };
        (lending, blob)
    }

    impl Lending {
        fn send(&self, bytes: &[u8], fds: &[OwnedFd]) -> Option<(Vec<u8>, Vec<File>)> {
            forward(self.device.as_fd(), bytes, fds).unwrap();
            let got = self.peer.recv().unwrap();
            let mut ack = [0u8; 8];
            let answer = sys::recv_with_fds(self.device.as_fd(), &mut ack).unwrap();
            assert_eq!(&ack[..answer.len], b"ack");
            got
        }

        fn guest_write(&self, offset: u64, text: &[u8]) {
            // SAFETY: the tests write a few bytes well inside the 1 MiB view.
            unsafe {
                sys::copy_guest(
                    text.as_ptr(),
                    self.guest.as_ptr().add(offset as usize),
                    text.len(),
                )
            };
        }
    }

    impl Drop for Lending {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn same_file(a: BorrowedFd, b: BorrowedFd) -> bool {
        sys::file_identity(a).unwrap() == sys::file_identity(b).unwrap()
    }

    #[test]
    fn a_lent_file_is_read_in_place_and_never_copied() {
        let (lending, blob) = lending("lent");
        let (bytes, files) = lending
            .send(b"pool", &[blob.as_fd().try_clone_to_owned().unwrap()])
            .unwrap();
        assert_eq!(bytes, b"pool");
        let region = lending.shadow.region_fd().unwrap();
        assert!(same_file(files[0].as_fd(), region.as_fd()));
        lending.guest_write(AT, b"frame one");
        lending.send(b"commit", &[]).unwrap();
        let mut seen = [0u8; 9];
        files[0].read_exact_at(&mut seen, AT).unwrap();
        assert_eq!(
            &seen, b"frame one",
            "the peer reads the guest's bytes in place"
        );
        blob.read_exact_at(&mut seen, 0).unwrap();
        assert_eq!(
            &seen, b"copied in",
            "the blob the peer never got is not copied out"
        );
    }

    #[test]
    fn freeing_a_lent_range_ends_the_connection_first() {
        let (lending, blob) = lending("taken-back");
        lending
            .send(b"pool", &[blob.as_fd().try_clone_to_owned().unwrap()])
            .unwrap();
        lending.shadow.unmap(AT).unwrap();
        // By the time unmap returns, the peer has seen the end and closed its side.
        assert!(lending.peer.try_recv().unwrap().is_none());
        let mut buf = [0u8; 8];
        let received = sys::recv_with_fds(lending.device.as_fd(), &mut buf).unwrap();
        assert_eq!(received.len, 0, "the device's connection is closed too");
    }

    #[test]
    fn a_range_given_back_before_the_unmap_keeps_the_connection() {
        let (lending, blob) = lending("given-back");
        lending
            .send(b"pool", &[blob.as_fd().try_clone_to_owned().unwrap()])
            .unwrap();
        // "done" sits in the socket when the unmap asks: the relay follows it first.
        forward(lending.device.as_fd(), b"done", &[]).unwrap();
        lending.shadow.unmap(AT).unwrap();
        let (bytes, _) = lending.peer.recv().unwrap().unwrap();
        assert_eq!(bytes, b"done");
        let mut ack = [0u8; 8];
        sys::recv_with_fds(lending.device.as_fd(), &mut ack).unwrap();
        assert_eq!(lending.send(b"still here", &[]).unwrap().0, b"still here");
    }

    #[test]
    fn a_file_placed_twice_is_not_lent() {
        let (lending, blob) = lending("not-lent");
        // The same file at a second offset: which one the peer meant cannot be told.
        lending
            .shadow
            .map(0x20000, blob.as_fd(), 0, 4096, true)
            .unwrap();
        let (_, files) = lending
            .send(b"pool", &[blob.as_fd().try_clone_to_owned().unwrap()])
            .unwrap();
        assert!(same_file(files[0].as_fd(), blob.as_fd()));
        // Sent as itself, it is exported and copied out before each message.
        lending.guest_write(AT, b"guest wrote");
        lending.guest_write(0x20000, b"guest wrote");
        lending.send(b"commit", &[]).unwrap();
        let mut seen = [0u8; 11];
        files[0].read_exact_at(&mut seen, 0).unwrap();
        assert_eq!(&seen, b"guest wrote");
        // Unmapping it does not end the connection.
        lending.shadow.unmap(AT).unwrap();
        assert_eq!(lending.send(b"still here", &[]).unwrap().0, b"still here");
    }
}
