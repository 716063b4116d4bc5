// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Starts the reference server as a child process on a fresh socket, and helpers shared by the
//! end-to-end tests.

#![allow(dead_code)]

use std::fs::File;
use std::io::BufRead;
use std::io::BufReader;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use vfio_user_server::sys;

pub struct ServerProcess {
    pub child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
    /// What the server wrote to stderr after saying it listens (warnings and up).
    log: Arc<Mutex<String>>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl ServerProcess {
    pub fn start() -> ServerProcess {
        ServerProcess::start_with(env!("CARGO_BIN_EXE_reference-server"), &[])
    }

    /// Starts `program ARGS --socket PATH`, a server that says "listening" on stderr when ready.
    pub fn start_with(program: &str, args: &[&str]) -> ServerProcess {
        let dir = std::env::temp_dir().join(format!(
            "vfio-user-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("server.sock");
        let mut child = Command::new(program)
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("reference-server starts");
        // The server says it listens once the socket accepts connections (the socket file
        // appears before listen()); the rest of its output is passed through.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "server said {line:?}");
        let log = Arc::new(Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        ServerProcess {
            child,
            socket,
            dir,
            log,
        }
    }

    /// Waits up to 5 s for the server's stderr to contain `text`, and returns it all.
    pub fn log_containing(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.contains(text) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Number of fds the server process holds open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// Waits until the server holds `expected` fds, returning the last count seen.
    pub fn wait_for_fds(&self, expected: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.open_fds();
            if now == expected || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the server process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw client connected to `server` that has negotiated VERSION.
pub fn connect(server: &ServerProcess) -> integration::raw_client::RawClient {
    let mut client = integration::raw_client::RawClient::connect(&server.socket).unwrap();
    let reply = client.negotiate().unwrap();
    assert!(!reply.header.is_error(), "{reply:?}");
    client
}

/// The connection still works: a DEVICE_GET_INFO round trip succeeds.
pub fn assert_alive(client: &mut integration::raw_client::RawClient) {
    let reply = client.device_info().unwrap();
    assert!(!reply.header.is_error(), "{reply:?}");
    assert_eq!(reply.body.len(), 16);
}

/// The server is still up and serves a new client.
pub fn assert_serving(server: &mut ServerProcess) {
    assert!(server.alive());
    let mut client = connect(server);
    assert_alive(&mut client);
}

/// Guest RAM for a test: a memfd the client maps and shares with the server.
pub struct GuestRam {
    pub file: File,
    pub size: u64,
}

impl GuestRam {
    pub fn new(size: u64) -> GuestRam {
        GuestRam {
            file: sys::memfd(c"guest-ram", size).unwrap(),
            size,
        }
    }

    pub fn fd(&self) -> OwnedFd {
        self.file.as_fd().try_clone_to_owned().unwrap()
    }

    pub fn write(&self, offset: u64, data: &[u8]) {
        self.file.write_all_at(data, offset).unwrap();
    }

    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset).unwrap();
        buf
    }
}

/// A pattern that differs at every offset and between seeds.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Waits up to 5 s for an eventfd to be signalled and returns its count (0 on timeout).
pub fn wait_event(fd: &OwnedFd) -> u64 {
    if sys::wait_readable(fd.as_fd(), 5000).unwrap() {
        sys::eventfd_read(fd.as_fd()).unwrap()
    } else {
        0
    }
}

/// Reads an eventfd without waiting (0: not signalled).
pub fn poll_event(fd: &OwnedFd) -> u64 {
    sys::eventfd_read(fd.as_fd()).unwrap()
}
