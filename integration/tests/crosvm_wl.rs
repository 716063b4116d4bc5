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
//! kernels carry it), so the check goes as far as a guest can without one: the function and
//! its shared memory BAR, as the VMM placed them.

use std::os::unix::net::UnixListener;

use integration::checks;
use integration::checks::Checked;
use integration::guest::shell_quote_path;

mod crosvm_common;

use crosvm_common::boot_in;
use crosvm_common::crosvm_serving;
use crosvm_common::no_seccomp_violation;
use crosvm_common::sandboxed;
use crosvm_common::with_device_report;
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

fn main() {
    checks::run_around(
        no_seccomp_violation,
        &[(
            "crosvm_wl_is_served_with_its_shared_memory_bar",
            crosvm_wl_is_served_with_its_shared_memory_bar,
        )],
    );
}
