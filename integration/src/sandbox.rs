// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What the checks of crosvm's served devices need to run them sandboxed, as they are by default.

use std::path::PathBuf;

use anyhow::bail;
use anyhow::Result;

/// The devices crosvm serves from a sandbox, which take `--jail` and `--disable-sandbox`.
pub const SANDBOXED_DEVICES: &[&str] = &["rng", "block", "console"];

/// An empty directory for the sandbox's root (`--jail pivot-root=`): crosvm's default,
/// /var/empty, is not on every host.
pub fn empty_root() -> Result<PathBuf> {
    let root = std::env::temp_dir().join("vfio-user-empty-root");
    std::fs::create_dir_all(&root)?;
    if std::fs::read_dir(&root)?.next().is_some() {
        bail!("{} is not empty", root.display());
    }
    Ok(root)
}

/// The arguments that run `device` in its sandbox with an empty root of ours, if it has one.
pub fn jail_args(device: &str) -> Result<Vec<String>> {
    if !SANDBOXED_DEVICES.contains(&device) {
        return Ok(Vec::new());
    }
    Ok(vec![
        "--jail".to_string(),
        format!("pivot-root={}", empty_root()?.display()),
    ])
}
