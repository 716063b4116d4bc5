// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The shadow copy and the relay with a real compositor, and no crosvm: a Wayland client of ours
//! on the host talks to weston through `SocketRelay`, its wl_shm pool a file placed in a
//! `ShadowMemory` region, and draws through its own mapping of the region, as a guest draws
//! through the BAR. weston shows each frame only if the relay copied it out before the commit.
//! Needs root (weston runs under chroot in the guest tree); reported as ignored otherwise.

use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::anyhow;
use anyhow::Result;
use guest_programs::wayland::Client;
use guest_programs::wayland::Transport;
use integration::checks;
use integration::checks::require;
use integration::checks::Checked;
use integration::guest::compositor::is_root;
use integration::guest::compositor::Weston;
use integration::guest::GuestEnv;
use integration::raw_client::RawClient;
use vfio_user_server::sys;
use vfio_user_server::sys::MappedFile;
use vfio_user_server::ShadowMemory;
use vfio_user_server::SocketRelay;

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

fn shadowed_frames_reach_weston_through_the_relay() -> Checked {
    require(is_root(), "weston runs under chroot, which needs root")?;
    let env = GuestEnv::prepare()?;
    let (width, height) = (320u32, 240u32);
    let weston = Weston::start(&env, "relay-weston", width, height)?;

    // The region as a client maps it, and the buffer's file placed in it.
    const REGION: u64 = 4 << 20;
    const AT: u64 = 0x10000;
    let shadow = ShadowMemory::new();
    let mmap = shadow.region_mmap("relay-weston", REGION)?;
    let guest_view = MappedFile::map(mmap.fd.as_fd(), 0, REGION as usize, true, true)?;
    let stride = width * 4;
    let size = u64::from(stride * height).div_ceil(4096) * 4096;
    let buffer = sys::memfd(c"buffer", size)?;
    shadow.map(AT, buffer.as_fd(), 0, size, true)?;

    let dir = std::env::temp_dir().join(format!("relay-weston-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let relay_path = dir.join("relay");
    let _ = std::fs::remove_file(&relay_path);
    let relay = SocketRelay::start(&relay_path, &weston.socket(), shadow.clone())?;
    let result = (|| -> Result<()> {
        let socket = Socket(RawClient::from_stream(UnixStream::connect(relay.path())?));
        let mut client = Client::new(socket, (width, height));
        client
            .fullscreen_surface("relay-weston")
            .map_err(|e| anyhow!(e))?;
        assert_eq!(
            client.size,
            (width, height),
            "kiosk shell makes it fullscreen"
        );
        client
            .create_buffer(buffer.as_raw_fd(), size as u32, 0, stride)
            .map_err(|e| anyhow!(e))?;
        for frame in 0..2 {
            // Drawn through the region, as the guest does: the file itself is only written by the
            // relay's copy-out.
            let pixels: Vec<u8> = (0..height)
                .flat_map(|y| {
                    (0..width).flat_map(move |x| {
                        guest_programs::pattern(frame, x, y, width, height).to_le_bytes()
                    })
                })
                .collect();
            // SAFETY: AT + the frame's bytes (<= size) lie inside the REGION-byte view.
            unsafe {
                sys::copy_guest(
                    pixels.as_ptr(),
                    guest_view.as_ptr().add(AT as usize),
                    pixels.len(),
                )
            };
            client.commit().map_err(|e| anyhow!(e))?;
            client.roundtrip().map_err(|e| anyhow!(e))?;
            weston
                .wait_for_frame(width, height, |x, y| {
                    guest_programs::pattern(frame, x, y, width, height)
                })
                .map_err(|diff| anyhow!("frame {frame} never on screen: {diff}"))?;
        }
        Ok(())
    })();
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(result?)
}

fn main() {
    checks::run(&[(
        "shadowed_frames_reach_weston_through_the_relay",
        shadowed_frames_reach_weston_through_the_relay,
    )]);
}
