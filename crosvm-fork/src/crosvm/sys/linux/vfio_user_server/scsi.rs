// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server scsi`: a virtio-scsi controller with one disk image per
//! logical unit, served from a sandbox.

use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::scsi::ScsiOption;
use devices::virtio::ScsiController;
use devices::virtio::ScsiDiskConfig;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;
use crate::crosvm::config::from_key_values;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "scsi")]
/// virtio-scsi, a logical unit per disk image, served from a sandbox
pub(super) struct ScsiOptions {
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
    #[argh(
        option,
        arg_name = "PATH[,key=value[,key=value[,...]]]",
        from_str_fn(from_key_values)
    )]
    /// a disk image, as for `crosvm run --scsi-block`: one logical unit each time it is given,
    /// in order. Keys: ro, lock=BOOL (default true), block-size=N (default 512)
    scsi_block: Vec<ScsiOption>,
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

/// As for block: the images are opened (and locked) here, before any jail, and each client's
/// controller gets duplicates of them through crosvm's `/proc/self/fd/N` convention.
pub(super) fn run(scsi: ScsiOptions, poll: Duration) -> anyhow::Result<()> {
    if scsi.scsi_block.is_empty() {
        bail!("no disk: give --scsi-block PATH at least once");
    }
    let path = socket_path(scsi.socket, scsi.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), scsi.fd)?;
    let mut disks = scsi.scsi_block;
    let mut images = Vec::with_capacity(disks.len());
    for disk in &mut disks {
        images.push(sandbox::open_image(
            &mut disk.path,
            disk.read_only,
            &mut disk.lock,
        )?);
    }
    let keep: Vec<RawDescriptor> = images.iter().map(|image| image.as_raw_fd()).collect();
    let jail = sandbox::jail_unless_disabled(scsi.disable_sandbox, &scsi.jail, |config| {
        sandbox::device_jail(config, "scsi_device_vfio_user")
    })?;
    sandbox::serve(socket, jail, &keep, move |fd| {
        // `images` must stay open for the `/proc/self/fd/N` names to hold.
        let _images = images;
        let factory = vfio_user_backend::virtio_pci_factory(move || scsi_controller(&disks));
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

/// crosvm's virtio-scsi controller on `disks`, as `crosvm run --scsi-block` builds it.
fn scsi_controller(disks: &[ScsiOption]) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let disks = disks
        .iter()
        .map(|disk| {
            Ok(ScsiDiskConfig {
                file: disk.open()?,
                block_size: disk.block_size,
                read_only: disk.read_only,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let controller = ScsiController::new(base_features(ProtectionType::Unprotected), disks)
        .context("failed to create the scsi controller")?;
    Ok(Box::new(controller))
}
