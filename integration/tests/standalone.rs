// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The binaries the README tells a newcomer to `cargo run` work with nothing else built: cargo
//! builds only the binary it runs, so the demo and the benchmarks serve their devices by running
//! their own executable again. Each is copied alone into an empty directory and run from there,
//! where no sibling binary could stand in for what it lacks.

use std::io::BufRead;
use std::io::BufReader;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use integration::raw_client::RawClient;
use integration::reference::regs;
use integration::serve::SERVE_REFERENCE;
use integration::serve::SERVE_VIRTIO;
use vfio_user_server::protocol::command;
use vfio_user_server::protocol::RegionAccess;
use zerocopy::IntoBytes;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Held while a copy is written and while a child is spawned. Otherwise a test's fork could
/// inherit, until its exec, the fd another test is writing a copy through, and that copy's own
/// exec would then fail with ETXTBSY.
static FORKING: Mutex<()> = Mutex::new(());

fn spawn(command: &mut Command) -> Child {
    let _forking = FORKING.lock().unwrap();
    command.spawn().unwrap()
}

/// An empty directory holding a copy of one binary; removed on drop.
struct Alone {
    dir: PathBuf,
    exe: PathBuf,
}

impl Alone {
    fn copy(binary: &str) -> Alone {
        let dir = std::env::temp_dir().join(format!(
            "vfio-user-alone-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = Path::new(binary).file_name().unwrap();
        let exe = dir.join(name);
        {
            let _forking = FORKING.lock().unwrap();
            std::fs::copy(binary, &exe).unwrap();
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        Alone { dir, exe }
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `exe SUBCOMMAND ARGS --socket S` and checks that a client gets DEVICE_GET_INFO answered.
fn serves(exe: &Path, subcommand: &str, args: &[&str], dir: &Path) {
    let socket = dir.join(format!("{subcommand}.sock"));
    let mut child = Killed(spawn(
        Command::new(exe)
            .arg(subcommand)
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
    ));
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.contains("listening"),
        "{} {subcommand}: said {line:?}",
        exe.display()
    );
    let mut client = RawClient::connect(&socket).unwrap();
    assert!(!client.negotiate().unwrap().header.is_error());
    let reply = client.device_info().unwrap();
    assert!(!reply.header.is_error(), "{reply:?}");
    assert!(child.0.try_wait().unwrap().is_none());
}

#[test]
fn demo_and_benches_serve_their_devices_alone() {
    for binary in [
        env!("CARGO_BIN_EXE_demo"),
        env!("CARGO_BIN_EXE_bench"),
        env!("CARGO_BIN_EXE_guest-bench"),
    ] {
        let alone = Alone::copy(binary);
        serves(&alone.exe, SERVE_REFERENCE, &[], &alone.dir);
        serves(&alone.exe, SERVE_VIRTIO, &["rng"], &alone.dir);
        let disk = alone.dir.join("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        serves(
            &alone.exe,
            SERVE_VIRTIO,
            &["blk", "--file", disk.to_str().unwrap()],
            &alone.dir,
        );
    }
}

/// A reference server that polls its client's socket answers every message, through bursts of
/// round trips (the spin catches them) and idle spells (the budget shrinks, the server sleeps),
/// and stays up.
#[test]
fn a_polling_server_answers_through_bursts_and_idle_spells() {
    let alone = Alone::copy(env!("CARGO_BIN_EXE_demo"));
    let socket = alone.dir.join("polling.sock");
    let mut child = Killed(spawn(
        Command::new(&alone.exe)
            .args([SERVE_REFERENCE, "--poll-us", "200", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stderr(Stdio::piped()),
    ));
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "said {line:?}");
    let mut client = RawClient::connect(&socket).unwrap();
    assert!(!client.negotiate().unwrap().header.is_error());
    let access = |value: Option<u32>| {
        let mut body = RegionAccess {
            offset: regs::SCRATCH,
            region: 0,
            count: 4,
        }
        .as_bytes()
        .to_vec();
        if let Some(value) = value {
            body.extend_from_slice(&value.to_le_bytes());
        }
        body
    };
    for spell in 0..4u32 {
        for i in 0..200u32 {
            let value = spell << 16 | i;
            let written = client
                .call(command::REGION_WRITE, &access(Some(value)), &[])
                .unwrap();
            assert!(!written.header.is_error(), "{written:?}");
            let read = client
                .call(command::REGION_READ, &access(None), &[])
                .unwrap();
            assert_eq!(
                read.body[size_of::<RegionAccess>()..],
                value.to_le_bytes(),
                "spell {spell}, round trip {i}"
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(spell)));
    }
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the server is still up"
    );
}

#[test]
fn a_bad_serve_request_is_a_usage_error() {
    let alone = Alone::copy(env!("CARGO_BIN_EXE_demo"));
    let output = spawn(
        Command::new(&alone.exe)
            .args([SERVE_VIRTIO, "floppy", "--socket"])
            .arg(alone.dir.join("s.sock"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown device floppy"), "{stderr}");
}

/// The README's first command, as a newcomer runs it: only the demo is built.
#[test]
fn demo_boots_its_guest_alone() {
    let alone = Alone::copy(env!("CARGO_BIN_EXE_demo"));
    let output = spawn(
        Command::new(&alone.exe)
            .current_dir(&alone.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .wait_with_output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    for expected in [
        "demo: starting three vfio-user servers",
        "serve-reference --socket {socket}",
        "serve-virtio rng --socket {socket}",
        "demo: the guest ran its checks and powered off cleanly",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // The guest found all three devices and their drivers, and used them.
    for expected in [
        "dev0.bar0_id = 0x52454644",
        "rng.current = virtio_rng.0",
        "blk.readback_md5 = 89c55aadb64d967beef2cc4270bb2f22",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}
