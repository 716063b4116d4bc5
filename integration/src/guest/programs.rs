// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Builds the `guest-programs` binaries for the guest: statically linked (the initramfs has no
//! libc), in a target directory of their own so that the flag does not rebuild the workspace,
//! and so that the build never waits on the lock of a `cargo test` running it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::GuestEnv;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds guest program `name` (a binary of `integration/guest-programs`) and returns its path.
/// Cargo's own freshness checks make repeated calls cheap.
pub fn build(env: &GuestEnv, name: &str) -> Result<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace directory")?
        .to_path_buf();
    let target_dir = env.dir.join("programs");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "guest-programs",
            "--bin",
            name,
            "--target",
            TARGET,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // With --target, these flags reach the guest program and not build scripts.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .context("running cargo to build a guest program")?;
    if !status.success() {
        bail!("building guest program {name}: cargo {status}");
    }
    let path = target_dir.join(TARGET).join("release").join(name);
    if !path.exists() {
        bail!("cargo built no {}", path.display());
    }
    Ok(path)
}
