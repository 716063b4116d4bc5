// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server gpu`: virtio-gpu; its compositors are reached through relays.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use base::RecvTube;
use base::Tube;
use devices::parse_wayland_sock;
use devices::vfio_user_backend;
use devices::vfio_user_backend::vfio_user_server::ShadowMemory;
use devices::virtio::base_features;
use devices::virtio::DisplayBackend;
use devices::virtio::Gpu;
use devices::virtio::GpuParameters;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::sandbox::Shows;
use super::socket_path;
use super::wayland_relays;
use super::wayland_relays::RelayDir;
use super::wayland_relays::WaylandRelays;

#[derive(FromArgs)]
#[argh(subcommand, name = "gpu")]
/// virtio-gpu, as for the vhost-user `crosvm device gpu`: its scanouts shown in windows of the
/// unnamed --wayland-sock compositor (a stub display without one), its cross-domain context
/// talking to the --wayland-sock sockets
pub(super) struct GpuOptions {
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
        from_str_fn(gpu_parameters_from_str),
        default = "Default::default()",
        arg_name = "JSON"
    )]
    /// a JSON object of virtio-gpu parameters, as for `crosvm device gpu --params` (keys as
    /// for `crosvm run --gpu`: displays, pci-bar-size, ...)
    params: GpuParameters,
    #[argh(option, from_str_fn(parse_wayland_sock), arg_name = "PATH[,name=NAME]")]
    /// path to one or more Wayland sockets. The unnamed socket is used for displaying virtual
    /// screens while the named ones are used for IPC
    wayland_sock: Vec<(String, PathBuf)>,
    #[argh(switch)]
    /// offer the host-visible memory BAR only through REGION_READ/WRITE messages, not for
    /// mapping: every guest access to a mapped blob is then a message (slow), for clients that
    /// cannot map it and for comparison
    trapped_shared_memory: bool,
    #[argh(switch)]
    /// copy each frame the guest draws in a wl_shm buffer out of the host-visible memory BAR
    /// into the blob the compositor holds, as it is sent; by default the compositor gets the
    /// BAR's own file for wl_shm pools and reads the frames in place, with no copy
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

/// The sandbox shows the directories of the --wayland-sock sockets (each connection opens its
/// socket again, as in crosvm's own gpu jail), the private directory where the relays to them
/// listen, and a /proc of its own; the relays run in the sandbox, beside the device.
pub(super) fn run(gpu: GpuOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(gpu.socket, gpu.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), gpu.fd)?;
    let sockets = wayland_relays::absolute_sockets(gpu.wayland_sock)?;
    let relay_dir = RelayDir::create("gpu")?;
    let jail = sandbox::jail_unless_disabled(gpu.disable_sandbox, &gpu.jail, |config| {
        let binds = relay_dir.binds(&sockets)?;
        // The cross-domain context tells the files it receives apart by their links in
        // /proc/self/fd (memfd, dmabuf, eventfd), as in crosvm's own gpu jail.
        let shows = Shows {
            binds,
            proc: true,
            ..Shows::default()
        };
        sandbox::device_jail_showing(config, "gpu_device_vfio_user", &shows)
    })?;
    let options = ServeOptions {
        params: gpu.params,
        zero_copy: !gpu.copy_wl_shm_frames,
        mapped_shared_memory: !gpu.trapped_shared_memory,
        poll,
    };
    let dir = relay_dir.path.clone();
    let result = sandbox::serve(socket, jail, &[], move |fd| {
        serve_gpu(fd, &sockets, &dir, options)
    });
    drop(relay_dir);
    result
}

/// What `serve_gpu` needs of the options.
struct ServeOptions {
    params: GpuParameters,
    zero_copy: bool,
    mapped_shared_memory: bool,
    poll: Duration,
}

/// Serves virtio-gpu to the clients of the socket `fd`, with relays to the compositors of
/// `sockets` listening in `relay_dir`.
fn serve_gpu(
    fd: RawDescriptor,
    sockets: &BTreeMap<String, PathBuf>,
    relay_dir: &Path,
    options: ServeOptions,
) -> anyhow::Result<()> {
    // Blobs the guest maps live in BAR2's shadow; the compositors get them through
    // relays: wl_shm pools of placed blobs are pointed at BAR2's own file, and every
    // other blob is brought up to date before each message. The display (unnamed
    // socket) talks to its compositor directly: it sends no blobs.
    let shadow = ShadowMemory::new();
    let relays = WaylandRelays::start(relay_dir, sockets, &shadow, options.zero_copy)?;
    let channels = relays.channels();
    let display = sockets.get("").cloned();
    let params = options.params;
    // The host ends of the current device's tubes: its worker stops when the control
    // tube's other end goes. A new client's device replaces them.
    let mut host_tubes: Option<(RecvTube, Tube)> = None;
    let factory = vfio_user_backend::virtio_pci_factory(move || {
        let (device, tubes) = gpu_device(&params, display.as_ref(), &channels)?;
        // The previous device, if any, is gone or going: its worker may stop.
        drop(host_tubes.replace(tubes));
        Ok(device)
    });
    let result = vfio_user_backend::run_server_with_memory(
        None,
        Some(fd),
        factory,
        vfio_user_backend::HostVisibleMemory::Shadow(shadow),
        options.mapped_shared_memory,
        options.poll,
    );
    drop(relays);
    result
}

fn gpu_parameters_from_str(input: &str) -> Result<GpuParameters, String> {
    serde_json::from_str(input).map_err(|e| e.to_string())
}

/// crosvm's virtio-gpu as `crosvm device gpu` (vhost-user) builds it, with the host ends of its
/// exit and control tubes, which nothing reads. Its display is a window of the `display`
/// compositor when there is one, else a stub (no X11: a server has no X display); `channels` are
/// the cross-domain context's sockets.
fn gpu_device(
    params: &GpuParameters,
    display: Option<&PathBuf>,
    channels: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<(Box<dyn VirtioDevice>, (RecvTube, Tube))> {
    let (exit_evt_wrtube, exit_evt_rdtube) =
        Tube::directional_pair().context("failed to create vm event tube")?;
    let (gpu_control_tube, gpu_control_host) =
        Tube::pair().context("failed to create gpu control tube")?;
    let mut display_backends = vec![DisplayBackend::Stub];
    if let Some(path) = display {
        display_backends.insert(0, DisplayBackend::Wayland(Some(path.clone())));
    }
    let gpu = Gpu::new(
        exit_evt_wrtube,
        gpu_control_tube,
        Vec::new(),
        display_backends,
        params,
        None,
        Vec::new(),
        base_features(ProtectionType::Unprotected),
        channels,
        None,
    );
    Ok((Box::new(gpu), (exit_evt_rdtube, gpu_control_host)))
}
