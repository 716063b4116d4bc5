// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server wl`: virtio-wl, the Wayland device crosvm had before the
//! cross-domain context; its compositors are reached through relays, as virtio-gpu's are.
//!
//! The memory the guest allocates through the device (VFD_NEW) is placed in its 4 GiB shared
//! memory BAR, a `ShadowMemory` the client maps, and the relays hand it to the compositors as
//! they do virtio-gpu's blobs. The guest needs a virtio_wl driver, which upstream Linux does
//! not have (ChromeOS kernels do).

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::parse_wayland_sock;
use devices::vfio_user_backend;
use devices::vfio_user_backend::vfio_user_server::ShadowMemory;
use devices::vfio_user_backend::HostVisibleMemory;
use devices::virtio::base_features;
use devices::virtio::VirtioDevice;
use devices::virtio::Wl;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::sandbox::Shows;
use super::socket_path;
use super::wayland_relays;
use super::wayland_relays::RelayDir;
use super::wayland_relays::WaylandRelays;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "wl")]
/// virtio-wl, talking to the --wayland-sock compositors, served from a sandbox
pub(super) struct WlOptions {
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
    #[argh(option, from_str_fn(parse_wayland_sock), arg_name = "PATH[,name=NAME]")]
    /// path to one or more Wayland sockets, as for `crosvm run --wayland-sock`: the guest
    /// connects to the unnamed one by default, to a named one by its name
    wayland_sock: Vec<(String, PathBuf)>,
    #[argh(switch)]
    /// copy what the guest draws in a wl_shm buffer out of the shared memory BAR into the
    /// buffer's file as each message goes to the compositor; by default the compositor gets the
    /// BAR's own file for wl_shm pools and reads the guest's pixels in place
    copy_wl_shm_frames: bool,
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

/// The sandbox shows the directories of the --wayland-sock sockets and the private directory
/// where the relays to them listen; the relays run in the sandbox, beside the device.
pub(super) fn run(wl: WlOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(wl.socket, wl.socket_path)?;
    if wl.wayland_sock.is_empty() {
        anyhow::bail!("virtio-wl needs a compositor: give its socket with --wayland-sock");
    }
    let socket = ServerSocket::open(path.as_deref(), wl.fd)?;
    let sockets = wayland_relays::absolute_sockets(wl.wayland_sock)?;
    let relay_dir = RelayDir::create("wl")?;
    let jail = sandbox::jail_unless_disabled(wl.disable_sandbox, &wl.jail, |config| {
        let shows = Shows {
            binds: relay_dir.binds(&sockets)?,
            ..Shows::default()
        };
        sandbox::device_jail_showing(config, "wl_device_vfio_user", &shows)
    })?;
    let dir = relay_dir.path.clone();
    let zero_copy = !wl.copy_wl_shm_frames;
    let result = sandbox::serve(socket, jail, &[], move |fd| {
        serve_wl(fd, &sockets, &dir, zero_copy, poll)
    });
    drop(relay_dir);
    result
}

/// Serves virtio-wl to the clients of the socket `fd`, with relays to the compositors of
/// `sockets` listening in `relay_dir`.
fn serve_wl(
    fd: RawDescriptor,
    sockets: &BTreeMap<String, PathBuf>,
    relay_dir: &Path,
    zero_copy: bool,
    poll: Duration,
) -> anyhow::Result<()> {
    let shadow = ShadowMemory::new();
    let relays = WaylandRelays::start(relay_dir, sockets, &shadow, zero_copy)?;
    let channels = relays.channels();
    let factory = vfio_user_backend::virtio_pci_factory(move || {
        // No resource bridge: the guest's buffers are the device's own allocations, not
        // virtio-gpu resources.
        let wl = Wl::new(
            base_features(ProtectionType::Unprotected),
            channels.clone(),
            None,
        )
        .context("failed to create the wl device")?;
        Ok(Box::new(wl) as Box<dyn VirtioDevice>)
    });
    let memory = HostVisibleMemory::Shadow(shadow);
    let result =
        vfio_user_backend::run_server_with_memory(None, Some(fd), factory, memory, true, poll);
    drop(relays);
    result
}
