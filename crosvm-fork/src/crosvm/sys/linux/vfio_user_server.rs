// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server DEVICE`: serves one of crosvm's devices to another VMM over
//! vfio-user (QEMU's `vfio-user-pci`, cloud-hypervisor's `--user-device`).

#[cfg(feature = "gpu")]
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
#[cfg(feature = "gpu")]
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::path::PathBuf;
#[cfg(feature = "gpu")]
use std::sync::Arc;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::AsRawDescriptor;
use base::Event;
use base::RawDescriptor;
#[cfg(feature = "gpu")]
use base::RecvTube;
use base::SignalFd;
use base::Tube;
#[cfg(feature = "gpu")]
use devices::parse_wayland_sock;
use devices::vfio_user_backend;
#[cfg(feature = "gpu")]
use devices::vfio_user_backend::vfio_user_server::ShadowMemory;
#[cfg(feature = "gpu")]
use devices::vfio_user_backend::vfio_user_server::FilterFactory;
#[cfg(feature = "gpu")]
use devices::vfio_user_backend::vfio_user_server::SocketRelay;
#[cfg(feature = "gpu")]
use devices::vfio_user_backend::vfio_user_server::StreamFilter;
use devices::virtio::base_features;
use devices::virtio::block::DiskOption;
use devices::virtio::device_constants::fs::FS_MAX_TAG_LEN;
use devices::virtio::fs::passthrough::PassthroughFs;
use devices::virtio::fs::Config as FsConfig;
use devices::virtio::fs::Fs;
#[cfg(feature = "audio")]
use devices::virtio::snd::common_backend::VirtioSnd;
#[cfg(feature = "audio")]
use devices::virtio::snd::parameters::Parameters as SndParameters;
use devices::virtio::vsock::VsockConfig;
use devices::virtio::BlockAsync;
use devices::virtio::Console;
#[cfg(feature = "gpu")]
use devices::virtio::DisplayBackend;
#[cfg(feature = "gpu")]
use devices::virtio::Gpu;
#[cfg(feature = "gpu")]
use devices::virtio::GpuParameters;
#[cfg(feature = "net")]
use devices::virtio::Net;
use devices::virtio::VirtioDevice;
use devices::SerialHardware;
use devices::SerialParameters;
use devices::SerialType;
use hypervisor::ProtectionType;
use jail::create_base_minijail;
#[cfg(feature = "net")]
use net_util::sys::linux::Tap;
#[cfg(feature = "net")]
use net_util::MacAddress;
#[cfg(feature = "net")]
use net_util::TapTCommon;

use super::device_helpers::create_custom_device;
use super::device_helpers::create_keyboard_device;
use super::device_helpers::create_mouse_device;
use super::device_helpers::create_multi_touch_device;
use super::device_helpers::create_multitouch_trackpad_device;
use super::device_helpers::create_rotary_device;
use super::device_helpers::create_single_touch_device;
use super::device_helpers::create_switches_device;
use super::device_helpers::create_trackpad_device;
use super::device_helpers::create_vinput_device;
use super::device_helpers::VirtioDeviceBuilder;
use crate::crosvm::config::from_key_values;
use crate::crosvm::config::InputDeviceOption;
use crate::crosvm::config::DEFAULT_TOUCH_DEVICE_HEIGHT;
use crate::crosvm::config::DEFAULT_TOUCH_DEVICE_WIDTH;

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
    #[cfg(feature = "net")]
    Net(NetOptions),
    #[cfg(feature = "gpu")]
    Gpu(GpuOptions),
    #[cfg(feature = "audio")]
    Snd(SndOptions),
    Input(InputOptions),
    Fs(FsOptions),
    Vsock(VsockOptions),
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

#[cfg(feature = "net")]
#[derive(FromArgs)]
#[argh(subcommand, name = "net")]
/// virtio-net, on a host tap interface
struct NetOptions {
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

#[cfg(feature = "gpu")]
#[derive(FromArgs)]
#[argh(subcommand, name = "gpu")]
/// virtio-gpu, as for the vhost-user `crosvm device gpu`: its scanouts shown in windows of the
/// unnamed --wayland-sock compositor (a stub display without one), its cross-domain context
/// talking to the --wayland-sock sockets
struct GpuOptions {
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
}

#[cfg(feature = "audio")]
#[derive(FromArgs)]
#[argh(subcommand, name = "snd")]
/// virtio-snd, as for the vhost-user `crosvm device snd`: streams played and captured by a host
/// audio backend
struct SndOptions {
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
        arg_name = "CONFIG",
        from_str_fn(from_key_values),
        default = "Default::default()"
    )]
    /// comma separated key=value pairs, as for `crosvm run --virtio-snd`: backend (null, file,
    /// or cras where built in), capture, num_output_devices, num_input_devices,
    /// num_output_streams, num_input_streams, playback_path, playback_size, card_index, ...
    config: SndParameters,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "input")]
/// virtio-input, as for `crosvm run --input`: a keyboard, mouse, touch device, ... fed by events
/// from a unix socket, or an evdev device of the host
struct InputOptions {
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
    #[argh(option, arg_name = "KIND[path=PATH,...]", from_str_fn(from_key_values))]
    /// the input device, with the syntax of `crosvm run --input`: evdev[path=DEV],
    /// keyboard[path=SOCKET], mouse[...], multi-touch[path=..,width=..,height=..,name=..],
    /// single-touch[...], trackpad[...], multi-touch-trackpad[...], switches[...],
    /// rotary[...], custom[path=..,config-path=..]. Event sockets are connected to again for
    /// every client
    input: InputDeviceOption,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "fs")]
/// virtio-fs, as for the vhost-user `crosvm device fs`: a host directory shared with the guest,
/// served by a child process jailed into it (pivot_root; root needed)
struct FsOptions {
    #[argh(option, arg_name = "PATH", hidden_help)]
    /// same as --socket-path
    socket: Option<String>,
    #[argh(option, arg_name = "PATH")]
    /// path of the unix socket to listen on.
    /// If this flag is set, --fd cannot be specified.
    socket_path: Option<String>,
    #[argh(option, arg_name = "FD")]
    /// inherited listening unix socket. If this flag is set, --socket-path cannot be specified.
    fd: Option<RawDescriptor>,
    #[argh(option, arg_name = "DIR")]
    /// path to the directory to share
    shared_dir: PathBuf,
    #[argh(option, arg_name = "TAG")]
    /// the virtio-fs tag the guest mounts it by
    tag: String,
    #[argh(option, arg_name = "CFG")]
    /// colon-separated options, as for `crosvm device fs --cfg` (the virtio-fs keys of
    /// `crosvm run --shared-dir`)
    cfg: Option<FsConfig>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "vsock")]
/// virtio-vsock on the host kernel's vhost-vsock, as for the vhost-user `crosvm device vsock`
struct VsockOptions {
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
    #[argh(option, arg_name = "INT")]
    /// the vsock context id of the guest
    cid: u64,
    #[argh(
        option,
        arg_name = "PATH",
        default = "PathBuf::from(\"/dev/vhost-vsock\")"
    )]
    /// path to the vhost-vsock device
    vhost_socket: PathBuf,
}

#[cfg(feature = "gpu")]
fn gpu_parameters_from_str(input: &str) -> Result<GpuParameters, String> {
    serde_json::from_str(input).map_err(|e| e.to_string())
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
        #[cfg(feature = "net")]
        DeviceOptions::Net(net) => {
            let path = socket_path(net.socket, net.socket_path)?;
            let tap = match (net.tap_name, net.tap_fd) {
                (Some(name), None) => NetTap::Name(name),
                (None, Some(fd)) => NetTap::Fd(tap_from_fd(fd)?),
                _ => bail!("exactly one of --tap-name and --tap-fd must be given"),
            };
            let (mac, mrg_rxbuf) = (net.mac, net.mrg_rxbuf);
            // Each client gets a fresh device, on the tap opened again (or its descriptor
            // duplicated); the previous client's device, gone, has let its tap go.
            let factory =
                vfio_user_backend::virtio_pci_factory(move || net_device(&tap, mac, mrg_rxbuf));
            vfio_user_backend::run_server(path.as_deref(), net.fd, factory)
        }
        #[cfg(feature = "gpu")]
        DeviceOptions::Gpu(gpu) => {
            let path = socket_path(gpu.socket, gpu.socket_path)?;
            let params = gpu.params;
            let sockets: BTreeMap<String, PathBuf> = gpu.wayland_sock.into_iter().collect();
            // Blobs the guest maps live in BAR2's shadow; the compositors get them through
            // relays: wl_shm pools of placed blobs are pointed at BAR2's own file, and every
            // other blob is brought up to date before each message. The display (unnamed
            // socket) talks to its compositor directly: it sends no blobs.
            let shadow = ShadowMemory::new();
            let relays = WaylandRelays::start(&sockets, &shadow, !gpu.copy_wl_shm_frames)?;
            let channels = relays.channels();
            let display = sockets.get("").cloned();
            // The host ends of the current device's tubes: its worker stops when the control
            // tube's other end goes. A new client's device replaces them.
            let mut host_tubes: Option<(RecvTube, Tube)> = None;
            let factory = vfio_user_backend::virtio_pci_factory(move || {
                let (device, tubes) = gpu_device(&params, display.as_ref(), &channels)?;
                // The previous device, if any, is gone or going: its worker may stop.
                drop(host_tubes.replace(tubes));
                Ok(device)
            });
            let result = vfio_user_backend::run_server_with_shadow(
                path.as_deref(),
                gpu.fd,
                factory,
                shadow,
                !gpu.trapped_shared_memory,
            );
            drop(relays);
            result
        }
        DeviceOptions::Input(input) => {
            let path = socket_path(input.socket, input.socket_path)?;
            let option = input.input;
            let factory = vfio_user_backend::virtio_pci_factory(move || input_device(&option));
            vfio_user_backend::run_server(path.as_deref(), input.fd, factory)
        }
        DeviceOptions::Vsock(vsock) => {
            let path = socket_path(vsock.socket, vsock.socket_path)?;
            let config = VsockConfig::new(vsock.cid, Some(&vsock.vhost_socket));
            // vhost-vsock is opened again for each client's device (the kernel allows one
            // owner of a CID at a time; the previous client's device is gone by then).
            let factory = vfio_user_backend::virtio_pci_factory(move || {
                (&config).create_virtio_device(ProtectionType::Unprotected)
            });
            vfio_user_backend::run_server(path.as_deref(), vsock.fd, factory)
        }
        DeviceOptions::Fs(fs) => {
            let path = socket_path(fs.socket, fs.socket_path)?;
            run_fs_server(
                path.as_deref(),
                fs.fd,
                &fs.shared_dir,
                fs.tag,
                fs.cfg.unwrap_or_default(),
            )
        }
        #[cfg(feature = "audio")]
        DeviceOptions::Snd(snd) => {
            let path = socket_path(snd.socket, snd.socket_path)?;
            let params = snd.config;
            // The host end of the current device's control tube (snapshots, which nothing
            // takes here); a new client's device replaces it.
            let mut control_host: Option<Tube> = None;
            let factory = vfio_user_backend::virtio_pci_factory(move || {
                let (control, host) = Tube::pair().context("failed to create snd control tube")?;
                let snd = VirtioSnd::new(
                    base_features(ProtectionType::Unprotected),
                    params.clone(),
                    control,
                )
                .context("failed to create the sound device")?;
                drop(control_host.replace(host));
                Ok(Box::new(snd) as Box<dyn VirtioDevice>)
            });
            vfio_user_backend::run_server(path.as_deref(), snd.fd, factory)
        }
    }
}

/// crosvm's virtio-gpu as `crosvm device gpu` (vhost-user) builds it, with the host ends of its
/// exit and control tubes, which nothing reads. Its display is a window of the `display`
/// compositor when there is one, else a stub (no X11: a server has no X display); `channels` are
/// the cross-domain context's sockets.
#[cfg(feature = "gpu")]
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

/// One relay per `--wayland-sock` socket, listening in a private directory removed on drop.
#[cfg(feature = "gpu")]
struct WaylandRelays {
    dir: PathBuf,
    relays: BTreeMap<String, SocketRelay>,
}

#[cfg(feature = "gpu")]
impl WaylandRelays {
    fn start(
        sockets: &BTreeMap<String, PathBuf>,
        shadow: &Arc<ShadowMemory>,
        zero_copy: bool,
    ) -> anyhow::Result<WaylandRelays> {
        let filters: Option<FilterFactory> = zero_copy.then(|| {
            Arc::new(|| Box::new(wl_shm_rewrite::Rewriter::new()) as Box<dyn StreamFilter>)
                as FilterFactory
        });
        let dir = std::env::temp_dir().join(format!("crosvm-vfio-user-gpu-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut relays = WaylandRelays {
            dir,
            relays: BTreeMap::new(),
        };
        for (i, (name, peer)) in sockets.iter().enumerate() {
            let listen = relays.dir.join(format!("wayland-{i}"));
            let relay = SocketRelay::start_filtered(&listen, peer, shadow.clone(), filters.clone())
                .with_context(|| format!("relaying {} at {}", peer.display(), listen.display()))?;
            relays.relays.insert(name.clone(), relay);
        }
        Ok(relays)
    }

    /// The sockets the device connects to, by channel name.
    fn channels(&self) -> BTreeMap<String, PathBuf> {
        self.relays
            .iter()
            .map(|(name, relay)| (name.clone(), relay.path().to_path_buf()))
            .collect()
    }
}

#[cfg(feature = "gpu")]
impl Drop for WaylandRelays {
    fn drop(&mut self) {
        // Each relay removes its socket.
        self.relays.clear();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// crosvm's virtio-input for `option`, built by the helpers `crosvm run --input` uses (as the
/// first device of its kind, without a sandbox).
fn input_device(option: &InputDeviceOption) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let protection = ProtectionType::Unprotected;
    let size = |width: &Option<u32>, height: &Option<u32>| {
        (
            width.unwrap_or(DEFAULT_TOUCH_DEVICE_WIDTH),
            height.unwrap_or(DEFAULT_TOUCH_DEVICE_HEIGHT),
        )
    };
    let stub = match option {
        InputDeviceOption::Evdev { path } => create_vinput_device(protection, None, path)?,
        InputDeviceOption::Keyboard { path } => {
            create_keyboard_device(protection, None, path.as_path(), 0)?
        }
        InputDeviceOption::Mouse { path } => {
            create_mouse_device(protection, None, path.as_path(), 0)?
        }
        InputDeviceOption::Rotary { path } => {
            create_rotary_device(protection, None, path.as_path(), 0)?
        }
        InputDeviceOption::Switches { path } => {
            create_switches_device(protection, None, path.as_path(), 0)?
        }
        InputDeviceOption::MultiTouch {
            path,
            width,
            height,
            name,
        } => {
            let (width, height) = size(width, height);
            create_multi_touch_device(
                protection,
                None,
                path.as_path(),
                width,
                height,
                name.as_deref(),
                0,
            )?
        }
        InputDeviceOption::SingleTouch {
            path,
            width,
            height,
            name,
        } => {
            let (width, height) = size(width, height);
            create_single_touch_device(
                protection,
                None,
                path.as_path(),
                width,
                height,
                name.as_deref(),
                0,
            )?
        }
        InputDeviceOption::Trackpad {
            path,
            width,
            height,
            name,
        } => {
            let (width, height) = size(width, height);
            create_trackpad_device(
                protection,
                None,
                path.as_path(),
                width,
                height,
                name.as_deref(),
                0,
            )?
        }
        InputDeviceOption::MultiTouchTrackpad {
            path,
            width,
            height,
            name,
        } => {
            let (width, height) = size(width, height);
            create_multitouch_trackpad_device(
                protection,
                None,
                path.as_path(),
                width,
                height,
                name.as_deref(),
                0,
            )?
        }
        InputDeviceOption::Custom { path, config_path } => {
            create_custom_device(protection, None, path.as_path(), 0, config_path.clone())?
        }
    };
    Ok(stub.dev)
}

/// Serves virtio-fs on `shared_dir` from a child jailed into it, as crosvm jails its fs device:
/// the socket is bound and /proc opened here, the child pivots into the directory and builds a
/// device for every client with that /proc. The parent waits for the child, passes SIGTERM and
/// SIGINT on, and removes the socket file it bound (the child cannot reach it).
fn run_fs_server(
    socket_path: Option<&str>,
    fd: Option<RawDescriptor>,
    shared_dir: &Path,
    tag: String,
    cfg: FsConfig,
) -> anyhow::Result<()> {
    if tag.len() > FS_MAX_TAG_LEN {
        bail!("fs tag is too long: {} (max {FS_MAX_TAG_LEN})", tag.len());
    }
    let (listener, bound): (OwnedFd, Option<&str>) = match (socket_path, fd) {
        (Some(path), None) => {
            let listener = UnixListener::bind(path).with_context(|| format!("binding {path}"))?;
            (listener.into(), Some(path))
        }
        (None, Some(fd)) => (
            OwnedFd::from(base::safe_descriptor_from_cmdline_fd(&fd)?),
            None,
        ),
        (Some(_), Some(_)) => bail!("a socket path and a file descriptor cannot both be given"),
        (None, None) => {
            bail!("a socket path (--socket-path) or a file descriptor (--fd) is needed")
        }
    };
    let proc = PassthroughFs::open_proc().context("opening /proc")?;
    let max_open_files = base::linux::max_open_files()
        .context("failed to get max number of open files")?
        .rlim_max;
    let jail = create_base_minijail(shared_dir, max_open_files)?;
    let mut keep_rds = vec![0, 1, 2, listener.as_raw_fd(), proc.as_raw_fd()];
    base::syslog::push_descriptors(&mut keep_rds);
    keep_rds.sort_unstable();
    keep_rds.dedup();
    // SAFETY: this process has started no threads yet (minijail checks), and the child only
    // uses the descriptors it keeps.
    let pid = unsafe { jail.fork(Some(&keep_rds)) }.context("failed to fork the jailed child")?;
    if pid == 0 {
        // SAFETY: no pointers; the child ends with a parent that cannot pass signals on any more.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        let features = base_features(ProtectionType::Unprotected);
        // The host end of the current device's tube (DAX mapping requests, which a server
        // without a VM does not serve); a new client's device replaces it.
        let mut tube_host: Option<Tube> = None;
        let factory = vfio_user_backend::virtio_pci_factory(move || {
            let (tube, host) = Tube::pair().context("failed to create fs tube")?;
            let proc = proc.try_clone().context("duplicating /proc")?;
            let fs = Fs::new_with_proc(features, &tag, 1, cfg.clone(), tube, proc)
                .context("failed to create the fs device")?;
            drop(tube_host.replace(host));
            Ok(Box::new(fs) as Box<dyn VirtioDevice>)
        });
        let result = vfio_user_backend::run_server(None, Some(listener.as_raw_fd()), factory);
        if let Err(e) = &result {
            base::error!("vfio-user fs server: {e:#}");
        }
        std::process::exit(if result.is_ok() { 0 } else { 1 });
    }
    drop(listener);
    let status = wait_passing_signals(pid);
    if let Some(path) = bound {
        let _ = std::fs::remove_file(path);
    }
    match status? {
        0 => Ok(()),
        code => bail!("the jailed fs server ended with status {code}"),
    }
}

/// Waits for child `pid`, sending it SIGTERM when this process gets SIGTERM or SIGINT. Returns
/// its exit code (128 + the signal if a signal ended it).
fn wait_passing_signals(pid: libc::pid_t) -> anyhow::Result<i32> {
    let signals = [
        SignalFd::new(libc::SIGTERM).context("creating a signalfd for SIGTERM")?,
        SignalFd::new(libc::SIGINT).context("creating a signalfd for SIGINT")?,
    ];
    loop {
        let mut status = 0;
        // SAFETY: a live local for the status; no other memory is touched.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if ret == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            };
            for signal in &signals {
                let _ = signal.read();
            }
            return Ok(code);
        }
        if ret < 0 {
            bail!(
                "waiting for the jailed fs server: {}",
                std::io::Error::last_os_error()
            );
        }
        let mut fds: Vec<libc::pollfd> = signals
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_descriptor(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of its length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready > 0 && fds.iter().any(|f| f.revents != 0) {
            for signal in &signals {
                let _ = signal.read();
            }
            // SAFETY: no pointers; `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
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

/// Where each client's tap comes from.
#[cfg(feature = "net")]
enum NetTap {
    /// An existing tap interface, opened by name (TUNSETIFF) for each client.
    Name(String),
    /// An inherited tap descriptor, duplicated for each client.
    Fd(Tap),
}

/// The inherited tap descriptor `fd`, as `crosvm device net --tap-fd` takes it.
#[cfg(feature = "net")]
fn tap_from_fd(fd: RawDescriptor) -> anyhow::Result<Tap> {
    let fd = base::validate_raw_descriptor(fd).context("failed to validate the tap descriptor")?;
    // SAFETY:
    // Safe because the descriptor was validated above and is not used elsewhere in this process.
    let tap = unsafe { Tap::from_raw_descriptor(fd) }.context("failed to create tap device")?;
    Ok(tap)
}

/// crosvm's virtio-net, on one queue pair, as `crosvm run --net tap-name=NAME` (or
/// `tap-fd=FD`) builds it.
#[cfg(feature = "net")]
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
