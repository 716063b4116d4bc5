// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server net`: virtio-net on a host tap.

use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::AsRawDescriptor;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::Net;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;
use net_util::sys::linux::Tap;
use net_util::MacAddress;
use net_util::TapTCommon;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::sandbox::Shows;
use super::socket_path;

#[derive(FromArgs)]
#[argh(subcommand, name = "net")]
/// virtio-net, on a host tap interface
pub(super) struct NetOptions {
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
    #[argh(option, arg_name = "TAP_NAME")]
    /// name of an existing tap interface, opened at start.
    /// If this flag is set, --tap-fd cannot be specified.
    tap_name: Option<String>,
    #[argh(option, arg_name = "TAP_FD")]
    /// inherited descriptor of an open tap interface, duplicated for each client.
    /// If this flag is set, --tap-name cannot be specified.
    tap_fd: Option<RawDescriptor>,
    #[argh(option, arg_name = "MAC_ADDR")]
    /// MAC address the guest is offered (e.g. 12:34:56:78:9a:bc; default: the guest picks one)
    mac: Option<MacAddress>,
    #[argh(switch)]
    /// offer the MRG_RXBUF feature (mergeable receive buffers)
    mrg_rxbuf: bool,
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

/// The tap is opened by name (TUNSETIFF needs privileges the sandbox does not keep) or taken
/// from --tap-fd here, before any jail; each client's device works on a duplicate of it. The
/// sandbox stays in the host's network namespace: crosvm's net device asks the host for the
/// interface's MTU by name, through an AF_INET socket.
pub(super) fn run(net: NetOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(net.socket, net.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), net.fd)?;
    let tap = match (net.tap_name, net.tap_fd) {
        (Some(name), None) => Tap::new_with_name(name.as_bytes(), true, false)
            .with_context(|| format!("failed to open tap {name}"))?,
        (None, Some(fd)) => tap_from_fd(fd)?,
        _ => bail!("exactly one of --tap-name and --tap-fd must be given"),
    };
    let (mac, mrg_rxbuf) = (net.mac, net.mrg_rxbuf);
    let jail = sandbox::jail_unless_disabled(net.disable_sandbox, &net.jail, |config| {
        let shows = Shows {
            host_network: true,
            ..Shows::default()
        };
        sandbox::device_jail_showing(config, "net_device_vfio_user", &shows)
    })?;
    let keep = [tap.as_raw_descriptor()];
    sandbox::serve(socket, jail, &keep, move |fd| {
        // Each client gets a fresh device on a duplicate of the tap; the previous client's
        // device is gone.
        let factory =
            vfio_user_backend::virtio_pci_factory(move || net_device(&tap, mac, mrg_rxbuf));
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

/// The inherited tap descriptor `fd`, as `crosvm device net --tap-fd` takes it.
fn tap_from_fd(fd: RawDescriptor) -> anyhow::Result<Tap> {
    let fd = base::validate_raw_descriptor(fd).context("failed to validate the tap descriptor")?;
    // SAFETY:
    // Safe because the descriptor was validated above and is not used elsewhere in this process.
    let tap = unsafe { Tap::from_raw_descriptor(fd) }.context("failed to create tap device")?;
    Ok(tap)
}

/// crosvm's virtio-net, on one queue pair, as `crosvm run --net tap-name=NAME` (or
/// `tap-fd=FD`) builds it, on a duplicate of `tap`.
fn net_device(
    tap: &Tap,
    mac: Option<MacAddress>,
    mrg_rxbuf: bool,
) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let tap = tap
        .try_clone()
        .context("failed to duplicate the tap descriptor")?;
    let net = Net::new(
        base_features(ProtectionType::Unprotected),
        tap,
        1,
        mac,
        false,
        None,
        mrg_rxbuf,
    )
    .context("failed to set up virtio networking")?;
    Ok(Box::new(net))
}
