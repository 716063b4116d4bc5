// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server net`: virtio-net on a host tap.

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::Net;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use net_util::sys::linux::Tap;
use net_util::MacAddress;
use net_util::TapTCommon;

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
    /// name of an existing tap interface, opened again for each client.
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
}

pub(super) fn run(net: NetOptions) -> anyhow::Result<()> {
    let path = socket_path(net.socket, net.socket_path)?;
    let tap = match (net.tap_name, net.tap_fd) {
        (Some(name), None) => NetTap::Name(name),
        (None, Some(fd)) => NetTap::Fd(tap_from_fd(fd)?),
        _ => bail!("exactly one of --tap-name and --tap-fd must be given"),
    };
    let (mac, mrg_rxbuf) = (net.mac, net.mrg_rxbuf);
    // Each client gets a fresh device, on the tap opened again (or its descriptor
    // duplicated); the previous client's device, gone, has let its tap go.
    let factory = vfio_user_backend::virtio_pci_factory(move || net_device(&tap, mac, mrg_rxbuf));
    vfio_user_backend::run_server(path.as_deref(), net.fd, factory)
}

/// Where each client's tap comes from.
enum NetTap {
    /// An existing tap interface, opened by name (TUNSETIFF) for each client.
    Name(String),
    /// An inherited tap descriptor, duplicated for each client.
    Fd(Tap),
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
/// `tap-fd=FD`) builds it.
fn net_device(
    tap: &NetTap,
    mac: Option<MacAddress>,
    mrg_rxbuf: bool,
) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let tap = match tap {
        NetTap::Name(name) => Tap::new_with_name(name.as_bytes(), true, false)
            .with_context(|| format!("failed to open tap {name}"))?,
        NetTap::Fd(tap) => tap
            .try_clone()
            .context("failed to duplicate the tap descriptor")?,
    };
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
