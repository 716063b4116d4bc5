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

use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::shadow::ShadowMemory;
use crate::sys;

/// Stream sockets deliver at most this much per read; a Wayland message is at most 4 KiB.
const CHUNK: usize = 64 * 1024;

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
        let listener = UnixListener::bind(listen_path)?;
        let stop = Arc::new(sys::eventfd(false)?);
        let peer_path = peer_path.to_path_buf();
        let acceptor = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("socket-relay".into())
                .spawn(move || accept_loop(listener, peer_path, shadow, stop))?
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
        let shadow = shadow.clone();
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("socket-relay-conn".into())
            .spawn(move || {
                if let Err(e) = relay(&device_side, &peer_side, &shadow, &stop) {
                    log::warn!("socket relay: connection ended: {e}");
                }
            });
        if let Err(e) = spawned {
            log::error!("socket relay: cannot start a connection thread: {e}");
        }
    }
}

/// Relays until either side closes or the relay stops.
fn relay(
    device_side: &UnixStream,
    peer_side: &UnixStream,
    shadow: &ShadowMemory,
    stop: &OwnedFd,
) -> io::Result<()> {
    let mut stats = CopyStats::default();
    let result = relay_until_closed(device_side, peer_side, shadow, stop, &mut stats);
    log::info!(
        "socket relay: connection closed after {} messages to the peer; copied out {} MiB in \
         {:.1} ms",
        stats.messages,
        stats.bytes >> 20,
        stats.time.as_secs_f64() * 1000.0
    );
    result
}

/// What the copies before messages to the peer cost, over one connection.
#[derive(Default)]
struct CopyStats {
    messages: u64,
    bytes: u64,
    time: std::time::Duration,
}

fn relay_until_closed(
    device_side: &UnixStream,
    peer_side: &UnixStream,
    shadow: &ShadowMemory,
    stop: &OwnedFd,
    stats: &mut CopyStats,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let ready =
            sys::wait_any_readable(&[device_side.as_fd(), peer_side.as_fd(), stop.as_fd()], -1)?;
        if ready[2] {
            return Ok(());
        }
        if ready[0] {
            let received = sys::recv_with_fds(device_side.as_fd(), &mut buf)?;
            if received.len == 0 && received.fds.is_empty() {
                return Ok(());
            }
            for fd in &received.fds {
                shadow.note_exported(fd.as_fd());
            }
            let start = std::time::Instant::now();
            stats.bytes += shadow.copy_out_exported();
            stats.time += start.elapsed();
            stats.messages += 1;
            forward(peer_side.as_fd(), &buf[..received.len], &received.fds)?;
        }
        if ready[1] {
            let received = sys::recv_with_fds(peer_side.as_fd(), &mut buf)?;
            if received.len == 0 && received.fds.is_empty() {
                return Ok(());
            }
            forward(device_side.as_fd(), &buf[..received.len], &received.fds)?;
        }
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
}
