// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server DEVICE`: serves one of crosvm's devices to another VMM over
//! vfio-user (QEMU's `vfio-user-pci`, cloud-hypervisor's `--user-device`).

use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::Event;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::block::DiskOption;
use devices::virtio::BlockAsync;
use devices::virtio::Console;
use devices::virtio::VirtioDevice;
use devices::SerialHardware;
use devices::SerialParameters;
use devices::SerialType;
use hypervisor::ProtectionType;

use crate::crosvm::config::from_key_values;

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
    Block(BlockOptions),
    Console(ConsoleOptions),
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

#[derive(FromArgs)]
#[argh(subcommand, name = "block")]
/// virtio-block, on a disk image
struct BlockOptions {
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

#[derive(FromArgs)]
#[argh(subcommand, name = "console")]
/// virtio-console, on the host's stdin and stdout or on files
struct ConsoleOptions {
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
    #[argh(option, arg_name = "OUTFILE")]
    /// file the guest's output is appended to (default: stdout)
    output_file: Option<PathBuf>,
    #[argh(option, arg_name = "INFILE")]
    /// file the guest's input is read from (default: stdin, unless --syslog)
    input_file: Option<PathBuf>,
    #[argh(switch)]
    /// write the guest's output to syslog
    syslog: bool,
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
        DeviceOptions::Block(block) => {
            let path = socket_path(block.socket, block.socket_path)?;
            let disk = block.file;
            // Opened again for every client, each of which gets a fresh device.
            let factory = vfio_user_backend::virtio_pci_factory(move || block_device(&disk));
            vfio_user_backend::run_server(path.as_deref(), block.fd, factory)
        }
        DeviceOptions::Console(console) => {
            let path = socket_path(console.socket, console.socket_path)?;
            let params =
                console_parameters(console.output_file, console.input_file, console.syslog)?;
            // Each client gets a fresh device, on the files opened again (output appended to).
            let factory = vfio_user_backend::virtio_pci_factory(move || console_device(&params));
            vfio_user_backend::run_server(path.as_deref(), console.fd, factory)
        }
    }
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

/// The console's host side, as for `crosvm device console` (vhost-user): output to the file, to
/// syslog or to stdout; input from the file or, unless output goes to syslog, from stdin.
fn console_parameters(
    output_file: Option<PathBuf>,
    input_file: Option<PathBuf>,
    syslog: bool,
) -> anyhow::Result<SerialParameters> {
    let type_ = match (&output_file, syslog) {
        (Some(_), true) => bail!("--output-file and --syslog options cannot be used together."),
        (Some(_), false) => SerialType::File,
        (None, true) => SerialType::Syslog,
        (None, false) => SerialType::Stdout,
    };
    Ok(SerialParameters {
        type_,
        hardware: SerialHardware::VirtioConsole,
        path: output_file,
        input: input_file,
        num: 1,
        console: true,
        stdin: !syslog,
        ..Default::default()
    })
}

/// crosvm's virtio-console on the host side `params` describes, as `crosvm run --serial
/// hardware=virtio-console` builds it.
fn console_device(params: &SerialParameters) -> anyhow::Result<Box<dyn VirtioDevice>> {
    // The event is for legacy serial devices' interrupts; virtio-console does not use it.
    let console: Console = params
        .create_serial_device(ProtectionType::Unprotected, &Event::new()?, &mut Vec::new())
        .context("failed to create the console device")?;
    Ok(Box::new(console))
}
