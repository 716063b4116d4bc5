// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The vfio-user servers a guest's devices connect to: any command, started before QEMU.

use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::env::tail_of_file;
use super::process::Guarded;

/// How long a server may take to listen on its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// `__SO_ACCEPTCON` in `/proc/net/unix`'s flags: the socket is listening.
const SO_ACCEPTCON: u32 = 0x10000;

pub struct RunningServer {
    pub process: Guarded,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// Runs before the caller's command, in the same shell. If the harness dies without killing
/// the server's process group (SIGKILL, abort), the pipe on the shell's stdin closes and the
/// watchdog kills the group: `PR_SET_PDEATHSIG` alone would reach `sh` only, since `sh -c`
/// does not always exec a lone command. The command itself gets /dev/null as stdin.
const WATCHDOG: &str = "exec 3<&0 0</dev/null
(read -r _ <&3; kill -KILL 0) &
exec 3<&-
";

/// Starts `sh -c TEMPLATE` with `{socket}` replaced by `socket` (quoted for the shell), with
/// its output in `log`, and waits until it listens on `socket`.
pub fn start(name: &str, template: &str, socket: &Path, log: &Path) -> Result<RunningServer> {
    if !template.contains("{socket}") {
        bail!("server command {template:?} has no {{socket}}");
    }
    let socket_str = socket.to_str().context("non-UTF-8 socket path")?;
    let command_line = template.replace("{socket}", &shell_quote(socket_str));
    let output = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{WATCHDOG}{command_line}\n"))
        // The write end stays in the `Child` until it is killed.
        .stdin(Stdio::piped())
        .stdout(output.try_clone()?)
        .stderr(output);
    let process = Guarded::spawn(name, &mut command)?;
    let mut server = RunningServer {
        process,
        socket: socket.to_path_buf(),
        log: log.to_path_buf(),
    };
    server
        .wait_until_listening(READY_TIMEOUT)
        .with_context(|| {
            format!(
                "{name} ({command_line}); its output {}:\n{}",
                log.display(),
                tail_of_file(log, 0, 4000)
            )
        })?;
    Ok(server)
}

impl RunningServer {
    /// Watches `/proc/net/unix` rather than connecting: a probe connection would be taken for
    /// the client by a server that serves a single one, and the socket file alone appears at
    /// bind(), before listen().
    fn wait_until_listening(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if is_listening(&self.socket, self.process.id())? {
                return Ok(());
            }
            if let Some(status) = self.process.try_status()? {
                bail!("exited with {status} before listening");
            }
            if Instant::now() >= deadline {
                bail!(
                    "not listening on {} after {timeout:?}",
                    self.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a socket bound to `path` is listening, per `/proc/net/unix`, or, for a server run in
/// a network namespace of its own (`ip netns exec`), per the table of that namespace, seen
/// through `/proc/PID/net/unix` of the processes in the server's group `pgid`.
fn is_listening(path: &Path, pgid: u32) -> Result<bool> {
    let path = path.to_str().unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/unix").context("reading /proc/net/unix")?;
    if listening_in(&table, path) {
        return Ok(true);
    }
    let own_netns = std::fs::read_link("/proc/self/ns/net").ok();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let pid = entry?.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Processes come and go: whatever cannot be read is skipped.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if after_comm.split_whitespace().nth(2) != Some(pgid.to_string().as_str()) {
            continue;
        }
        if std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == own_netns {
            continue;
        }
        if let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) {
            if listening_in(&table, path) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Lines are `Num: RefCount Protocol Flags Type St Inode[ Path]`: seven padded fields, then
/// one space and the path, unquoted, if the socket is bound to one.
fn listening_in(table: &str, path: &str) -> bool {
    table.lines().skip(1).any(|line| {
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            rest = rest.trim_start_matches(' ');
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let listening = u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & SO_ACCEPTCON != 0);
        listening && rest.strip_prefix(' ') == Some(path)
    })
}

/// `s` in single quotes for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `path` in single quotes for `sh` (lossily, if it is not UTF-8).
pub fn shell_quote_path(path: &Path) -> String {
    shell_quote(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_sockets_only() {
        let table = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01  1234 /tmp/a b/dev0.sock
0000000000000000: 00000002 00000000 00000000 0001 01 51235 /tmp/dev1.sock
0000000000000000: 00000002 00000000 00000000 0001 03  1236
";
        assert!(listening_in(table, "/tmp/a b/dev0.sock"));
        assert!(!listening_in(table, "/tmp/dev1.sock"));
        assert!(!listening_in(table, "/tmp/dev2.sock"));
    }

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
    }
}
