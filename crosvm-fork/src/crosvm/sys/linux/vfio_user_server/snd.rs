// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server snd`: virtio-snd on crosvm's host audio backends.

use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use base::Tube;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::snd::common_backend::VirtioSnd;
use devices::virtio::snd::parameters::Parameters as SndParameters;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;

use super::socket_path;
use crate::crosvm::config::from_key_values;

#[derive(FromArgs)]
#[argh(subcommand, name = "snd")]
/// virtio-snd, as for the vhost-user `crosvm device snd`: streams played and captured by a host
/// audio backend
pub(super) struct SndOptions {
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

pub(super) fn run(snd: SndOptions) -> anyhow::Result<()> {
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
