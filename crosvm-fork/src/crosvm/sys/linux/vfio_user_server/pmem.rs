// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server pmem`: virtio-pmem on a disk image, served from a sandbox.
//!
//! crosvm's VM maps a pmem image at a guest address of its choosing; a served device has no
//! such address, as the client places its BARs. So the device offers the image as its virtio
//! shared memory region (`MemSlotConfig::SharedMemoryRegion`, which the Linux driver takes as
//! VIRTIO_PMEM_F_SHMEM_REGION), and that BAR is the image file itself: the client maps the file,
//! the guest's stores reach its page cache with no copy, and a flush from the guest is an
//! fdatasync of the image here.

use std::fs::File;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::linux::MemfdSeals;
use base::open_file_or_duplicate;
use base::sys::SharedMemoryLinux;
use base::RawDescriptor;
use base::SharedMemory;
use base::Tube;
use devices::vfio_user_backend;
use devices::vfio_user_backend::vfio_user_server::FileRegion;
use devices::vfio_user_backend::HostVisibleMemory;
use devices::virtio::base_features;
use devices::virtio::MemSlotConfig;
use devices::virtio::Pmem;
use devices::virtio::PmemConfig;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;
use vm_memory::GuestAddress;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;
use crate::crosvm::config::PmemOption;

/// Linux takes pmem regions in whole 2 MiB sections. `crosvm run` pads a shorter image with
/// anonymous memory; a BAR that the client maps from the image cannot hold any.
const PMEM_ALIGNMENT: u64 = 2 << 20;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "pmem")]
/// virtio-pmem, on a disk image that the client maps, served from a sandbox
pub(super) struct PmemOptions {
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
    #[argh(option, arg_name = "PATH[,key=value[,key=value[,...]]]")]
    /// the disk image and its options, as for `crosvm run --pmem`: ro=BOOL, vma-size=BYTES (an
    /// anonymous area of that size instead of the file). Its size must be a multiple of 2 MiB.
    /// root= and swap-interval-ms= are refused: the kernel command line and the mapping are the
    /// VMM's
    pmem: PmemOption,
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

/// The image is opened here, before any jail; every client's device and the BAR share it.
pub(super) fn run(options: PmemOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(options.socket, options.socket_path)?;
    let pmem = options.pmem;
    if pmem.root {
        bail!(
            "root= makes crosvm add root=/dev/pmem0 to the kernel command line, which is the \
             VMM's here: give it to the VMM"
        );
    }
    if pmem.swap_interval.is_some() {
        bail!("swap-interval-ms= pages out crosvm's mapping of the image; here the only mapping is the VMM's");
    }
    let image = open_image(&pmem)?;
    let size = image.metadata().context("image size")?.len();
    if size == 0 || !size.is_multiple_of(PMEM_ALIGNMENT) {
        bail!(
            "{} holds {size} bytes, not a whole number of 2 MiB: the VMM maps the image \
             itself, and Linux takes pmem in 2 MiB sections (extend it: truncate -s %2M)",
            pmem.path.display()
        );
    }
    let writable = !pmem.ro;
    let socket = ServerSocket::open(path.as_deref(), options.fd)?;
    let jail = sandbox::jail_unless_disabled(options.disable_sandbox, &options.jail, |config| {
        sandbox::device_jail(config, "pmem_device_vfio_user")
    })?;
    sandbox::serve(socket, jail, &[image.as_raw_fd()], move |fd| {
        let region = FileRegion::new(OwnedFd::from(image.try_clone()?), writable)
            .context("the image as a BAR")?;
        // A fresh device for every client, on the same image.
        let factory =
            vfio_user_backend::virtio_pci_factory(move || pmem_device(&image, size, writable));
        let memory = HostVisibleMemory::File(Arc::new(region));
        vfio_user_backend::run_server_with_memory(None, Some(fd), factory, memory, true, poll)
    })
}

/// The image file, or with vma-size= an anonymous one of that size, as `crosvm run` makes it.
fn open_image(pmem: &PmemOption) -> anyhow::Result<File> {
    match pmem.vma_size {
        None => open_file_or_duplicate(&pmem.path, OpenOptions::new().read(true).write(!pmem.ro))
            .with_context(|| format!("failed to open {}", pmem.path.display())),
        Some(size) => {
            let name = pmem.path.to_string_lossy().into_owned();
            let mut memory = SharedMemory::new(name, size).context("anonymous pmem area")?;
            // Sized for good, as `crosvm run` seals it: the client's mapping cannot fault.
            let mut seals = MemfdSeals::new();
            seals.set_shrink_seal();
            seals.set_grow_seal();
            seals.set_seal_seal();
            memory.add_seals(seals).context("sealing the pmem area")?;
            Ok(File::from(memory.descriptor))
        }
    }
}

/// crosvm's virtio-pmem with `image` (`size` bytes) in its shared memory region.
fn pmem_device(image: &File, size: u64, writable: bool) -> anyhow::Result<Box<dyn VirtioDevice>> {
    // Requests are carried out on the image itself: the tube to the VM is never used.
    let (tube, _) = Tube::pair().context("pmem tube")?;
    let pmem = Pmem::new(
        base_features(ProtectionType::Unprotected),
        PmemConfig {
            disk_image: Some(image.try_clone().context("duplicating the image")?),
            mapping_address: GuestAddress(0),
            mem_slot: MemSlotConfig::SharedMemoryRegion,
            mapping_size: size,
            pmem_device_tube: tube,
            swap_interval: None,
            mapping_writable: writable,
        },
    )
    .context("failed to create the pmem device")?;
    Ok(Box::new(pmem))
}
