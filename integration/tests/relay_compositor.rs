// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The relay with real compositors, and no crosvm: a Wayland client of ours on the host talks to
//! weston, or to cage (wlroots), through `SocketRelay`, its wl_shm pool a file placed in a
//! `ShadowMemory` region, and draws through its own mapping of the region, as a guest draws
//! through the BAR. Copying, the compositor shows each frame only if the relay copied it out
//! before the commit; with the wl_shm rewrite, only if it reads the region itself.
//! Needs root (the compositors run under chroot in the guest tree); reported as ignored otherwise.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::RawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use anyhow::Result;
use guest_programs::wayland::Client;
use guest_programs::wayland::Transport;
use integration::checks;
use integration::checks::require;
use integration::checks::Checked;
use integration::checks::NotPassed;
use integration::guest::compositor::is_root;
use integration::guest::compositor::Cage;
use integration::guest::compositor::Compositor;
use integration::guest::compositor::Weston;
use integration::guest::GuestEnv;
use integration::raw_client::RawClient;
use vfio_user_server::sys;
use vfio_user_server::sys::MappedFile;
use vfio_user_server::FilterFactory;
use vfio_user_server::ShadowMemory;
use vfio_user_server::SocketRelay;
use vfio_user_server::StreamFilter;
use wl_shm_rewrite::Rewriter;

/// A Wayland connection over a unix socket; files are fds.
struct Socket(RawClient);

impl Transport for Socket {
    type File = RawFd;

    fn send(&mut self, data: &[u8], files: &[RawFd]) -> Result<(), String> {
        // SAFETY: the test keeps every file it passes open for the whole test.
        let fds: Vec<BorrowedFd> = files
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect();
        self.0.send_raw(data, &fds).map_err(|e| e.to_string())
    }

    fn receive(&mut self, into: &mut Vec<u8>, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if !sys::wait_readable(self.0.stream.as_fd(), left.as_millis() as i32)
            .map_err(|e| e.to_string())?
        {
            return Err("timed out waiting for the compositor".into());
        }
        let mut buf = vec![0u8; 4096];
        let received =
            sys::recv_with_fds(self.0.stream.as_fd(), &mut buf).map_err(|e| e.to_string())?;
        if received.len == 0 {
            return Err("the compositor closed the connection".into());
        }
        into.extend_from_slice(&buf[..received.len]);
        Ok(())
    }
}

/// How the relay gets frames to the compositor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Copied out of the region into the buffer's file before each message.
    Copy,
    /// The compositor gets the region's own file (wl_shm_rewrite): nothing to copy.
    ZeroCopy,
}

const REGION: u64 = 4 << 20;
const AT: u64 = 0x10000;
const WIDTH: u32 = 320;
const HEIGHT: u32 = 240;
const STRIDE: u32 = WIDTH * 4;

/// A region as a client maps it, a relay to a compositor in front of it, and a buffer's file
/// placed in it at AT.
struct Scene<C: Compositor> {
    compositor: C,
    /// The region's name, as its memfd shows in a process's maps.
    name: String,
    shadow: Arc<ShadowMemory>,
    guest_view: MappedFile,
    buffer: File,
    size: u64,
    relay: SocketRelay,
    dir: PathBuf,
}

/// Which compositor to start.
type Start<C> = fn(&GuestEnv, &str, u32, u32) -> Result<C>;

impl<C: Compositor> Scene<C> {
    fn new(start: Start<C>, name: &str, mode: Mode) -> Result<Scene<C>, NotPassed> {
        require(
            is_root(),
            "the compositors run under chroot, which needs root",
        )?;
        let env = GuestEnv::prepare()?;
        let compositor = start(&env, name, WIDTH, HEIGHT)?;
        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap(name, REGION)?;
        let guest_view = MappedFile::map(mmap.fd.as_fd(), 0, REGION as usize, true, true)?;
        let size = u64::from(STRIDE * HEIGHT).div_ceil(4096) * 4096;
        let buffer = sys::memfd(c"buffer", size)?;
        shadow.map(AT, buffer.as_fd(), 0, size, true)?;
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let relay_path = dir.join("relay");
        let _ = std::fs::remove_file(&relay_path);
        let filters: Option<FilterFactory> = match mode {
            Mode::Copy => None,
            Mode::ZeroCopy => Some(Arc::new(|| {
                Box::new(Rewriter::new()) as Box<dyn StreamFilter>
            })),
        };
        let relay = SocketRelay::start_filtered(
            &relay_path,
            &compositor.socket(),
            shadow.clone(),
            filters,
        )?;
        Ok(Scene {
            compositor,
            name: name.to_string(),
            shadow,
            guest_view,
            buffer,
            size,
            relay,
            dir,
        })
    }

    /// A fullscreen client through the relay, its buffer the file placed at AT.
    fn client(&self) -> Result<Client<Socket>> {
        let socket = Socket(RawClient::from_stream(UnixStream::connect(
            self.relay.path(),
        )?));
        let mut client = Client::new(socket, (WIDTH, HEIGHT));
        client
            .fullscreen_surface(&self.name)
            .map_err(|e| anyhow!(e))?;
        assert_eq!(
            client.size,
            (WIDTH, HEIGHT),
            "the compositor makes it fullscreen"
        );
        client
            .create_buffer(self.buffer.as_raw_fd(), self.size as u32, 0, STRIDE)
            .map_err(|e| anyhow!(e))?;
        Ok(client)
    }

    /// Draws frame `frame` through the region at AT, as the guest does through the BAR: the
    /// buffer's file itself is only written by the relay's copy-out, if at all.
    fn draw(&self, frame: u32) {
        let pixels: Vec<u8> = (0..HEIGHT)
            .flat_map(|y| {
                (0..WIDTH).flat_map(move |x| {
                    guest_programs::pattern(frame, x, y, WIDTH, HEIGHT).to_le_bytes()
                })
            })
            .collect();
        // SAFETY: AT + the frame's bytes (<= size) lie inside the REGION-byte view.
        unsafe {
            sys::copy_guest(
                pixels.as_ptr(),
                self.guest_view.as_ptr().add(AT as usize),
                pixels.len(),
            )
        };
    }

    fn show(&self, client: &mut Client<Socket>, frame: u32) -> Result<()> {
        self.draw(frame);
        client.commit().map_err(|e| anyhow!(e))?;
        client.roundtrip().map_err(|e| anyhow!(e))?;
        self.compositor
            .wait_for_frame(WIDTH, HEIGHT, |x, y| {
                guest_programs::pattern(frame, x, y, WIDTH, HEIGHT)
            })
            .map_err(|diff| anyhow!("frame {frame} never on screen: {diff}"))
    }

    /// Whether the compositor has the region's file mapped.
    fn compositor_maps_region(&self) -> Result<bool> {
        let pid = peer_pid(&UnixStream::connect(self.compositor.socket())?)?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
        Ok(maps.contains(&format!("/memfd:{} ", self.name)))
    }
}

impl<C: Compositor> Drop for Scene<C> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process at the other end of a unix socket.
fn peer_pid(stream: &UnixStream) -> Result<libc::pid_t> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `credentials` is a writable ucred and `len` its size, as SO_PEERCRED expects.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(credentials.pid)
}

/// What the buffer's own file holds at its start.
fn file_start(file: &File) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; 64];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

fn frames_reach<C: Compositor>(start: Start<C>, name: &str, mode: Mode) -> Checked {
    let scene = Scene::new(start, name, mode)?;
    let mut client = scene.client()?;
    for frame in 0..2 {
        scene.show(&mut client, frame)?;
    }
    let copied = file_start(&scene.buffer)? != vec![0u8; 64];
    match mode {
        Mode::Copy => {
            assert!(copied, "the frames were copied into the buffer's file");
            assert!(!scene.compositor_maps_region()?);
        }
        Mode::ZeroCopy => {
            assert!(!copied, "nothing is copied into the buffer's file");
            assert!(
                scene.compositor_maps_region()?,
                "the compositor reads the region"
            );
        }
    }
    Ok(())
}

/// The guest frees a blob the compositor still shows (its client neither destroyed the buffer
/// nor got it back): the connection ends before the unmap returns, the compositor lets go of the
/// region, and what the guest places there next reaches no surface of the old client; the
/// compositor serves the next one.
fn a_shown_blob_the_guest_frees_ends_its_connection<C: Compositor>(
    start: Start<C>,
    name: &str,
) -> Checked {
    let scene = Scene::new(start, name, Mode::ZeroCopy)?;
    let mut client = scene.client()?;
    scene.show(&mut client, 0)?;
    assert!(scene.compositor_maps_region()?);
    scene.shadow.unmap(AT)?;
    assert!(
        !scene.compositor_maps_region()?,
        "the compositor dropped the region's file before the unmap returned"
    );
    let error = client.roundtrip().expect_err("the connection is over");
    assert!(
        error.contains("closed") || error.contains("Broken pipe"),
        "{error}"
    );
    // The range is the guest's again: a new blob there, a new client.
    scene
        .shadow
        .map(AT, scene.buffer.as_fd(), 0, scene.size, true)?;
    let mut next = scene.client()?;
    scene.show(&mut next, 1)?;
    Ok(())
}

fn main() {
    checks::run(&[
        ("weston_copied_frames", || {
            frames_reach(Weston::start, "relay-weston-copy", Mode::Copy)
        }),
        ("weston_lent_frames", || {
            frames_reach(Weston::start, "relay-weston-lent", Mode::ZeroCopy)
        }),
        ("weston_freed_blob_ends_its_connection", || {
            a_shown_blob_the_guest_frees_ends_its_connection(Weston::start, "relay-weston-freed")
        }),
        ("cage_copied_frames", || {
            frames_reach(Cage::start, "relay-cage-copy", Mode::Copy)
        }),
        ("cage_lent_frames", || {
            frames_reach(Cage::start, "relay-cage-lent", Mode::ZeroCopy)
        }),
        ("cage_freed_blob_ends_its_connection", || {
            a_shown_blob_the_guest_frees_ends_its_connection(Cage::start, "relay-cage-freed")
        }),
    ]);
}
