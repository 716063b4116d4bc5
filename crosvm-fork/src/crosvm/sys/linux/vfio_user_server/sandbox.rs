// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Confinement of a served device, the way `crosvm devices` confines its device processes: the
//! socket is bound (and whatever needs privileges opened) here, then a child forked into a
//! minijail serves clients with a seccomp policy of its own
//! (`jail/seccomp/<arch>/<device>_device_vfio_user.policy`), and this process waits for it,
//! passes SIGTERM and SIGINT on, and removes the socket file it bound, which the child cannot
//! reach. `--disable-sandbox` serves from this process instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;
use base::AsRawDescriptor;
use base::FlockOperation;
use base::RawDescriptor;
use base::SignalFd;
use jail::create_sandbox_minijail;
use jail::mount_proc;
use jail::JailConfig;
use jail::SandboxConfig;
use jail::MAX_OPEN_FILES_DEFAULT;
use minijail::Minijail;

/// The server's socket, bound or inherited before any confinement.
pub(super) struct ServerSocket {
    fd: OwnedFd,
    /// The file this process bound, removed when serving ends.
    bound: Option<PathBuf>,
}

impl ServerSocket {
    /// Binds `path`, or takes the inherited socket `fd`: exactly one of them.
    pub(super) fn open(path: Option<&str>, fd: Option<RawDescriptor>) -> anyhow::Result<Self> {
        match (path, fd) {
            (Some(path), None) => {
                let listener =
                    UnixListener::bind(path).with_context(|| format!("binding {path}"))?;
                Ok(ServerSocket {
                    fd: listener.into(),
                    bound: Some(PathBuf::from(path)),
                })
            }
            (None, Some(fd)) => Ok(ServerSocket {
                fd: OwnedFd::from(base::safe_descriptor_from_cmdline_fd(&fd)?),
                bound: None,
            }),
            (Some(_), Some(_)) => {
                bail!("a socket path and a file descriptor cannot both be given")
            }
            (None, None) => {
                bail!("a socket path (--socket-path) or a file descriptor (--fd) is needed")
            }
        }
    }

    pub(super) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for ServerSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.bound {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The jail of a served device, from its options: none with `--disable-sandbox`, else one made
/// by `make` from the `--jail` configuration.
pub(super) fn jail_unless_disabled(
    disable_sandbox: bool,
    config: &JailConfig,
    make: impl FnOnce(&JailConfig) -> anyhow::Result<Minijail>,
) -> anyhow::Result<Option<Minijail>> {
    if disable_sandbox {
        return Ok(None);
    }
    make(config).map(Some)
}

/// A minijail for a device that needs nothing of the host's filesystem, network or
/// capabilities once its descriptors are open: an empty root, new mount, pid, ipc, user and net
/// namespaces, no capabilities, no new privileges, and the seccomp policy `policy`.
pub(super) fn device_jail(config: &JailConfig, policy: &str) -> anyhow::Result<Minijail> {
    device_jail_showing(config, policy, &Shows::default())
}

/// What a device's sandbox shows beyond `device_jail`'s.
#[derive(Default)]
pub(super) struct Shows {
    /// Host paths (directories or files) bind-mounted at the same paths, on a tmpfs root,
    /// writable where the flag says so.
    pub binds: Vec<(PathBuf, bool)>,
    /// A read-only /proc of the sandbox's own pid namespace.
    pub proc: bool,
    /// The host's network namespace, rather than an empty one.
    pub host_network: bool,
}

/// `device_jail`'s jail, showing what `shows` says.
pub(super) fn device_jail_showing(
    config: &JailConfig,
    policy: &str,
    shows: &Shows,
) -> anyhow::Result<Minijail> {
    check_pivot_root(config)?;
    let mut sandbox = SandboxConfig::new(config, policy);
    // A tmpfs over the root, so that the mounts have somewhere to go.
    sandbox.bind_mounts = !shows.binds.is_empty() || shows.proc;
    sandbox.namespace_net = !shows.host_network;
    check_namespaces(!shows.host_network)?;
    let mut jail = create_sandbox_minijail(&config.pivot_root, MAX_OPEN_FILES_DEFAULT, &sandbox)
        .with_context(|| {
            format!("creating the sandbox (policy {policy}); --disable-sandbox serves unconfined")
        })?;
    jail.namespace_ipc();
    for (path, writable) in &shows.binds {
        if !path.is_absolute() {
            bail!("{} must be an absolute path in the sandbox", path.display());
        }
        jail.mount_bind(path, path, *writable)
            .with_context(|| format!("showing {} in the sandbox", path.display()))?;
    }
    if shows.proc {
        mount_proc(&mut jail).context("mounting /proc in the sandbox")?;
    }
    Ok(jail)
}

/// Checks that the sandbox's root (`--jail pivot-root`, crosvm's /var/empty by default) is a
/// directory, naming the ways out if not.
pub(super) fn check_pivot_root(config: &JailConfig) -> anyhow::Result<()> {
    if !config.pivot_root.is_dir() {
        bail!(
            "the sandbox's root {} is not a directory: create it (empty), name another with \
             --jail pivot-root=DIR, or serve unconfined with --disable-sandbox",
            config.pivot_root.display()
        );
    }
    Ok(())
}

/// Checks that the kernel lets this process make the sandbox's namespaces (user, mount, pid, ipc,
/// and net if `net`), by making them in a child that exits at once: minijail aborts the whole
/// process when the kernel refuses them, with neither a word on how to do without nor the
/// socket file removed.
pub(super) fn check_namespaces(net: bool) -> anyhow::Result<()> {
    let mut flags =
        libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC;
    if net {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: this process has started no threads yet (the sandbox's own fork needs that too), and
    // the child only calls unshare and _exit, both async-signal-safe.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!(
            "forking to check the sandbox's namespaces: {}",
            std::io::Error::last_os_error()
        );
    }
    if pid == 0 {
        // SAFETY: no memory is touched; errno is read right after the call that set it.
        let code = unsafe {
            if libc::unshare(flags) == 0 {
                0
            } else {
                *libc::__errno_location()
            }
        };
        // SAFETY: ends the child without running anything of the parent's.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: a live local for the status; `pid` is our child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!(
            "waiting for the namespace check: {}",
            std::io::Error::last_os_error()
        );
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, errno) => bail!(
            "the kernel refuses the sandbox's namespaces ({}; a limit such as \
             user.max_user_namespaces, or a sandbox around this process): --disable-sandbox \
             serves unconfined",
            std::io::Error::from_raw_os_error(errno)
        ),
        _ => bail!("the namespace check ended abnormally (status {status:#x})"),
    }
}

/// Serves with `serve`, which gets the server socket's descriptor: in a child forked into
/// `jail`, keeping only the standard streams, the socket, syslog's descriptors and `keep`, or
/// in this process without a jail. Returns once serving has ended; the socket file this process
/// bound is gone by then.
///
/// The server takes the socket, and the devices the descriptors of `keep` (named
/// `/proc/self/fd/N`), as crosvm takes inherited descriptors: only without close-on-exec, and
/// then duplicated. Forking into the jail clears the flag; without a jail it is cleared here.
pub(super) fn serve(
    socket: ServerSocket,
    jail: Option<Minijail>,
    keep: &[RawDescriptor],
    serve: impl FnOnce(RawDescriptor) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(jail) = jail else {
        for &fd in keep.iter().chain([&socket.as_raw_fd()]) {
            base::clear_descriptor_cloexec(&base::Descriptor(fd))
                .context("clearing close-on-exec of a descriptor the server takes")?;
        }
        return serve(socket.as_raw_fd());
    };
    let mut keep_rds = vec![0, 1, 2, socket.as_raw_fd()];
    keep_rds.extend_from_slice(keep);
    base::syslog::push_descriptors(&mut keep_rds);
    keep_rds.sort_unstable();
    keep_rds.dedup();
    // SAFETY: this process has started no threads yet (minijail checks, and fails otherwise),
    // and the child only uses the descriptors it keeps.
    let pid = unsafe { jail.fork(Some(&keep_rds)) }.context(
        "failed to fork the sandboxed server (--disable-sandbox serves unconfined, if the kernel \
         refuses the namespaces)",
    )?;
    if pid == 0 {
        // SAFETY: no pointers; the child ends with a parent that could no longer pass signals.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        let fd = socket.as_raw_fd();
        // The parent removes the socket file; this copy of it must not try (it cannot reach the
        // file from the jail anyway).
        std::mem::forget(socket);
        let result = serve(fd);
        if let Err(e) = &result {
            base::error!("vfio-user server: {e:#}");
        }
        std::process::exit(if result.is_ok() { 0 } else { 1 });
    }
    let status = wait_passing_signals(pid);
    drop(socket);
    match status? {
        0 => Ok(()),
        code if code == 128 + libc::SIGSYS => bail!(
            "the sandboxed server was killed by signal {} (SIGSYS: a seccomp violation; --jail \
             seccomp-log-failures=true logs them instead)",
            libc::SIGSYS
        ),
        code if code > 128 => bail!("the sandboxed server was killed by signal {}", code - 128),
        code => bail!("the sandboxed server ended with status {code}"),
    }
}

/// Waits for child `pid`, sending it SIGTERM when this process gets SIGTERM or SIGINT. Returns
/// its exit code (128 + the signal if a signal ended it).
pub(super) fn wait_passing_signals(pid: libc::pid_t) -> anyhow::Result<i32> {
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
                "waiting for the sandboxed server: {}",
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

/// Opens the disk image at `path` before any jail (writable unless `read_only`), locks it if
/// `lock` as `crosvm run` does, and points `path` at the open file (`/proc/self/fd/N`, which
/// crosvm's disk code opens as a duplicate of it): each client's device then works on a
/// duplicate, and the duplicates share the lock, so `lock` is cleared. The file must stay open
/// (and be kept across the jail's fork) while the server serves.
pub(super) fn open_image(
    path: &mut PathBuf,
    read_only: bool,
    lock: &mut bool,
) -> anyhow::Result<File> {
    let image = File::options()
        .read(true)
        .write(!read_only)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if *lock {
        let operation = if read_only {
            FlockOperation::LockShared
        } else {
            FlockOperation::LockExclusive
        };
        base::flock(&image, operation, true)
            .with_context(|| format!("locking {}", path.display()))?;
        *lock = false;
    }
    *path = PathBuf::from(format!("/proc/self/fd/{}", image.as_raw_fd()));
    Ok(image)
}
