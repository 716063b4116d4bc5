// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The QEMU command line of a guest boot, and the capture of its serial console.

use std::fs::File;
use std::io::BufRead;
use std::io::BufReader;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::process::ChildStdin;
use std::process::Command;
use std::process::Stdio;
use std::thread::JoinHandle;

use anyhow::bail;
use anyhow::Result;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::env::GuestEnv;
use super::Responder;

/// The kernel command line before the caller's additions: the console on the first UART, and a
/// panic ends the guest at once (with `-no-reboot`, QEMU then exits instead of rebooting).
const BASE_APPEND: &str = "console=ttyS0 panic=-1 quiet";

pub struct QemuConfig<'a> {
    pub initramfs: &'a Path,
    pub sockets: &'a [PathBuf],
    pub append: &'a str,
    pub memory_mb: u32,
    pub allow_reboot: bool,
    /// See [`super::Boot::synchronous_bar_writes`].
    pub synchronous_bar_writes: bool,
    pub extra_args: &'a [String],
}

/// QEMU under TCG (this machine's KVM is not usable) with guest RAM in a shared memfd, which
/// vfio-user needs to hand the RAM to servers as fds; one `vfio-user-pci` device per socket.
pub fn command(env: &GuestEnv, config: &QemuConfig) -> Result<Command> {
    let qemu = &env.qemu;
    let mut command = Command::new(&qemu.loader);
    command
        .arg("--library-path")
        .arg(&qemu.library_path)
        .arg(&qemu.binary)
        .env("QEMU_MODULE_DIR", &qemu.module_dir);
    for dir in &qemu.data_dirs {
        command.arg("-L").arg(dir);
    }
    let memory = config.memory_mb;
    command.args([
        "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "1",
    ]);
    command.args(["-m", &format!("{memory}M")]);
    command.args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={memory}M,share=on"),
        "-numa",
        "node,memdev=mem",
    ]);
    // No default devices (NIC, VGA, CD-ROM, monitor): only the serial console on stdout.
    command.args(["-nodefaults", "-display", "none", "-serial", "stdio"]);
    if !config.allow_reboot {
        command.arg("-no-reboot");
    }
    command.arg("-kernel").arg(&env.kernel);
    command.arg("-initrd").arg(config.initramfs);
    let append = format!("{BASE_APPEND} {}", config.append);
    command.args(["-append", append.trim_end()]);
    for (i, socket) in config.sockets.iter().enumerate() {
        // Only the JSON form of -device accepts the nested socket address.
        command.args([
            "-device",
            &device_json(i, socket, config.synchronous_bar_writes)?,
        ]);
    }
    command.args(config.extra_args);
    command.stdin(Stdio::null());
    Ok(command)
}

fn device_json(index: usize, socket: &Path, synchronous_bar_writes: bool) -> Result<String> {
    let Some(path) = socket.to_str() else {
        bail!("non-UTF-8 socket path {}", socket.display());
    };
    if path.chars().any(|c| c.is_control()) {
        bail!("control character in socket path {path:?}");
    }
    let path = path.replace('\\', r"\\").replace('"', "\\\"");
    let posting = if synchronous_bar_writes {
        r#","x-no-posted-writes":true"#
    } else {
        ""
    };
    Ok(format!(
        r#"{{"driver":"vfio-user-pci","id":"vfio-user{index}","socket":{{"type":"unix","path":"{path}"}}{posting}}}"#
    ))
}

/// Copies the console to `log` line by line as it arrives, echoes it to stdout with `prefix`
/// if asked, and returns it all once QEMU closes its end.
pub fn capture_console(
    stream: impl Read + Send + 'static,
    mut log: File,
    echo: Option<String>,
    kill_on: Option<(String, Arc<AtomicBool>)>,
    mut responder: Option<(Responder, ChildStdin)>,
) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut console = String::new();
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&raw);
            let line = text.trim_end_matches(['\r', '\n']);
            let _ = writeln!(log, "{line}");
            if let Some(prefix) = &echo {
                println!("{prefix}{line}");
            }
            if let Some((marker, seen)) = &kill_on {
                if line.contains(marker.as_str()) {
                    seen.store(true, Ordering::Relaxed);
                }
            }
            if let Some((respond, input)) = &mut responder {
                if let Some(answer) = (respond.0)(line) {
                    // A guest that stopped reading is caught by the run's own checks.
                    let _ = input
                        .write_all(answer.as_bytes())
                        .and_then(|_| input.flush());
                }
            }
            console.push_str(line);
            console.push('\n');
        }
        console
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_json_escapes_the_path() {
        assert_eq!(
            device_json(1, Path::new("/tmp/a\"b.sock"), false).unwrap(),
            r#"{"driver":"vfio-user-pci","id":"vfio-user1","socket":{"type":"unix","path":"/tmp/a\"b.sock"}}"#
        );
        assert!(device_json(0, Path::new("/tmp/a\nb"), false).is_err());
        assert_eq!(
            device_json(0, Path::new("/s"), true).unwrap(),
            r#"{"driver":"vfio-user-pci","id":"vfio-user0","socket":{"type":"unix","path":"/s"},"x-no-posted-writes":true}"#
        );
    }
}
