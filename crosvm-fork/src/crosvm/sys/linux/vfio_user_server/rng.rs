// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server rng`: virtio-rng.

use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;

use super::socket_path;

#[derive(FromArgs)]
#[argh(subcommand, name = "rng")]
/// virtio-rng, random bytes from the host
pub(super) struct RngOptions {
    #[argh(option, arg_name = "PATH", hidden_help)]
    /// same as --socket-path
    socket: Option<String>,
    #[argh(option, arg_name = "PATH")]
    /// path of the unix socket to listen on.
    /// If this flag is set, --fd cannot be specified.
    socket_path: Option<String>,
    #[argh(option, arg_name = "FD")]
    /// inherited unix socket: a listening one (serves one client after another) or a connected
    /// one (serves that client). If this flag is set, --socket-path cannot be specified.
    fd: Option<RawDescriptor>,
}

pub(super) fn run(rng: RngOptions) -> anyhow::Result<()> {
    let path = socket_path(rng.socket, rng.socket_path)?;
    let factory = vfio_user_backend::virtio_module_factory(device_virtio_rng::VirtioRngModule);
    vfio_user_backend::run_server(path.as_deref(), rng.fd, factory)
}
