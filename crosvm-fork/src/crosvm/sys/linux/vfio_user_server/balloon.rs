// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server balloon`: virtio-balloon, served from a sandbox.
//!
//! The client's RAM arrives as shared files in its DMA maps, so the pages the guest gives up
//! (inflating, or reporting free pages) go back to the host by punching holes in those files
//! where crosvm's VM would return them itself; see `vfio_user_backend::VmServices`. Deflating
//! needs nothing: a page comes back when the guest touches it.
//!
//! The balloon's target comes from the host as for `crosvm run`: `--control-socket PATH` takes
//! the VM control requests of `crosvm balloon SIZE PATH`, `crosvm balloon_stats PATH` and
//! `crosvm balloon_ws PATH`, and passes them to the device serving the current client.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::Context;
use argh::FromArgs;
use base::error;
use base::info;
use base::AsRawDescriptor;
use base::Descriptor;
use base::Event;
use base::EventToken;
use base::RawDescriptor;
use base::Tube;
use base::TubeError;
use base::UnixSeqpacketListener;
use base::WaitContext;
use base::WorkerThread;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::Balloon;
use devices::virtio::BalloonFeatures;
use hypervisor::ProtectionType;
use jail::JailConfig;
use vm_control::BalloonTube;
use vm_control::VmRequest;
use vm_control::VmResponse;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;

#[argh_helpers::pad_description_for_argh]
#[derive(FromArgs)]
#[argh(subcommand, name = "balloon")]
/// virtio-balloon, returning the pages the guest gives up to the host, served from a sandbox
pub(super) struct BalloonOptions {
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
    #[argh(option, arg_name = "PATH")]
    /// control socket to listen on for `crosvm balloon SIZE PATH`, `crosvm balloon_stats PATH`
    /// and `crosvm balloon_ws PATH`, as `crosvm run --socket` does. Without it the balloon stays
    /// deflated and only free page reporting returns pages
    control_socket: Option<String>,
    #[argh(switch)]
    /// enable page reporting in balloon: the guest reports free pages, which go back to the host
    balloon_page_reporting: bool,
    #[argh(switch)]
    /// enable working set reporting in balloon.
    balloon_ws_reporting: bool,
    #[argh(option, arg_name = "N", default = "4")]
    /// set number of WS bins to use (default = 4).
    balloon_ws_num_bins: u8,
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

/// Removes the control socket's file, which this process bound, when serving ends.
struct BoundControlSocket(String);

impl Drop for BoundControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub(super) fn run(options: BalloonOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(options.socket, options.socket_path)?;
    let features = (options.balloon_page_reporting as u64) << BalloonFeatures::PageReporting as u64
        | (options.balloon_ws_reporting as u64) << BalloonFeatures::WSReporting as u64;
    let ws_num_bins = options.balloon_ws_num_bins;
    let socket = ServerSocket::open(path.as_deref(), options.fd)?;
    let (control, _bound) = match options.control_socket {
        Some(path) => {
            let listener = UnixSeqpacketListener::bind(&path)
                .with_context(|| format!("binding the control socket {path}"))?;
            (Some(listener), Some(BoundControlSocket(path)))
        }
        None => (None, None),
    };
    let jail = sandbox::jail_unless_disabled(options.disable_sandbox, &options.jail, |config| {
        sandbox::device_jail(config, "balloon_device_vfio_user")
    })?;
    let keep: Vec<_> = control.iter().map(|l| l.as_raw_descriptor()).collect();
    sandbox::serve(socket, jail, &keep, move |fd| {
        let (devices, new_devices) = mpsc::channel();
        let new_device = Event::new().context("event")?;
        let announce = control.is_some();
        let _control = match control {
            Some(listener) => {
                let new_device = new_device.try_clone().context("event")?;
                Some(WorkerThread::start("v_balloon_control", move |kill| {
                    if let Err(e) = answer_control(listener, new_devices, new_device, kill) {
                        error!("balloon control socket: {e:#}");
                    }
                }))
            }
            None => None,
        };
        let factory = vfio_user_backend::virtio_pci_factory_with_memory_client(move |memory| {
            let (host, device) = Tube::pair().context("balloon tube")?;
            let balloon = Balloon::new(
                base_features(ProtectionType::Unprotected),
                device,
                memory,
                None,
                0,
                features,
                #[cfg(feature = "registered_events")]
                None,
                ws_num_bins,
            )
            .context("failed to create the balloon device")?;
            // Without a control socket nobody sends commands: the host end just goes.
            if announce {
                let _ = devices.send(host);
                new_device.signal().context("event")?;
            }
            Ok(Box::new(balloon))
        });
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

#[derive(EventToken, Clone, Copy, PartialEq, Eq)]
enum Token {
    Kill,
    Listener,
    NewDevice,
    Device,
    Connection(usize),
}

/// Answers the control socket's clients with the balloon device of the current vfio-user client,
/// as crosvm's VM control loop does with its balloon: commands go through a `BalloonTube`, and
/// its answers go back to whoever asked. A device built for a new client replaces the previous
/// one; requests still waiting on the previous one are answered with an error.
fn answer_control(
    listener: UnixSeqpacketListener,
    devices: Receiver<Tube>,
    new_device: Event,
    kill: Event,
) -> anyhow::Result<()> {
    let wait_ctx = WaitContext::build_with(&[
        (&kill, Token::Kill),
        (&listener, Token::Listener),
        (&new_device, Token::NewDevice),
    ])
    .context("wait context")?;
    let mut balloon: Option<(BalloonTube, Descriptor)> = None;
    let mut connections: BTreeMap<usize, Tube> = BTreeMap::new();
    let mut waiting: BTreeSet<usize> = BTreeSet::new();
    let mut next_key = 0;
    loop {
        for event in wait_ctx.wait().context("wait")?.iter() {
            match event.token {
                Token::Kill => return Ok(()),
                Token::Listener => {
                    let socket = listener.accept().context("accept")?;
                    let tube = Tube::try_from(socket).context("control connection")?;
                    wait_ctx.add(&tube, Token::Connection(next_key))?;
                    connections.insert(next_key, tube);
                    next_key += 1;
                }
                Token::NewDevice => {
                    new_device.wait().context("event")?;
                    while let Ok(tube) = devices.try_recv() {
                        if let Some((_, old)) = balloon.take() {
                            wait_ctx.delete(&old)?;
                        }
                        let why = "the balloon device was replaced: a new client connected";
                        answer_all(&mut waiting, &connections, why);
                        let descriptor = Descriptor(tube.as_raw_descriptor());
                        wait_ctx.add(&descriptor, Token::Device)?;
                        balloon = Some((BalloonTube::new(tube), descriptor));
                    }
                }
                Token::Device => {
                    let Some((tube, descriptor)) = balloon.as_mut() else {
                        continue;
                    };
                    match tube.recv() {
                        Ok(responses) => {
                            for (response, key) in responses {
                                waiting.remove(&key);
                                reply(&connections, key, &response);
                            }
                        }
                        // The device is gone with its client.
                        Err(e) => {
                            info!("balloon device gone: {e:#}");
                            wait_ctx.delete(descriptor)?;
                            balloon = None;
                            let why = "the balloon device is gone with its client";
                            answer_all(&mut waiting, &connections, why);
                        }
                    }
                }
                Token::Connection(key) => {
                    let Some(connection) = connections.get(&key) else {
                        continue;
                    };
                    let request = match connection.recv::<VmRequest>() {
                        Ok(request) => request,
                        Err(e) => {
                            if !matches!(e, TubeError::Disconnected) {
                                info!("control connection: {e}");
                            }
                            wait_ctx.delete(connection)?;
                            connections.remove(&key);
                            waiting.remove(&key);
                            continue;
                        }
                    };
                    let response = match (request, balloon.as_mut()) {
                        (VmRequest::BalloonCommand(command), Some((tube, _))) => {
                            match tube.send_cmd(command, Some(key)) {
                                Some((response, key)) => Some((response, key)),
                                None => {
                                    waiting.insert(key);
                                    None
                                }
                            }
                        }
                        // No client yet: no device.
                        (VmRequest::BalloonCommand(_), None) => {
                            Some((VmResponse::Err(base::Error::new(libc::ENOTCONN)), key))
                        }
                        _ => Some((VmResponse::Err(base::Error::new(libc::ENOTSUP)), key)),
                    };
                    if let Some((response, key)) = response {
                        reply(&connections, key, &response);
                    }
                }
            }
        }
    }
}

/// Fails every request waiting on a balloon device that is gone.
fn answer_all(waiting: &mut BTreeSet<usize>, connections: &BTreeMap<usize, Tube>, why: &str) {
    for key in std::mem::take(waiting) {
        reply(connections, key, &VmResponse::ErrString(why.to_string()));
    }
}

fn reply(connections: &BTreeMap<usize, Tube>, key: usize, response: &VmResponse) {
    if let Some(connection) = connections.get(&key) {
        if let Err(e) = connection.send(response) {
            info!("control connection: {e}");
        }
    }
}
