// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The QEMU guest check of crosvm's virtio-wl, served by `crosvm device vfio-user-server`
//! built from upstream-patches/. It runs when CROSVM_BIN names that crosvm binary; otherwise
//! cargo reports it as ignored with the reason:
//!
//!     CROSVM_BIN=/path/to/crosvm cargo test -p integration --test crosvm_wl
//!
//! The guest's stock kernel has no virtio_wl driver (upstream Linux never took it; ChromeOS
//! kernels carry it), so the first check goes as far as a guest can without one: the function
//! and its shared memory BAR, as the VMM placed them. The second drives the device through the
//! ChromeOS driver built for the guest's kernel, given as VIRTIO_WL_MODULE (a `virtio_wl.ko`
//! whose vermagic matches that kernel); it is reported as ignored without it:
//!
//!     CROSVM_BIN=/path/to/crosvm VIRTIO_WL_MODULE=/path/to/virtio_wl.ko \
//!         cargo test -p integration --test crosvm_wl

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use integration::checks;
use integration::checks::require;
use integration::checks::skip;
use integration::checks::Checked;
use integration::guest::compositor::is_root;
use integration::guest::compositor::Weston;
use integration::guest::programs;
use integration::guest::shell_quote_path;
use integration::guest::Boot;
use integration::guest::GuestEnv;

mod crosvm_common;

use crosvm_common::boot_in;
use crosvm_common::crosvm_serving;
use crosvm_common::frames_on_screen;
use crosvm_common::no_seccomp_violation;
use crosvm_common::run_confined;
use crosvm_common::sandboxed;
use crosvm_common::with_device_report;
use crosvm_common::FramesShown;
use crosvm_common::Jail;
use crosvm_common::Scratch;

/// virtio-wl, from a sandbox that shows its compositor's directory and its relays' own: the
/// guest finds the function, a virtio device of type 63 (wl) with no driver, and its 4 GiB
/// shared memory BAR.
fn crosvm_wl_is_served_with_its_shared_memory_bar() -> Checked {
    let crosvm = crosvm_serving("wl")?;
    let scratch = Scratch::new("crosvm-wl")?;
    // A compositor's socket that nobody reaches: without a guest driver, no context is made.
    let compositor = scratch.0.join("wayland-0");
    let _listener = UnixListener::bind(&compositor)?;
    let run = boot_in(
        "crosvm-wl",
        format!(
            "{} device vfio-user-server wl --socket {{socket}} --wayland-sock {} {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&compositor),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-wl.sh")),
        &[],
        "",
        Some(&Jail {
            shown: vec![scratch.0.clone()],
            relay_dir: Some("wl"),
            ..Jail::empty()
        }),
    )?;
    assert_eq!(run.result("pci.device")?, "0x107f");
    assert_eq!(run.result("wl.virtio_device")?, "0x003f");
    assert_eq!(run.result("wl.driver")?, "none");
    assert_eq!(run.result("wl.bar2_bytes")?, (1u64 << 32).to_string());
    Ok(())
}

/// The ChromeOS virtio_wl driver for the guest's kernel, from VIRTIO_WL_MODULE.
fn virtio_wl_module() -> Result<PathBuf, checks::NotPassed> {
    let Some(path) = std::env::var_os("VIRTIO_WL_MODULE") else {
        return Err(skip(
            "needs VIRTIO_WL_MODULE: the ChromeOS virtio_wl driver built for the guest's kernel \
             (upstream Linux has none)",
        ));
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(skip(format!(
            "VIRTIO_WL_MODULE {} is no file",
            path.display()
        )));
    }
    Ok(path)
}

/// virtio-wl driven by a guest with the ChromeOS driver: a program of ours makes a context to
/// weston (headless, on the host), allocates its buffer through the device, draws a pattern in
/// it through the shared memory BAR and shows it fullscreen; weston's screenshot must be the
/// pattern, for two frames that differ at every pixel.
fn crosvm_wl_frames_reach_weston() -> Checked {
    let crosvm = crosvm_serving("wl")?;
    let module = virtio_wl_module()?;
    require(
        is_root(),
        "the compositors run under chroot, which needs root",
    )?;
    let env = GuestEnv::prepare()?;
    let name = "crosvm-wl-weston";
    let (width, height) = (640, 480);
    let compositor = Arc::new(Weston::start(&env, name, width, height)?);
    let program = programs::build(&env, "wl-pattern")?;
    let shown = FramesShown::default();
    let responder = frames_on_screen(compositor.clone(), shown.clone());
    let socket = compositor.socket();
    let boot = Boot {
        name: name.to_string(),
        servers: vec![format!(
            "{} device vfio-user-server wl --socket {{socket}} --wayland-sock {} {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&socket),
            sandboxed()?
        )],
        script: "insmod /lib/virtio_wl.ko || exit 1\n\
                 for _ in $(seq 50); do [ -e /dev/wl0 ] && break; sleep 0.1; done\n\
                 /bin/wl-pattern 2\n"
            .to_string(),
        echo_prefix: Some(format!("[{name}] ")),
        timeout: Duration::from_secs(300),
        files: vec![
            ("/bin/wl-pattern".to_string(), program),
            ("/lib/virtio_wl.ko".to_string(), module),
        ],
        responder: Some(responder),
        ..Boot::default()
    };
    let jail = Jail {
        shown: vec![socket
            .parent()
            .ok_or_else(|| skip("the compositor's socket has no directory"))?
            .to_path_buf()],
        relay_dir: Some("wl"),
        ..Jail::empty()
    };
    let run = run_confined(&env, &boot, &jail)?;
    run.check()?;
    assert_eq!(run.result("wayland.size")?, format!("{width}x{height}"));
    assert_eq!(run.result("frames.shown")?, "2");
    let shown = shown.lock().unwrap();
    assert_eq!(*shown, vec![Ok(0), Ok(1)], "frames on weston's screen");
    Ok(())
}

fn main() {
    checks::run_around(
        no_seccomp_violation,
        &[
            (
                "crosvm_wl_is_served_with_its_shared_memory_bar",
                crosvm_wl_is_served_with_its_shared_memory_bar,
            ),
            (
                "crosvm_wl_frames_reach_weston",
                crosvm_wl_frames_reach_weston,
            ),
        ],
    );
}
