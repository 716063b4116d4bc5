// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server fs`: virtio-fs, from a child jailed into the shared directory.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use base::Tube;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::device_constants::fs::FS_MAX_TAG_LEN;
use devices::virtio::fs::passthrough::PassthroughFs;
use devices::virtio::fs::Config as FsConfig;
use devices::virtio::fs::Fs;
use devices::virtio::VirtioDevice;
use hypervisor::ProtectionType;
use jail::create_base_minijail;
use jail::create_sandbox_minijail;
use jail::JailConfig;
use jail::SandboxConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;

#[derive(FromArgs)]
#[argh(subcommand, name = "fs")]
/// virtio-fs, as for the vhost-user `crosvm device fs`: a host directory shared with the guest,
/// served by a child process sandboxed into it (pivot_root; root needed)
pub(super) struct FsOptions {
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
    #[argh(switch)]
    /// disable sandboxing as `crosvm device fs --disable-sandbox` does: the child only pivots
    /// into the shared directory, with all the privileges of this process and no seccomp filter
    disable_sandbox: bool,
    #[argh(
        option,
        arg_name = "jail configuration",
        default = "Default::default()"
    )]
    /// set up the jail configuration (its root is the shared directory: pivot-root is unused).
    /// Possible key values:
    ///     seccomp-policy-dir=/path - Path to seccomp .policy files
    ///     seccomp-log-failures=(true|false) - Log seccomp filter
    ///         failures instead of them being fatal.
    jail: JailConfig,
}

pub(super) fn run(fs: FsOptions, poll: Duration) -> anyhow::Result<()> {
    let path = socket_path(fs.socket, fs.socket_path)?;
    let jail = (!fs.disable_sandbox).then_some(&fs.jail);
    run_fs_server(
        path.as_deref(),
        fs.fd,
        &fs.shared_dir,
        fs.tag,
        fs.cfg.unwrap_or_default(),
        jail,
        poll,
    )
}

/// Serves virtio-fs on `shared_dir` from a child jailed into it, as crosvm jails its fs device:
/// the socket is bound and /proc opened here, the child pivots into the directory and builds a
/// device for every client with that /proc. The parent waits for the child, passes SIGTERM and
/// SIGINT on, and removes the socket file it bound (the child cannot reach it).
///
/// With `jail` (the default), the child is sandboxed as `crosvm device fs` sandboxes its own:
/// new pid, user (the current user mapped to itself), mount, net and ipc namespaces, no new
/// privileges, and a seccomp filter. It keeps its capabilities inside its user namespace: the
/// passthrough file system switches its credentials to each request's.
fn run_fs_server(
    socket_path: Option<&str>,
    fd: Option<RawDescriptor>,
    shared_dir: &Path,
    tag: String,
    cfg: FsConfig,
    jail: Option<&JailConfig>,
    poll: Duration,
) -> anyhow::Result<()> {
    if tag.len() > FS_MAX_TAG_LEN {
        bail!("fs tag is too long: {} (max {FS_MAX_TAG_LEN})", tag.len());
    }
    let socket = ServerSocket::open(socket_path, fd)?;
    let proc = PassthroughFs::open_proc().context("opening /proc")?;
    let max_open_files = base::linux::max_open_files()
        .context("failed to get max number of open files")?
        .rlim_max;
    let jail = match jail {
        None => create_base_minijail(shared_dir, max_open_files)?,
        Some(config) => {
            let mut sandbox = SandboxConfig::new(config, "fs_device_vfio_user");
            sandbox.limit_caps = false;
            // The user serving is root in the sandbox's user namespace, so that an unprivileged
            // user can serve too: minijail enters the namespace as its root.
            // SAFETY: no memory is touched.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            let (uid_map, gid_map) = (format!("0 {uid} 1"), format!("0 {gid} 1"));
            sandbox.ugid_map = Some((&uid_map, &gid_map));
            sandbox.remount_mode = Some(libc::MS_SLAVE);
            sandbox::check_namespaces(true)?;
            let mut jail = create_sandbox_minijail(shared_dir, max_open_files, &sandbox)
                .context("creating the sandbox; --disable-sandbox serves without it")?;
            jail.namespace_ipc();
            jail
        }
    };
    let keep = [proc.as_raw_fd()];
    sandbox::serve(socket, Some(jail), &keep, move |fd| {
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
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}
