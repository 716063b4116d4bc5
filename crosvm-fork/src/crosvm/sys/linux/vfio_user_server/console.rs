// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server console`: virtio-console, with the host side of `crosvm device
//! console`, served from a sandbox.

use std::fs::File;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

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
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "console")]
/// virtio-console, on the host's stdin and stdout or on files, served from a sandbox
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

/// The files are opened here, before any jail, and each client's device gets duplicates of
/// them through crosvm's `/proc/self/fd/N` convention: output is appended to the one open file,
/// and input is read from one open file, so a second client goes on where the first stopped.
pub(super) fn run(console: ConsoleOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(console.socket, console.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), console.fd)?;
    let mut params = console_parameters(console.output_file, console.input_file, console.syslog)?;
    let files = open_before_jail(&mut params)?;
    let keep: Vec<RawDescriptor> = files.iter().map(|f| f.as_raw_fd()).collect();
    let jail = sandbox::jail_unless_disabled(console.disable_sandbox, &console.jail, |config| {
        sandbox::device_jail(config, "console_device_vfio_user")
    })?;
    sandbox::serve(socket, jail, &keep, move |fd| {
        let factory = vfio_user_backend::virtio_pci_factory(move || console_device(&params));
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

/// Opens the output file (appending, created if missing) and the input file of `params`, and
/// names them by descriptor in `params`. Returns the files, which must stay open while serving.
fn open_before_jail(params: &mut SerialParameters) -> anyhow::Result<Vec<File>> {
    let mut files = Vec::new();
    if let Some(path) = params.path.as_mut() {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&*path)
            .with_context(|| format!("opening {}", path.display()))?;
        *path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        files.push(file);
    }
    if let Some(path) = params.input.as_mut() {
        // A FIFO with no writer yet would block an ordinary open: open it without blocking, then
        // let reads block again.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&*path)
            .with_context(|| format!("opening {}", path.display()))?;
        base::clear_fd_flags(file.as_raw_fd(), libc::O_NONBLOCK)
            .with_context(|| format!("making {} blocking", path.display()))?;
        *path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        files.push(file);
    }
    Ok(files)
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
