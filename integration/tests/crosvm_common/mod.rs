// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What the QEMU guest checks of crosvm's served devices share: the crosvm binary under test
//! (CROSVM_BIN; a check is skipped without it), booting a guest against a server, and reading
//! the confinement of the process that serves it.

#![allow(dead_code)]

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::checks::skip;
use integration::checks::Checked;
use integration::checks::NotPassed;
use integration::guest;
use integration::guest::compositor::Compositor;
use integration::guest::shell_quote;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::guest::GuestRun;
use integration::guest::Responder;
use integration::guest::Servers;
use integration::procfs::descendants;
use integration::sandbox::jail_value;
use integration::sandbox::logging_policies;
use integration::sandbox::KernelLog;

/// The crosvm binary to test, from CROSVM_BIN; the check is skipped without one.
pub fn crosvm() -> Result<PathBuf, NotPassed> {
    match std::env::var_os("CROSVM_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => Err(skip(
            "needs CROSVM_BIN: a crosvm built with upstream-patches/, as the README says",
        )),
    }
}

/// The crosvm binary to test if it serves `device` over vfio-user; the check is skipped
/// otherwise.
pub fn crosvm_serving(device: &str) -> Result<PathBuf, NotPassed> {
    let crosvm = crosvm()?;
    if !serves(&crosvm, device)? {
        return Err(skip(format!("this crosvm serves no {device}")));
    }
    Ok(crosvm)
}

/// Whether this crosvm serves `device` over vfio-user.
pub fn serves(crosvm: &Path, device: &str) -> Result<bool> {
    let help = Command::new(crosvm)
        .args(["device", "vfio-user-server", "--help"])
        .output()?;
    let text = String::from_utf8_lossy(&help.stdout);
    Ok(text
        .lines()
        .any(|line| line.trim_start().starts_with(device)))
}

/// `script` after guest/report-device.sh, which reports the virtio function and its drivers.
pub fn with_device_report(script: &str) -> String {
    format!("{}\n{script}", include_str!("../../guest/report-device.sh"))
}

pub fn boot(
    name: &str,
    server: String,
    script: &str,
    modules: &[&str],
    append: &str,
) -> Result<GuestRun> {
    boot_in(name, server, script, modules, append, None)
}

/// `boot`, checking that the server is confined as `jail` says, if given, while it serves.
pub fn boot_in(
    name: &str,
    server: String,
    script: &str,
    modules: &[&str],
    append: &str,
    jail: Option<&Jail>,
) -> Result<GuestRun> {
    let env = GuestEnv::prepare()?;
    let boot = Boot {
        name: name.to_string(),
        servers: vec![server],
        script: script.to_string(),
        modules: modules.iter().map(|m| m.to_string()).collect(),
        kernel_append: append.to_string(),
        echo_prefix: Some(format!("[{name}] ")),
        timeout: Duration::from_secs(300),
        ..Boot::default()
    };
    let run = match jail {
        Some(jail) => run_confined(&env, &boot, jail)?,
        None => guest::run(&env, &boot)?,
    };
    run.check()?;
    Ok(run)
}

/// The sandbox options of a served device, its root an empty directory of ours (and, when
/// CROSVM_SECCOMP_POLICIES is set, its policies as text with violations logged).
pub fn sandboxed() -> Result<String> {
    Ok(format!("--jail {}", shell_quote(&jail_value()?)))
}

/// The lines of /proc/`pid`/status for `keys`, as "Key:\tvalue".
pub fn status_lines(pid: u32, keys: &[&str]) -> Result<Vec<String>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(keys
        .iter()
        .filter_map(|key| {
            status
                .lines()
                .find(|line| line.split(':').next() == Some(key))
                .map(str::to_string)
        })
        .collect())
}

/// The process that serves the guest for the server started as `pid`: the one below it with a
/// seccomp filter, or itself.
pub fn serving_process(pid: u32) -> Result<u32> {
    // The server binds its socket before it forks into the sandbox: give the child a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for candidate in std::iter::once(pid).chain(descendants(pid)) {
            let seccomp = status_lines(candidate, &["Seccomp"]).unwrap_or_default();
            if seccomp.iter().any(|l| l.ends_with('2')) {
                return Ok(candidate);
            }
        }
        if Instant::now() > deadline {
            bail!("no process below {pid} runs with a seccomp filter");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a sandboxed server may see of the host.
#[derive(Default)]
pub struct Jail {
    /// The host paths bind-mounted into its root, at the same paths.
    pub shown: Vec<PathBuf>,
    /// gpu, wl: also the private directory its relays listen in, named after the device and the
    /// process that forked the sandbox.
    pub relay_dir: Option<&'static str>,
    /// gpu: a /proc of its own.
    pub proc: bool,
    /// net: it stays in the network namespace of the process that started it.
    pub host_network: bool,
    /// fs: its root is this host directory, which it shares.
    pub root: Option<PathBuf>,
    /// fs: it keeps its capabilities, in a user namespace of its own that maps one user.
    pub own_capabilities: bool,
    /// The user it runs as, seen from the host, where the check expects one.
    pub uid: Option<u32>,
}

impl Jail {
    /// A root with nothing of the host in it.
    pub fn empty() -> Jail {
        Jail::default()
    }

    pub fn showing(paths: &[&Path]) -> Jail {
        Jail {
            shown: paths.iter().map(|p| p.to_path_buf()).collect(),
            ..Jail::default()
        }
    }
}

/// A served device's confinement, read from /proc while it serves a guest: a seccomp filter, no
/// new privileges, no capabilities, mount, pid, ipc, user and (but for net) net namespaces that
/// are not those of the process that started it, and a root that shows nothing of the host but
/// what `jail` says.
pub fn assert_confined(pid: u32, name: &str, jail: &Jail) -> Result<()> {
    let lines = status_lines(pid, &["Seccomp", "NoNewPrivs", "CapEff"])?;
    eprintln!("[{name}] serving process {pid}: {}", lines.join(", "));
    if jail.own_capabilities {
        assert_eq!(lines[..2], ["Seccomp:\t2", "NoNewPrivs:\t1"], "{name}");
        let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
        eprintln!("[{name}] its uid_map: {}", uid_map.trim());
        assert_eq!(
            uid_map.lines().count(),
            1,
            "{name}: maps one user: {uid_map}"
        );
        assert!(
            uid_map.split_whitespace().nth(2) == Some("1"),
            "{name}: {uid_map}"
        );
    } else {
        assert_eq!(
            lines,
            ["Seccomp:\t2", "NoNewPrivs:\t1", "CapEff:\t0000000000000000"],
            "{name}"
        );
    }
    if let Some(uid) = jail.uid {
        let line = status_lines(pid, &["Uid"])?;
        let real = line.first().and_then(|l| l.split_whitespace().nth(1));
        assert_eq!(
            real,
            Some(uid.to_string().as_str()),
            "{name}: runs as {line:?}"
        );
    }
    let parent = status_lines(pid, &["PPid"])?;
    let parent = parent
        .first()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("no PPid")?
        .to_string();
    for ns in ["mnt", "pid", "ipc", "user", "net"] {
        let launcher = std::fs::read_link(format!("/proc/{parent}/ns/{ns}"))?;
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))?;
        if ns == "net" && jail.host_network {
            assert_eq!(launcher, theirs, "{name}: net keeps its launcher's network");
        } else {
            assert_ne!(
                launcher, theirs,
                "{name}: the {ns} namespace is its launcher's"
            );
        }
    }
    let mut shown = jail.shown.clone();
    if let Some(device) = jail.relay_dir {
        shown.push(std::env::temp_dir().join(format!("crosvm-vfio-user-{device}-{parent}")));
    }
    if jail.proc {
        shown.push(PathBuf::from("/proc"));
    }
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    if let Some(dir) = &jail.root {
        let names = |dir: &Path| -> Result<Vec<_>> {
            let mut names = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()?;
            names.sort();
            Ok(names)
        };
        assert_eq!(
            names(&root)?,
            names(dir)?,
            "{name}: its root is {}",
            dir.display()
        );
        return Ok(());
    }
    let mut seen = Vec::new();
    visible_paths(&root, Path::new("/"), &shown, &mut seen)?;
    assert!(
        seen.is_empty(),
        "{name}: its root shows {seen:?}, beyond {shown:?}"
    );
    Ok(())
}

/// Walks `dir` (the path `at` in the server's root) and adds to `seen` what is neither one of
/// `shown` nor on the way to one.
pub fn visible_paths(
    dir: &Path,
    at: &Path,
    shown: &[PathBuf],
    seen: &mut Vec<PathBuf>,
) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = at.join(entry.file_name());
        if shown.contains(&path) {
            continue;
        }
        if shown.iter().any(|s| s.starts_with(&path)) && entry.file_type()?.is_dir() {
            visible_paths(&entry.path(), &path, shown, seen)?;
        } else {
            seen.push(path);
        }
    }
    Ok(())
}

/// Boots `boot` against its server, checking, before the guest starts and after it is gone,
/// that the process serving it is confined as `jail` says and still running.
pub fn run_confined(env: &GuestEnv, boot: &Boot, jail: &Jail) -> Result<GuestRun> {
    let mut servers = Servers::start(env, boot)?;
    let pid = servers.pids()[0];
    let serving = serving_process(pid)?;
    assert_confined(serving, &boot.name, jail)?;
    let run = servers.boot(env, boot)?;
    assert!(servers.all_running()?, "the server survived the guest");
    assert_confined(serving, &boot.name, jail)?;
    Ok(run)
}

/// A served device, sandboxed by default, is confined while it serves a guest: the server
/// `command` (with `{socket}`), the guest `script` and its kernel `modules`, and the result
/// `key` the script must report as `expected`.
pub fn confined_while_serving(
    name: &str,
    command: String,
    script: &str,
    modules: &[&str],
    (key, expected): (&str, &str),
) -> Checked {
    confined_as(
        name,
        command,
        script,
        modules,
        (key, expected),
        &Jail::empty(),
    )
}

/// `confined_while_serving`, the server confined as `jail` says.
pub fn confined_as(
    name: &str,
    command: String,
    script: &str,
    modules: &[&str],
    (key, expected): (&str, &str),
    jail: &Jail,
) -> Checked {
    let env = GuestEnv::prepare()?;
    let boot = Boot {
        name: name.to_string(),
        servers: vec![command],
        script: script.to_string(),
        modules: modules.iter().map(|m| m.to_string()).collect(),
        echo_prefix: Some(format!("[{name}] ")),
        timeout: Duration::from_secs(300),
        ..Boot::default()
    };
    let run = run_confined(&env, &boot, jail)?;
    run.check()?;
    assert_eq!(run.result(key)?, expected);
    Ok(())
}

/// The user ID the unprivileged checks run the server as (nobody).
pub const UNPRIVILEGED_UID: u32 = 65534;

/// What goes before a server command to run it as `uid` (through setpriv), the socket's
/// directory given to that user so that it can bind there.
pub fn as_user(uid: u32) -> String {
    format!(
        "chown {uid} \"$(dirname {{socket}})\" && exec setpriv --reuid={uid} --regid={uid} \
         --clear-groups "
    )
}

/// The checks that get a server killed by its seccomp filter on purpose.
pub const KILLED_ON_PURPOSE: &[&str] = &["crosvm_rng_killed_by_its_policy"];

/// `check`, and when the sandboxes log their seccomp violations (CROSVM_SECCOMP_POLICIES), none
/// in the kernel's log once it is done: the policies are complete for what the guest did.
pub fn no_seccomp_violation(name: &str, check: fn() -> Checked) -> Checked {
    if logging_policies()?.is_none() || KILLED_ON_PURPOSE.contains(&name) {
        return check();
    }
    let mut log = KernelLog::watch()?;
    let result = check();
    let records = log.seccomp_records()?;
    if !records.is_empty() {
        return Err(anyhow::anyhow!(
            "seccomp logged {} violation(s){}:\n{}",
            records.len(),
            match &result {
                Err(NotPassed::Failed(e)) => format!(" (the check failed too: {e:#})"),
                _ => String::new(),
            },
            records.join("\n")
        )
        .into());
    }
    result
}

/// The 1 MiB pattern the guest scripts write: `line` repeated.
pub fn pattern(line: &[u8]) -> Vec<u8> {
    line.iter().copied().cycle().take(1 << 20).collect()
}

/// A scratch directory of the check `name`, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> std::io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vfio-user-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a guest program drawing the pattern (wayland-pattern, wl-pattern) showed: per
/// `@@SHOW` line, the frame once on the compositor's screen, or how the screen differed.
pub type FramesShown = Arc<Mutex<Vec<std::result::Result<u32, String>>>>;

/// Answers each `@@SHOW frame=N width=W height=H` line of such a program once `compositor`
/// shows that frame of the pattern (or never does), recording which in `shown`, with the newline
/// the program waits for before its next frame.
pub fn frames_on_screen<C: Compositor + Send + Sync + 'static>(
    compositor: Arc<C>,
    shown: FramesShown,
) -> Responder {
    Responder(Arc::new(move |line: &str| {
        let rest = line.split("@@SHOW ").nth(1)?;
        let field = |key: &str| -> Option<u32> {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        };
        let (frame, width, height) = (field("frame")?, field("width")?, field("height")?);
        let on_screen = compositor
            .wait_for_frame(width, height, |x, y| {
                guest_programs::pattern(frame, x, y, width, height)
            })
            .map(|()| frame)
            .map_err(|diff| format!("frame {frame} never on screen: {diff}"));
        shown.lock().unwrap().push(on_screen);
        Some("\n".to_string())
    }))
}
