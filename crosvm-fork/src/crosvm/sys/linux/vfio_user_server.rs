// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server DEVICE`: serves one of crosvm's devices to another VMM over
//! vfio-user (QEMU's `vfio-user-pci`, cloud-hypervisor's `--user-device`).

use anyhow::bail;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;

#[derive(FromArgs)]
#[argh(subcommand, name = "vfio-user-server")]
/// Serve a crosvm device over vfio-user, to QEMU (vfio-user-pci) or cloud-hypervisor
/// (--user-device); every client gets a freshly built device
pub struct Options {
    #[argh(subcommand)]
    device: DeviceOptions,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum DeviceOptions {
    Rng(RngOptions),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "rng")]
/// virtio-rng, random bytes from the host
struct RngOptions {
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

/// `--socket` is a synonym of `--socket-path`, as for crosvm's vhost-user backends.
fn socket_path(
    socket: Option<String>,
    socket_path: Option<String>,
) -> anyhow::Result<Option<String>> {
    match (socket, socket_path) {
        (Some(_), Some(_)) => bail!("--socket and --socket-path cannot both be given"),
        (socket, socket_path) => Ok(socket_path.or(socket)),
    }
}

pub fn run_vfio_user_server(options: Options) -> anyhow::Result<()> {
    match options.device {
        DeviceOptions::Rng(rng) => {
            let path = socket_path(rng.socket, rng.socket_path)?;
            let factory =
                vfio_user_backend::virtio_module_factory(device_virtio_rng::VirtioRngModule);
            vfio_user_backend::run_server(path.as_deref(), rng.fd, factory)
        }
    }
}
