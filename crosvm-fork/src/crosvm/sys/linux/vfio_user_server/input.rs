// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server input`: virtio-input, given as for `crosvm run --input`.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use argh::FromArgs;
use base::open_file_or_duplicate;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::super::device_helpers::create_custom_device;
use super::super::device_helpers::create_keyboard_device;
use super::super::device_helpers::create_mouse_device;
use super::super::device_helpers::create_multi_touch_device;
use super::super::device_helpers::create_multitouch_trackpad_device;
use super::super::device_helpers::create_rotary_device;
use super::super::device_helpers::create_single_touch_device;
use super::super::device_helpers::create_switches_device;
use super::super::device_helpers::create_trackpad_device;
use super::sandbox;
use super::sandbox::ServerSocket;
use super::sandbox::Shows;
use super::socket_path;
use crate::crosvm::config::from_key_values;
use crate::crosvm::config::InputDeviceOption;
use crate::crosvm::config::DEFAULT_TOUCH_DEVICE_HEIGHT;
use crate::crosvm::config::DEFAULT_TOUCH_DEVICE_WIDTH;

#[derive(FromArgs)]
#[argh(subcommand, name = "input")]
/// virtio-input, as for `crosvm run --input`: a keyboard, mouse, touch device, ... fed by events
/// from a unix socket, or an evdev device of the host
pub(super) struct InputOptions {
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
    /// rotary[...], custom[path=..,config-path=..]. The event socket is connected to (the
    /// evdev device opened) once, at start; each client's device reads from that connection
    input: InputDeviceOption,
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

/// The event source is connected to (or, for evdev, opened) here, before any jail, and named by
/// descriptor (crosvm's `/proc/self/fd/N` convention): the sandboxed server sees nothing of the
/// host but a custom device's configuration file.
pub(super) fn run(input: InputOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(input.socket, input.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), input.fd)?;
    let mut option = input.input;
    let source = open_before_jail(&mut option)?;
    let config_file = match &option {
        InputDeviceOption::Custom { config_path, .. } => Some((config_path.clone(), false)),
        _ => None,
    };
    let jail = sandbox::jail_unless_disabled(input.disable_sandbox, &input.jail, |config| {
        let shows = Shows {
            binds: config_file.into_iter().collect(),
            ..Shows::default()
        };
        sandbox::device_jail_showing(config, "input_device_vfio_user", &shows)
    })?;
    sandbox::serve(socket, jail, &[source.as_raw_fd()], move |fd| {
        let factory = vfio_user_backend::virtio_pci_factory(move || input_device(&option));
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

/// Connects to `option`'s event socket (opens its evdev device, read-write for the grab) and
/// names it in `option` by descriptor. The returned descriptor must stay open while serving.
fn open_before_jail(option: &mut InputDeviceOption) -> anyhow::Result<OwnedFd> {
    use InputDeviceOption::*;
    let source: OwnedFd = match option {
        Evdev { path } => OpenOptions::new()
            .read(true)
            .write(true)
            .open(&*path)
            .with_context(|| format!("opening {}", path.display()))?
            .into(),
        Keyboard { path }
        | Mouse { path }
        | Rotary { path }
        | Switches { path }
        | MultiTouch { path, .. }
        | SingleTouch { path, .. }
        | Trackpad { path, .. }
        | MultiTouchTrackpad { path, .. }
        | Custom { path, .. } => UnixStream::connect(&*path)
            .with_context(|| format!("connecting to {}", path.display()))?
            .into(),
    };
    let (Evdev { path }
    | Keyboard { path }
    | Mouse { path }
    | Rotary { path }
    | Switches { path }
    | MultiTouch { path, .. }
    | SingleTouch { path, .. }
    | Trackpad { path, .. }
    | MultiTouchTrackpad { path, .. }
    | Custom { path, .. }) = option;
    *path = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
    Ok(source)
}

/// crosvm's virtio-input for `option`, built by the helpers `crosvm run --input` uses (as the
/// first device of its kind, without a sandbox of their own).
fn input_device(option: &InputDeviceOption) -> anyhow::Result<Box<dyn VirtioDevice>> {
    let protection = ProtectionType::Unprotected;
    let size = |width: &Option<u32>, height: &Option<u32>| {
        (
            width.unwrap_or(DEFAULT_TOUCH_DEVICE_WIDTH),
            height.unwrap_or(DEFAULT_TOUCH_DEVICE_HEIGHT),
        )
    };
    let stub = match option {
        // Not crosvm's `create_vinput_device`, which opens the path as a file: a duplicate of
        // the device opened before the jail.
        InputDeviceOption::Evdev { path } => {
            let file = open_file_or_duplicate(path, OpenOptions::new().read(true).write(true))
                .with_context(|| format!("opening {}", path.display()))?;
            let input = virtio::input::new_evdev(file, virtio::base_features(protection))
                .context("failed to set up input device")?;
            return Ok(Box::new(input));
        }
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
