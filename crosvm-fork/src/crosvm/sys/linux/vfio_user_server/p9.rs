// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server 9p`: virtio-9p (crosvm's p9 server) on a host directory,
//! from a child whose root is that directory.
//!
//! crosvm's `create_9p_device` builds the device before its jail, since the p9 server opens
//! `/proc` when it is made, and pivots the jail into the shared directory. A vfio-user server
//! builds a device for every client, inside its jail: so the jail's root is an empty tmpfs
//! showing the shared directory (at its host path) and a `/proc` of its own, the child keeps a
//! descriptor of that root and then confines itself (chroot) to the shared directory, and each
//! device is made on a short-lived thread that has its own root (`unshare(CLONE_FS)`), the
//! tmpfs one, where `/proc` is found. Every other thread, the device's workers among them, has
//! the shared directory as its root, so that the guest's `..` stops there as it does in crosvm.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::RawDescriptor;
use devices::vfio_user_backend;
use devices::virtio::base_features;
use devices::virtio::VirtioDevice;
use devices::virtio::P9;
use hypervisor::ProtectionType;
use jail::create_sandbox_minijail;
use jail::mount_proc;
use jail::JailConfig;
use jail::RunAsUser;
use jail::SandboxConfig;

use super::sandbox;
use super::sandbox::ServerSocket;
use super::socket_path;
use crate::crosvm::sys::config::SharedDir;
use crate::crosvm::sys::config::SharedDirKind;

#[derive(FromArgs)]
#[argh(subcommand, name = "9p")]
/// virtio-9p, crosvm's p9 server on a host directory, served by a child confined to it
/// (namespaces and chroot; needs user namespaces or root)
pub(super) struct P9Options {
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
    #[argh(option, arg_name = "PATH:TAG[:key=value...]")]
    /// the directory and the tag the guest mounts it by, as for `crosvm run --shared-dir` of
    /// type 9p (the default): e.g. uidmap=MAP, gidmap=MAP, uid=UID, gid=GID, ascii_casefold
    shared_dir: SharedDir,
    #[argh(switch)]
    /// disable sandboxing: serve from this process, which the p9 server then confines to the
    /// directory by path only
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

pub(super) fn run(p9: P9Options, poll: Duration) -> anyhow::Result<()> {
    let shared = p9.shared_dir;
    if shared.kind != SharedDirKind::P9 {
        bail!(
            "--shared-dir must be of type 9p here: `crosvm device vfio-user-server fs` serves fs"
        );
    }
    let path = socket_path(p9.socket, p9.socket_path)?;
    let socket = ServerSocket::open(path.as_deref(), p9.fd)?;
    let features = base_features(ProtectionType::Unprotected);
    let tag = shared.tag.clone();
    if p9.disable_sandbox {
        // As crosvm without a jail: the server's root is the directory itself.
        let mut cfg = shared.p9_cfg;
        cfg.root = shared.src.clone().into();
        return sandbox::serve(socket, None, &[], move |fd| {
            let factory = vfio_user_backend::virtio_pci_factory(move || {
                let p9 = P9::new(features, &tag, cfg.clone()).context("creating the 9p device")?;
                Ok(Box::new(p9) as Box<dyn VirtioDevice>)
            });
            vfio_user_backend::run_server(None, Some(fd), factory, poll)
        });
    }
    let src = shared
        .src
        .canonicalize()
        .with_context(|| format!("the shared directory {}", shared.src.display()))?;
    let jail = p9_jail(&p9.jail, &shared, &src)?;
    // The workers resolve the root at the guest's attach, with the shared directory as theirs.
    let mut cfg = shared.p9_cfg;
    cfg.root = Path::new("/").into();
    sandbox::serve(socket, Some(jail), &[], move |fd| {
        let sandbox_root = File::open("/").context("opening the sandbox's root")?;
        confine_to(&src).context("confining the server to the shared directory")?;
        let factory = vfio_user_backend::virtio_pci_factory(move || {
            let cfg = cfg.clone();
            let p9 = with_root(&sandbox_root, || P9::new(features, &tag, cfg))?
                .context("creating the 9p device")?;
            Ok(Box::new(p9) as Box<dyn VirtioDevice>)
        });
        vfio_user_backend::run_server(None, Some(fd), factory, poll)
    })
}

/// The jail of `create_9p_device` (its user namespace, maps and identity, capabilities kept
/// within it, mounts propagated from the host), but rooted in an empty tmpfs that shows the
/// shared directory at its host path and a `/proc` of the jail's own pid namespace.
fn p9_jail(
    config: &JailConfig,
    shared: &SharedDir,
    src: &Path,
) -> anyhow::Result<minijail::Minijail> {
    sandbox::check_pivot_root(config)?;
    let mut sandbox = SandboxConfig::new(config, "9p_device_vfio_user");
    sandbox.limit_caps = false;
    sandbox.ugid_map = Some((&shared.uid_map, &shared.gid_map));
    sandbox.remount_mode = Some(libc::MS_SLAVE);
    sandbox.bind_mounts = true;
    sandbox.run_as = match shared.ugid {
        (None, None) => RunAsUser::Unspecified,
        (uid, gid) => RunAsUser::Specified(uid.unwrap_or(0), gid.unwrap_or(0)),
    };
    sandbox::check_namespaces(true)?;
    let max_open_files = base::linux::max_open_files()
        .context("failed to get max number of open files")?
        .rlim_max;
    let mut jail = create_sandbox_minijail(&config.pivot_root, max_open_files, &sandbox)
        .context("creating the sandbox; --disable-sandbox serves unconfined")?;
    jail.namespace_ipc();
    jail.mount_bind(src, src, true)
        .with_context(|| format!("showing {} in the sandbox", src.display()))?;
    mount_proc(&mut jail).context("mounting /proc in the sandbox")?;
    Ok(jail)
}

/// Makes `dir` this process's root and working directory. Run before any thread is started, so
/// that every thread shares that root.
fn confine_to(dir: &Path) -> anyhow::Result<()> {
    let dir = CString::new(dir.as_os_str().as_bytes()).context("a path with a NUL")?;
    // SAFETY: `dir` is a NUL-terminated string that outlives the calls; no memory is written.
    let ret = unsafe {
        if libc::chroot(dir.as_ptr()) == 0 {
            libc::chdir(c"/".as_ptr())
        } else {
            -1
        }
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Runs `make` on a thread whose root (and working directory) is the directory `root`, leaving
/// every other thread's alone: the thread stops sharing its file system context first.
fn with_root<T: Send>(root: &File, make: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `root` is an open directory for the duration of the calls, which touch
                // no memory; after unshare(CLONE_FS) they change this thread's root only.
                let ret = unsafe {
                    if libc::unshare(libc::CLONE_FS) != 0
                        || libc::fchdir(root.as_raw_fd()) != 0
                        || libc::chroot(c".".as_ptr()) != 0
                    {
                        -1
                    } else {
                        0
                    }
                };
                if ret != 0 {
                    return Err(anyhow::Error::from(std::io::Error::last_os_error())
                        .context("entering the sandbox's root on a thread of its own"));
                }
                Ok(make())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the thread making the device panicked"))?
    })
}
