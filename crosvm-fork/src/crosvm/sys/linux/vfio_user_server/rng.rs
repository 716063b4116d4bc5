// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server rng`: virtio-rng.

use std::time::Duration;

use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "rng")]
/// virtio-rng, random bytes from the host, served from a sandbox
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
    #[argh(switch)]
    /// disable sandboxing: serve from this process, with all its privileges. Will nullify the
    /// --jail option if it was present.
    disable_sandbox: bool,
    #[argh(
        option,
        arg_name = "jail configuration",
        default = "Default::default()"
    )]
    /// set up the jail configuration.
    /// Possible key values:
    ///     pivot-root=/path - Path to empty directory to use for
    ///         sandbox pivot root.
    ///     seccomp-policy-dir=/path - Path to seccomp .policy files
    ///     seccomp-log-failures=(true|false) - Log seccomp filter
    ///         failures instead of them being fatal.
    jail: JailConfig,
}

/// The device needs nothing of the host once the socket is open: it reads random bytes with
/// getrandom.
pub(super) fn run(rng: RngOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(rng.socket, rng.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), rng.fd)?;
    let jail = sandbox::jail_unless_disabled(rng.disable_sandbox, &rng.jail, |config| {
        sandbox::device_jail(config, "rng_device_vfio_user")
    })?;
    sandbox::serve(socket, jail, &[], |fd| {
        let factory = vfio_user_backend::virtio_module_factory(device_virtio_rng::VirtioRngModule);
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}
