// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server vsock`: virtio-vsock on the host's vhost-vsock.

use std::path::PathBuf;

use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::vsock::VsockConfig;
use hypervisor::ProtectionType;

use super::super::device_helpers::VirtioDeviceBuilder;
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
}

pub(super) fn run(vsock: VsockOptions) -> anyhow::Result<()> {
    let path = socket_path(vsock.socket, vsock.socket_path)?;
    let config = VsockConfig::new(vsock.cid, Some(&vsock.vhost_socket));
    // vhost-vsock is opened again for each client's device (the kernel allows one
    // owner of a CID at a time; the previous client's device is gone by then).
    let factory = vfio_user_backend::virtio_pci_factory(move || {
        (&config).create_virtio_device(ProtectionType::Unprotected)
    });
    vfio_user_backend::run_server(path.as_deref(), vsock.fd, factory)
}
