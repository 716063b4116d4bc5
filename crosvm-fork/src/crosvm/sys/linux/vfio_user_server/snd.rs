// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server snd`: virtio-snd on crosvm's host audio backends.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use base::Tube;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::snd::common_backend::VirtioSnd;
use devices::virtio::snd::parameters::Parameters as SndParameters;
use devices::virtio::snd::parameters::StreamSourceBackend;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::JailConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::sandbox::Shows;
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

/// The null backend needs nothing of the host; the file backend's sandbox shows its
/// playback_path directory, where each client's device creates its stream-N.out files. (crosvm
/// builds its sound device before jailing it; this one builds a device per client, inside.)
pub(super) fn run(snd: SndOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(snd.socket, snd.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), snd.fd)?;
    let mut params = snd.config;
    let jail =
        sandbox::jail_unless_disabled(snd.disable_sandbox, &snd.jail, |config| {
            match params.backend {
                StreamSourceBackend::NULL => {
                    sandbox::device_jail(config, "snd_null_device_vfio_user")
                }
                StreamSourceBackend::FILE => {
                    let dir = Path::new(&params.playback_path)
                        .canonicalize()
                        .with_context(|| format!("playback_path {}", params.playback_path))?;
                    params.playback_path = dir.to_string_lossy().into_owned();
                    let shows = Shows {
                        binds: vec![(dir, true)],
                        ..Shows::default()
                    };
                    sandbox::device_jail_showing(config, "snd_file_device_vfio_user", &shows)
                }
                #[allow(unreachable_patterns)]
                backend => bail!(
                    "the sandbox has no policy for the {} backend: --disable-sandbox serves it \
                 unconfined",
                    String::from(backend)
                ),
            }
        })?;
    sandbox::serve(socket, jail, &[], move |fd| serve_snd(fd, params, poll))
}

/// Serves virtio-snd on `params` to the clients of the socket `fd`.
fn serve_snd(fd: RawDescriptor, params: SndParameters, poll: Duration) -> anyhow::Result<()> {
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
    vfio_user_backend::run_server(None, Some(fd), factory, poll)
}
