// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server block`: virtio-block on a disk image, served from a sandbox.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::block::DiskOption;
use devices::virtio::BlockAsync;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;
use crate::crosvm::config::from_key_values;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "block")]
/// virtio-block, on a disk image, served from a sandbox
pub(super) struct BlockOptions {
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
    /// the disk image and its options, as for `crosvm run --block`: e.g. ro, sparse=false,
    /// direct, lock=false, block-size=N, id=ID, async-executor=KIND, packed-queue
    file: DiskOption,
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

/// The image is opened (and locked) here, before any jail: the sandboxed server sees no host
/// file. Each client's device gets a duplicate of it, through crosvm's `/proc/self/fd/N`
/// convention, and the lock of the one open file. An image that names other files (a qcow2
/// backing file, a composite disk's parts) needs those too, which the sandbox does not offer:
/// `--disable-sandbox` serves it.
pub(super) fn run(block: BlockOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(block.socket, block.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), block.fd)?;
    let mut disk = block.file;
    let name = disk.path.clone();
    let image = sandbox::open_image(&mut disk.path, disk.read_only, &mut disk.lock)?;
    let jail = sandbox::jail_unless_disabled(block.disable_sandbox, &block.jail, |config| {
        sandbox::device_jail(config, "block_device_vfio_user")
    })?;
    sandbox::serve(socket, jail, &[image.as_raw_fd()], move |fd| {
        // A fresh device for every client, on its own duplicate of the image.
        let factory = vfio_user_backend::virtio_pci_factory(move || block_device(&disk, &name));
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

/// crosvm's virtio-block on `disk` (the image `name`), as `crosvm run --block` builds it.
/// Without a control tube: there is no `crosvm disk` command to resize it.
fn block_device(disk: &DiskOption, name: &Path) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let image = disk
        .open()
        .with_context(|| format!("opening {}", name.display()))?;
    let block = BlockAsync::new(
        base_features(ProtectionType::Unprotected),
        image,
        disk,
        None,
        None,
        None,
    )
    .context("failed to create the block device")?;
    Ok(Box::new(block))
}
