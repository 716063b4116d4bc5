// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server block`: virtio-block on a disk image, opened again for each
//! client.

use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::block::DiskOption;
use devices::virtio::BlockAsync;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;

use super::socket_path;
use crate::crosvm::config::from_key_values;

#[derive(FromArgs)]
#[argh(subcommand, name = "block")]
/// virtio-block, on a disk image
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
}

pub(super) fn run(block: BlockOptions) -> anyhow::Result<()> {
    let path = socket_path(block.socket, block.socket_path)?;
    let disk = block.file;
    // Opened again for every client, each of which gets a fresh device.
    let factory = vfio_user_backend::virtio_pci_factory(move || block_device(&disk));
    vfio_user_backend::run_server(path.as_deref(), block.fd, factory)
}

/// crosvm's virtio-block on `disk`, as `crosvm run --block` builds it. Without a control tube:
/// there is no `crosvm disk` command to resize it.
fn block_device(disk: &DiskOption) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let image = disk
        .open()
        .with_context(|| format!("opening {}", disk.path.display()))?;
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
