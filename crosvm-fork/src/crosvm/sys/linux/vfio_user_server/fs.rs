// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server fs`: virtio-fs, from a child jailed into the shared directory.

use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;
use argh::FromArgs;
use base::AsRawDescriptor;
use base::RawDescriptor;
use base::SignalFd;
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

use super::socket_path;

#[derive(FromArgs)]
#[argh(subcommand, name = "fs")]
/// virtio-fs, as for the vhost-user `crosvm device fs`: a host directory shared with the guest,
/// served by a child process jailed into it (pivot_root; root needed)
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
}

pub(super) fn run(fs: FsOptions) -> anyhow::Result<()> {
    let path = socket_path(fs.socket, fs.socket_path)?;
    run_fs_server(
        path.as_deref(),
        fs.fd,
        &fs.shared_dir,
        fs.tag,
        fs.cfg.unwrap_or_default(),
    )
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
