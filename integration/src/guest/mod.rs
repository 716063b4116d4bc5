// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Boots a Linux guest in QEMU with `vfio-user-pci` devices served by any server commands, runs
//! a shell script in it and collects what the script reports.
//!
//! The guest is a kernel and an initramfs holding busybox, `guest/init` and the script. The
//! script reports with lines on the console:
//!
//! ```text
//! echo "@@RESULT key=value"
//! ```
//!
//! and `/init` ends with `@@DONE status=N`, N being the script's exit status.
//!
//! Everything the boot needs (QEMU 11 with `vfio-user-pci`, the kernel, busybox) comes from a
//! Debian tree built once by `guest/build-chroot.sh` and cached, see [`GuestEnv::prepare`].
//! Each boot leaves its initramfs, console and servers' output in `<cache>/runs/<name>/`.

pub mod compositor;
mod cpio;
mod env;
mod initramfs;
mod process;
pub mod programs;
mod qemu;
mod server;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

pub use self::cpio::CpioWriter;
pub use self::env::resolve_in_root;
use self::env::tail_of_file;
pub use self::env::GuestEnv;
pub use self::env::Qemu;
use self::process::Guarded;
use self::qemu::QemuConfig;
pub use self::server::shell_quote;
pub use self::server::shell_quote_path;
use self::server::RunningServer;

/// One guest boot.
#[derive(Debug, Clone)]
pub struct Boot {
    /// Names the log directory `<cache>/runs/<name>`; concurrent boots need distinct names.
    pub name: String,
    /// Shell commands, each serving one device; `{socket}` is replaced by the socket's path.
    pub servers: Vec<String>,
    /// The shell script the guest runs as `/test.sh` (busybox sh, every applet on PATH).
    pub script: String,
    /// Kernel modules to load before the script; their dependencies are added.
    pub modules: Vec<String>,
    /// Appended to the kernel command line.
    pub kernel_append: String,
    /// QEMU is killed after this long.
    pub timeout: Duration,
    pub memory_mb: u32,
    /// Echo the console to stdout as it arrives, each line after this prefix.
    pub echo_prefix: Option<String>,
    /// Let a guest reboot (QEMU resets the machine) instead of ending the run.
    pub allow_reboot: bool,
    /// Kill QEMU (SIGKILL, as a crash would) when a console line contains this text.
    pub kill_on: Option<String>,
    /// More QEMU arguments, e.g. a built-in device to compare with.
    pub extra_qemu_args: Vec<String>,
    /// Sets QEMU's `x-no-posted-writes` on the vfio-user devices: every BAR write waits for the
    /// server's reply. When no region of a device is mappable, QEMU posts its BAR writes and lets
    /// the vCPU run on while they queue, so a device that reads the guest's RAM (a virtqueue)
    /// can act on a request before the BAR writes the guest made before it have arrived. A BAR
    /// that carries data the device reads, as a trapped shared memory BAR does, needs this.
    pub synchronous_bar_writes: bool,
    /// More files in the initramfs, executable: `(path in the guest, file on the host)`, e.g. a
    /// program from [`programs::build`].
    pub files: Vec<(String, PathBuf)>,
    /// Sees every console line as it arrives; what it returns is typed on the guest's console
    /// (the script's standard input), so a host can take a step when the guest says so.
    pub responder: Option<Responder>,
}

/// Given a console line, what to type on the console, if anything.
pub type RespondFn = dyn Fn(&str) -> Option<String> + Send + Sync;

/// See [`Boot::responder`].
#[derive(Clone)]
pub struct Responder(pub Arc<RespondFn>);

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            name: "guest".to_string(),
            servers: Vec::new(),
            script: String::new(),
            modules: Vec::new(),
            kernel_append: String::new(),
            // A boot takes about ten seconds under TCG; leave room for a loaded machine.
            timeout: Duration::from_secs(180),
            memory_mb: 512,
            echo_prefix: None,
            allow_reboot: false,
            kill_on: None,
            extra_qemu_args: Vec::new(),
            synchronous_bar_writes: false,
            files: Vec::new(),
            responder: None,
        }
    }
}

/// What a boot produced.
#[derive(Debug)]
pub struct GuestRun {
    pub name: String,
    /// The serial console, without carriage returns.
    pub console: String,
    pub qemu_stderr: String,
    /// `@@RESULT key=value` lines; a later line wins.
    pub results: BTreeMap<String, String>,
    /// `@@ERROR` lines from `/init`.
    pub errors: Vec<String>,
    /// The script's exit status from `@@DONE status=N`, if the guest got that far.
    pub done_status: Option<i32>,
    /// QEMU's exit status; `None` if it was killed at the timeout or on `kill_on`.
    pub qemu_status: Option<ExitStatus>,
    /// QEMU was killed because the console showed `Boot::kill_on`.
    pub killed_on_marker: bool,
    pub timeout: Duration,
    /// Servers that exited unsuccessfully while the guest ran.
    pub server_failures: Vec<String>,
    /// Where the console, QEMU's stderr and the servers' output are kept.
    pub log_dir: PathBuf,
}

impl GuestRun {
    /// Success: the script exited 0 and every server stayed up or exited cleanly.
    pub fn succeeded(&self) -> bool {
        self.problem().is_none()
    }

    /// `Ok` on success, else an error naming the log directory with the end of the console.
    pub fn check(&self) -> Result<()> {
        let Some(problem) = self.problem() else {
            return Ok(());
        };
        bail!(
            "guest {}: {problem}\nlogs: {}\n--- end of console ---\n{}\n--- end of QEMU's stderr ---\n{}",
            self.name,
            self.log_dir.display(),
            tail(&self.console, 3000),
            tail(&self.qemu_stderr, 2000),
        )
    }

    /// The value the guest reported for `key`.
    pub fn result(&self, key: &str) -> Result<&str> {
        match self.results.get(key) {
            Some(value) => Ok(value),
            None => bail!(
                "guest {} reported no {key}; it reported {:?} (logs: {})",
                self.name,
                self.results,
                self.log_dir.display()
            ),
        }
    }

    fn problem(&self) -> Option<String> {
        let Some(qemu_status) = self.qemu_status else {
            return Some(format!("killed after {:?}", self.timeout));
        };
        if !self.errors.is_empty() {
            return Some(format!("errors: {}", self.errors.join("; ")));
        }
        match self.done_status {
            None => Some(format!(
                "QEMU exited ({qemu_status}) before the guest reported @@DONE"
            )),
            Some(0) if self.server_failures.is_empty() => None,
            Some(0) => Some(self.server_failures.join("; ")),
            Some(status) => Some(format!("the script exited with {status}")),
        }
    }
}

/// Boots a guest as `boot` says and returns what it reported. Servers and QEMU are always
/// stopped, and the sockets removed, before this returns or unwinds.
pub fn run(env: &GuestEnv, boot: &Boot) -> Result<GuestRun> {
    let mut servers = Servers::start(env, boot)?;
    servers.boot(env, boot)
}

/// Servers that outlive a guest: boot one guest after another against the same server
/// processes, as after a VMM crash or a host-side restart of the VMM.
pub struct Servers {
    servers: Vec<RunningServer>,
    /// Removed on drop, after the servers (declared first) have stopped.
    _sockets: SocketDir,
}

impl Servers {
    /// Starts `boot.servers`, logging to `<cache>/runs/<boot.name>.servers/`.
    pub fn start(env: &GuestEnv, boot: &Boot) -> Result<Servers> {
        let log_dir = fresh_log_dir(env, &format!("{}.servers", boot.name))?;
        let sockets = SocketDir::create()?;
        let servers = start_servers(boot, &sockets, &log_dir)?;
        Ok(Servers {
            servers,
            _sockets: sockets,
        })
    }

    /// The process each server command was started as (`sh -c`, which execs a lone command).
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.process.id()).collect()
    }

    /// Where each server writes its output.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.servers.iter().map(|s| s.log.clone()).collect()
    }

    /// Boots a guest against these servers (`boot.servers` is not used here).
    pub fn boot(&mut self, env: &GuestEnv, boot: &Boot) -> Result<GuestRun> {
        let log_dir = fresh_log_dir(env, &boot.name)?;
        let initramfs = log_dir.join("initramfs.cpio");
        initramfs::write(env, &boot.script, &boot.modules, &boot.files, &initramfs)
            .context("building the initramfs")?;
        let socket_paths: Vec<PathBuf> = self.servers.iter().map(|s| s.socket.clone()).collect();
        let config = QemuConfig {
            initramfs: &initramfs,
            sockets: &socket_paths,
            append: &boot.kernel_append,
            memory_mb: boot.memory_mb,
            allow_reboot: boot.allow_reboot,
            synchronous_bar_writes: boot.synchronous_bar_writes,
            extra_args: &boot.extra_qemu_args,
        };
        let (console, qemu_status, killed_on_marker) = run_qemu(env, boot, &config, &log_dir)?;
        let server_failures = server_failures(&mut self.servers)?;
        let parsed = parse_console(&console);
        Ok(GuestRun {
            name: boot.name.clone(),
            console,
            qemu_stderr: tail_of_file(&log_dir.join("qemu-stderr.log"), 0, 64 * 1024),
            results: parsed.results,
            errors: parsed.errors,
            done_status: parsed.done_status,
            qemu_status,
            killed_on_marker,
            timeout: boot.timeout,
            server_failures,
            log_dir,
        })
    }

    /// Whether every server process is still running.
    pub fn all_running(&mut self) -> Result<bool> {
        for server in &mut self.servers {
            if server.process.try_status()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The sockets the servers listen on, in bus order.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.servers.iter().map(|s| s.socket.clone()).collect()
    }
}

/// Starts every server and waits until each listens, in order: the devices' order on the bus.
fn start_servers(boot: &Boot, sockets: &SocketDir, log_dir: &Path) -> Result<Vec<RunningServer>> {
    let mut servers = Vec::new();
    for (i, template) in boot.servers.iter().enumerate() {
        let log = log_dir.join(format!("server{i}.log"));
        let name = format!("server {i}");
        servers.push(server::start(&name, template, &sockets.socket(i), &log)?);
    }
    Ok(servers)
}

/// Runs QEMU until it exits or `boot.timeout` passes, with the console in `console.log` and
/// QEMU's own messages in `qemu-stderr.log`. Returns the console and QEMU's exit status (`None`
/// on a timeout).
fn run_qemu(
    env: &GuestEnv,
    boot: &Boot,
    config: &QemuConfig,
    log_dir: &Path,
) -> Result<(String, Option<ExitStatus>, bool)> {
    let mut command = qemu::command(env, config)?;
    let stderr_path = log_dir.join("qemu-stderr.log");
    let stderr = File::create(&stderr_path)
        .with_context(|| format!("creating {}", stderr_path.display()))?;
    command.stdout(Stdio::piped()).stderr(stderr);
    if boot.responder.is_some() {
        command.stdin(Stdio::piped());
    }
    let console_path = log_dir.join("console.log");
    let console_log = File::create(&console_path)
        .with_context(|| format!("creating {}", console_path.display()))?;

    let mut qemu = Guarded::spawn("qemu", &mut command)?;
    let stdout = qemu.take_stdout().context("QEMU's stdout")?;
    let responder = match &boot.responder {
        Some(responder) => Some((
            responder.clone(),
            qemu.take_stdin().context("QEMU's stdin")?,
        )),
        None => None,
    };
    let marker_seen = Arc::new(AtomicBool::new(false));
    let kill_on = boot.kill_on.clone().map(|text| (text, marker_seen.clone()));
    let console = qemu::capture_console(
        stdout,
        console_log,
        boot.echo_prefix.clone(),
        kill_on,
        responder,
    );
    let deadline = Instant::now() + boot.timeout;
    let status = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = qemu.wait_with_deadline(left.min(Duration::from_millis(50)))?;
        if status.is_some() || left.is_zero() || marker_seen.load(Ordering::Relaxed) {
            break status;
        }
    };
    // Killing QEMU closes the console pipe, which ends the capture.
    qemu.kill();
    let killed_on_marker = status.is_none() && marker_seen.load(Ordering::Relaxed);
    Ok((console.join().unwrap_or_default(), status, killed_on_marker))
}

/// Servers that exited unsuccessfully while the guest ran. One that exited cleanly may have
/// been written to serve a single client.
fn server_failures(servers: &mut [RunningServer]) -> Result<Vec<String>> {
    let mut failures = Vec::new();
    for server in servers {
        if let Some(status) = server.process.try_status()? {
            if !status.success() {
                failures.push(format!(
                    "{} exited with {status} (output: {})",
                    server.process.name(),
                    server.log.display()
                ));
            }
        }
    }
    Ok(failures)
}

#[derive(Debug, Default, PartialEq)]
struct Parsed {
    results: BTreeMap<String, String>,
    errors: Vec<String>,
    done_status: Option<i32>,
}

/// Finds the `@@` lines; a marker may follow other text on a line, as when a kernel message
/// and the script's output share one.
fn parse_console(console: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for line in console.lines() {
        let Some(start) = line.find("@@") else {
            continue;
        };
        let marker = &line[start..];
        if let Some(result) = marker.strip_prefix("@@RESULT ") {
            if let Some((key, value)) = result.split_once('=') {
                parsed
                    .results
                    .insert(key.trim().to_string(), value.trim().to_string());
            }
        } else if let Some(error) = marker.strip_prefix("@@ERROR ") {
            parsed.errors.push(error.trim().to_string());
        } else if let Some(status) = marker.strip_prefix("@@DONE status=") {
            parsed.done_status = status.trim().parse().ok();
        }
    }
    parsed
}

/// `<cache>/runs/<name>`, emptied.
fn fresh_log_dir(env: &GuestEnv, name: &str) -> Result<PathBuf> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        bail!("boot name {name:?}: use letters, digits, '-', '_' and '.'");
    }
    let dir = env.log_dir(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("emptying {}", dir.display())),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A private directory for the servers' sockets, removed on drop. It lives in the temporary
/// directory rather than the cache because socket paths must fit in 108 bytes.
struct SocketDir {
    path: PathBuf,
}

const SOCKET_DIR_PREFIX: &str = "vfio-user-guest-";

impl SocketDir {
    fn create() -> Result<SocketDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale_socket_dirs();
        let path = std::env::temp_dir().join(format!(
            "{SOCKET_DIR_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(SocketDir { path })
    }

    fn socket(&self, index: usize) -> PathBuf {
        self.path.join(format!("dev{index}.sock"))
    }
}

/// Removes the socket directories of harnesses that were killed before they could: those
/// whose process id no longer exists.
fn remove_stale_socket_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SOCKET_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The last `max` bytes of `text`, from a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_markers() {
        let console = "\
Linux version 6.12
@@RESULT dev0.class=0xff0000
[    1.0] some kernel line @@RESULT late=1
@@RESULT dev0.class=0xff0001
@@ERROR insmod x failed
@@DONE status=3
";
        let parsed = parse_console(console);
        assert_eq!(parsed.results["dev0.class"], "0xff0001");
        assert_eq!(parsed.results["late"], "1");
        assert_eq!(parsed.errors, ["insmod x failed"]);
        assert_eq!(parsed.done_status, Some(3));
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("aé", 1), "");
        assert_eq!(tail("abc", 2), "bc");
    }
}
