// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server console`: virtio-console, with the host side of `crosvm device
//! console`.

use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::Event;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::Console;
use devices::virtio::VirtioDevice;
use devices::SerialHardware;
use devices::SerialParameters;
use devices::SerialType;
use hypervisor::ProtectionType;

use super::socket_path;

#[derive(FromArgs)]
#[argh(subcommand, name = "console")]
/// virtio-console, on the host's stdin and stdout or on files
pub(super) struct ConsoleOptions {
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

pub(super) fn run(console: ConsoleOptions) -> anyhow::Result<()> {
    let path = socket_path(console.socket, console.socket_path)?;
    let params = console_parameters(console.output_file, console.input_file, console.syslog)?;
    // Each client gets a fresh device, on the files opened again (output appended to).
    let factory = vfio_user_backend::virtio_pci_factory(move || console_device(&params));
    vfio_user_backend::run_server(path.as_deref(), console.fd, factory)
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
