// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server vsock`: virtio-vsock on the host's vhost-vsock.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::vsock::VsockConfig;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::super::device_helpers::VirtioDeviceBuilder;
use super::sandbox;
use super::sandbox::ServerSocket;
use super::sandbox::Shows;
use super::socket_path;

#[derive(FromArgs)]
#[argh(subcommand, name = "vsock")]
/// virtio-vsock on the host kernel's vhost-vsock, as for the vhost-user `crosvm device vsock`
pub(super) struct VsockOptions {
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
    #[argh(option, arg_name = "INT")]
    /// the vsock context id of the guest
    cid: u64,
    #[argh(
        option,
        arg_name = "PATH",
        default = "PathBuf::from(\"/dev/vhost-vsock\")"
    )]
    /// path to the vhost-vsock device
    vhost_socket: PathBuf,
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

/// vhost-vsock is opened again for each client's device: a vhost device has one owner for its
/// life, and the previous client's device, gone by then, owned the last one. So the sandbox
/// shows the vhost-vsock node, and nothing else of the host.
pub(super) fn run(vsock: VsockOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(vsock.socket, vsock.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), vsock.fd)?;
    let vhost = vsock
        .vhost_socket
        .canonicalize()
        .with_context(|| format!("{}", vsock.vhost_socket.display()))?;
    let config = VsockConfig::new(vsock.cid, Some(&vhost));
    let jail = sandbox::jail_unless_disabled(vsock.disable_sandbox, &vsock.jail, |config| {
        let shows = Shows {
            binds: vec![(vhost, true)],
            ..Shows::default()
        };
        sandbox::device_jail_showing(config, "vhost_vsock_device_vfio_user", &shows)
    })?;
    sandbox::serve(socket, jail, &[], move |fd| {
        let factory = vfio_user_backend::virtio_pci_factory(move || {
            (&config).create_virtio_device(ProtectionType::Unprotected)
        });
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}
