// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server input`: virtio-input, given as for `crosvm run --input`.

use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;

use super::super::device_helpers::create_custom_device;
use super::super::device_helpers::create_keyboard_device;
use super::super::device_helpers::create_mouse_device;
use super::super::device_helpers::create_multi_touch_device;
use super::super::device_helpers::create_multitouch_trackpad_device;
use super::super::device_helpers::create_rotary_device;
use super::super::device_helpers::create_single_touch_device;
use super::super::device_helpers::create_switches_device;
use super::super::device_helpers::create_trackpad_device;
use super::super::device_helpers::create_vinput_device;
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
    /// rotary[...], custom[path=..,config-path=..]. Event sockets are connected to again for
    /// every client
    input: InputDeviceOption,
}

pub(super) fn run(input: InputOptions) -> anyhow::Result<()> {
    let path = socket_path(input.socket, input.socket_path)?;
    let option = input.input;
    let factory = vfio_user_backend::virtio_pci_factory(move || input_device(&option));
    vfio_user_backend::run_server(path.as_deref(), input.fd, factory)
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
