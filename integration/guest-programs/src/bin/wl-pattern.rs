// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Shows a known pattern on the host's Wayland compositor through virtio-wl, with no
//! sommelier: the ChromeOS virtio_wl driver's `/dev/wl0` ioctls and the Wayland requests a
//! fullscreen wl_shm client needs (`guest_programs::wayland`).
//!
//!     wl-pattern [FRAMES]
//!
//! The buffer is an allocation the device makes (VIRTWL_IOCTL_NEW_ALLOC), which the guest maps
//! through the device's shared memory BAR and hands to the compositor as a wl_shm pool. For
//! each frame (2 by default) it draws `guest_programs::pattern`, attaches, damages and commits,
//! waits until the compositor has handled the commit (wl_display.sync), prints
//! `@@SHOW frame=N width=W height=H` and reads a line from stdin before the next frame, so the
//! host can capture the screen in between. Reports `@@RESULT key=value` lines; exits non-zero on
//! any failure, with the reason on stderr.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::RawFd;
use std::time::Instant;

use guest_programs::pattern;
use guest_programs::wayland::Client;
use guest_programs::wayland::Result;
use guest_programs::wayland::Transport;

// The virtio_wl driver's interface (ChromeOS include/uapi/linux/virtwl.h).
const SEND_MAX_ALLOCS: usize = 28;
const NEW_CTX: u32 = 0;
const NEW_ALLOC: u32 = 1;
/// `struct virtwl_ioctl_new`: type, fd, flags, then a 36-byte union (an allocation's size first).
#[repr(C)]
#[derive(Default)]
struct IoctlNew {
    kind: u32,
    fd: i32,
    flags: u32,
    size: u32,
    rest: [u32; 8],
}
/// `struct virtwl_ioctl_txn` without its trailing data.
#[repr(C)]
struct TxnHeader {
    fds: [i32; SEND_MAX_ALLOCS],
    len: u32,
}

/// `_IOC(dir, 'w', nr, size)`.
const fn ioc(dir: u32, nr: u32, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u32) << 16) | ((b'w' as u32) << 8) | nr) as libc::c_ulong
}
const IOCTL_NEW: libc::c_ulong = ioc(3, 0x00, std::mem::size_of::<IoctlNew>());
const IOCTL_SEND: libc::c_ulong = ioc(2, 0x01, std::mem::size_of::<TxnHeader>());
const IOCTL_RECV: libc::c_ulong = ioc(1, 0x02, std::mem::size_of::<TxnHeader>());

fn os_error(what: &str) -> String {
    format!("{what}: {}", io::Error::last_os_error())
}

/// A new context (a connection to the host's compositor) or allocation of `size` bytes.
fn new(wl: &File, kind: u32, size: u32) -> Result<File> {
    let mut request = IoctlNew {
        kind,
        size,
        ..IoctlNew::default()
    };
    // SAFETY: `request` is a live, writable struct laid out as the driver's
    // `struct virtwl_ioctl_new`, whose size the request encodes.
    if unsafe { libc::ioctl(wl.as_raw_fd(), IOCTL_NEW, &mut request) } < 0 {
        return Err(os_error("VIRTWL_IOCTL_NEW"));
    }
    // SAFETY: the driver returned a new descriptor, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(request.fd) })
}

/// A transaction: the header, then up to `capacity` bytes of data.
fn transaction(fds: &[RawFd], data: &[u8], capacity: usize) -> Vec<u8> {
    let mut header = TxnHeader {
        fds: [-1; SEND_MAX_ALLOCS],
        len: data.len().max(capacity) as u32,
    };
    header.fds[..fds.len()].copy_from_slice(fds);
    let mut bytes = Vec::with_capacity(std::mem::size_of::<TxnHeader>() + capacity);
    for fd in header.fds {
        bytes.extend_from_slice(&fd.to_ne_bytes());
    }
    bytes.extend_from_slice(&header.len.to_ne_bytes());
    bytes.extend_from_slice(data);
    bytes.resize(std::mem::size_of::<TxnHeader>() + header.len as usize, 0);
    bytes
}

/// Wayland over a virtio-wl context; files are the descriptors of the driver's allocations.
struct VirtwlTransport {
    context: File,
}

impl Transport for VirtwlTransport {
    type File = RawFd;

    fn send(&mut self, data: &[u8], files: &[RawFd]) -> Result<()> {
        if files.len() > SEND_MAX_ALLOCS {
            return Err(format!(
                "{} files, more than a message carries",
                files.len()
            ));
        }
        let mut txn = transaction(files, data, 0);
        // SAFETY: `txn` holds a `struct virtwl_ioctl_txn` followed by its `len` bytes of data.
        if unsafe { libc::ioctl(self.context.as_raw_fd(), IOCTL_SEND, txn.as_mut_ptr()) } < 0 {
            return Err(os_error("VIRTWL_IOCTL_SEND"));
        }
        Ok(())
    }

    fn receive(&mut self, into: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: self.context.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout.as_millis() as i32) };
        if ready < 0 {
            return Err(os_error("poll"));
        }
        if ready == 0 {
            return Err("the compositor did not answer in time".to_string());
        }
        const CAPACITY: usize = 4096;
        let mut txn = transaction(&[], &[], CAPACITY);
        // SAFETY: `txn` holds a `struct virtwl_ioctl_txn` followed by room for its `len` bytes.
        if unsafe { libc::ioctl(self.context.as_raw_fd(), IOCTL_RECV, txn.as_mut_ptr()) } < 0 {
            return Err(os_error("VIRTWL_IOCTL_RECV"));
        }
        let header = std::mem::size_of::<TxnHeader>();
        let len = u32::from_ne_bytes(txn[header - 4..header].try_into().unwrap()) as usize;
        // Files from the compositor (a keymap) are not used here.
        for fd in txn[..header - 4].chunks(4) {
            let fd = i32::from_ne_bytes(fd.try_into().unwrap());
            if fd >= 0 {
                // SAFETY: the driver gave this process the descriptor; nothing else owns it.
                drop(unsafe { File::from_raw_fd(fd) });
            }
        }
        into.extend_from_slice(&txn[header..header + len.min(CAPACITY)]);
        Ok(())
    }
}

fn run(frames: u32) -> Result<()> {
    let wl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/wl0")
        .map_err(|e| format!("/dev/wl0: {e}"))?;
    let context = new(&wl, NEW_CTX, 0)?;
    let mut client = Client::new(VirtwlTransport { context }, (640, 480));
    let globals = client.fullscreen_surface("wl-pattern")?;
    println!("@@RESULT wayland.globals={globals}");
    let (width, height) = client.size;
    println!("@@RESULT wayland.size={width}x{height}");
    let stride = width * 4;
    let page = 4096;
    let size = (stride * height).div_ceil(page) * page;
    let buffer = new(&wl, NEW_ALLOC, size)?;
    // SAFETY: maps the allocation's `size` bytes; the mapping is only used through `pixels`,
    // which lives as long as `run`.
    let mapped = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            buffer.as_raw_fd(),
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(os_error("mmap of the allocation"));
    }
    // SAFETY: `mapped` is a fresh shared mapping of `size` bytes, aligned to a page, that nothing
    // else in this process uses.
    let pixels =
        unsafe { std::slice::from_raw_parts_mut(mapped.cast::<u32>(), (size / 4) as usize) };
    client.create_buffer(buffer.as_raw_fd(), size, 0, stride)?;
    let mut stdin = io::stdin().lock();
    for frame in 0..frames {
        for y in 0..height {
            for x in 0..width {
                pixels[(y * width + x) as usize] = pattern(frame, x, y, width, height);
            }
        }
        client.commit()?;
        client.roundtrip()?;
        println!("@@SHOW frame={frame} width={width} height={height}");
        let mut line = String::new();
        stdin
            .read_line(&mut line)
            .map_err(|e| format!("stdin: {e}"))?;
    }
    println!("@@RESULT frames.shown={frames}");
    Ok(())
}

fn main() {
    let frames = std::env::args()
        .nth(1)
        .map_or(2, |n| n.parse().expect("FRAMES is a number"));
    if let Err(e) = run(frames) {
        eprintln!("wl-pattern: {e}");
        std::process::exit(1);
    }
}
