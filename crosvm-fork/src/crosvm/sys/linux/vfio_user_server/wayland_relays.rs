// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Relays between a served device and the Wayland compositors of its `--wayland-sock` sockets
//! (virtio-gpu's cross-domain context, virtio-wl), through which the files the device places in
//! its host-visible BAR reach the compositors: wl_shm pools of placed files are pointed at the
//! BAR's own file (zero copy), and every other placed file is brought up to date before each
//! message.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use devices::vfio_user_backend::vfio_user_server::FilterFactory;
use devices::vfio_user_backend::vfio_user_server::ShadowMemory;
use devices::vfio_user_backend::vfio_user_server::SocketRelay;
use devices::vfio_user_backend::vfio_user_server::StreamFilter;

/// The private directory the relays listen in, made before the sandbox (which shows it) and
/// removed, with whatever a killed server left in it, when serving ends.
pub(super) struct RelayDir {
    pub(super) path: PathBuf,
}

impl RelayDir {
    pub(super) fn create(device: &str) -> anyhow::Result<RelayDir> {
        let path =
            std::env::temp_dir().join(format!("crosvm-vfio-user-{device}-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(RelayDir { path })
    }
}

impl RelayDir {
    /// What the sandbox shows: this directory, writable, and the sockets' directories, read-only
    /// (each connection opens its socket again, as in crosvm's own gpu and wl jails).
    pub(super) fn binds(
        &self,
        sockets: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<Vec<(PathBuf, bool)>> {
        let mut binds = vec![(self.path.clone(), true)];
        for path in sockets.values() {
            let dir = path
                .parent()
                .with_context(|| format!("wayland socket {} has no parent", path.display()))?;
            binds.push((dir.to_path_buf(), false));
        }
        binds.sort();
        binds.dedup();
        Ok(binds)
    }
}

/// The `--wayland-sock` sockets by name, absolute, so that the sandbox finds them where it shows
/// them.
pub(super) fn absolute_sockets(
    sockets: Vec<(String, PathBuf)>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut absolute = BTreeMap::new();
    for (name, path) in sockets {
        let path = std::path::absolute(&path)
            .with_context(|| format!("wayland socket {}", path.display()))?;
        absolute.insert(name, path);
    }
    Ok(absolute)
}

impl Drop for RelayDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One relay per `--wayland-sock` socket, listening in the relay directory.
pub(super) struct WaylandRelays {
    relays: BTreeMap<String, SocketRelay>,
}

impl WaylandRelays {
    pub(super) fn start(
        dir: &Path,
        sockets: &BTreeMap<String, PathBuf>,
        shadow: &Arc<ShadowMemory>,
        zero_copy: bool,
    ) -> anyhow::Result<WaylandRelays> {
        let filters: Option<FilterFactory> = zero_copy.then(|| {
            Arc::new(|| Box::new(wl_shm_rewrite::Rewriter::new()) as Box<dyn StreamFilter>)
                as FilterFactory
        });
        let mut relays = BTreeMap::new();
        for (i, (name, peer)) in sockets.iter().enumerate() {
            let listen = dir.join(format!("wayland-{i}"));
            let relay = SocketRelay::start_filtered(&listen, peer, shadow.clone(), filters.clone())
                .with_context(|| format!("relaying {} at {}", peer.display(), listen.display()))?;
            relays.insert(name.clone(), relay);
        }
        Ok(WaylandRelays { relays })
    }

    pub(super) fn channels(&self) -> BTreeMap<String, PathBuf> {
        self.relays
            .iter()
            .map(|(name, relay)| (name.clone(), relay.path().to_path_buf()))
            .collect()
    }
}
