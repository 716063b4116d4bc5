// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The QEMU guest check of crosvm's virtio-balloon, served by `crosvm device vfio-user-server`
//! built from upstream-patches/ and driven with that crosvm's `balloon` and `balloon_stats`
//! commands. It runs when CROSVM_BIN names that crosvm binary; otherwise cargo reports it as
//! ignored with the reason:
//!
//!     CROSVM_BIN=/path/to/crosvm cargo test -p integration --test crosvm_memory

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::checks;
use integration::checks::Checked;
use integration::guest::shell_quote_path;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::guest::Responder;

mod crosvm_common;

use crosvm_common::crosvm_serving;
use crosvm_common::no_seccomp_violation;
use crosvm_common::run_confined;
use crosvm_common::sandboxed;
use crosvm_common::with_device_report;
use crosvm_common::Jail;
use crosvm_common::Scratch;

const MIB: u64 = 1 << 20;
/// How far the host inflates the balloon, of the guest's 512 MiB.
const INFLATE: u64 = 192 * MIB;

/// Bytes of memory the file of QEMU's guest RAM holds, QEMU found by `token` on its command line.
fn guest_ram_allocated(token: &str) -> Result<u64> {
    for entry in std::fs::read_dir("/proc")? {
        let dir = entry?.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmdline).contains(token) {
            continue;
        }
        // The RAM backend is the largest memfd QEMU holds.
        let mut largest: Option<std::fs::Metadata> = None;
        for fd in std::fs::read_dir(dir.join("fd"))? {
            let fd = fd?.path();
            let is_memfd = std::fs::read_link(&fd)
                .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:"));
            if !is_memfd {
                continue;
            }
            let metadata = std::fs::metadata(&fd)?;
            if largest.as_ref().is_none_or(|l| metadata.size() > l.size()) {
                largest = Some(metadata);
            }
        }
        if let Some(ram) = largest {
            return Ok(ram.blocks() * 512);
        }
    }
    bail!("no QEMU with {token} on its command line holds a memfd")
}

/// `crosvm balloon_stats`'s balloon_actual.
fn balloon_actual(crosvm: &Path, control: &Path) -> Result<u64> {
    let output = Command::new(crosvm)
        .arg("balloon_stats")
        .arg(control)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let value = text
        .split("\"balloon_actual\":")
        .nth(1)
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
        })
        .with_context(|| format!("no balloon_actual in {text:?}"))?;
    Ok(value.parse()?)
}

/// Sets the balloon's target with `crosvm balloon`, then waits until the guest has reached it.
fn adjust_balloon(crosvm: &Path, control: &Path, target: u64) -> Result<Duration> {
    let started = Instant::now();
    let status = Command::new(crosvm)
        .arg("balloon")
        .arg(target.to_string())
        .arg(control)
        .status()?;
    if !status.success() {
        bail!("crosvm balloon {target}: {status}");
    }
    while balloon_actual(crosvm, control)? != target {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the balloon did not reach {target} bytes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(started.elapsed())
}

/// virtio-balloon, from a sandbox that shows nothing of the host: the host inflates the balloon
/// with `crosvm balloon` and QEMU's RAM file shrinks by about as much; the host deflates it and
/// the guest writes and reads back 192 MiB; a pattern the guest kept in memory throughout reads
/// back intact.
fn crosvm_balloon_returns_memory_to_the_host() -> Checked {
    let crosvm = crosvm_serving("balloon")?;
    let scratch = Scratch::new("crosvm-balloon")?;
    let control = scratch.0.join("control.sock");
    let token = format!("vfio_user_balloon_check={}", std::process::id());
    let measured: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let responder = {
        let (crosvm, control, token) = (crosvm.clone(), control.clone(), token.clone());
        let (measured, failures) = (measured.clone(), failures.clone());
        Responder(Arc::new(move |line: &str| {
            let step = line.split("@@STEP ").nth(1)?.trim().to_string();
            let result = (|| -> Result<()> {
                let mut measured = measured.lock().unwrap();
                measured.insert(format!("{step}.before"), guest_ram_allocated(&token)?);
                let took = match step.as_str() {
                    "inflate" => adjust_balloon(&crosvm, &control, INFLATE)?,
                    "deflate" => adjust_balloon(&crosvm, &control, 0)?,
                    _ => Duration::ZERO,
                };
                measured.insert(format!("{step}.ms"), took.as_millis() as u64);
                measured.insert(format!("{step}.after"), guest_ram_allocated(&token)?);
                Ok(())
            })();
            match result {
                Ok(()) => Some("done\n".to_string()),
                Err(e) => {
                    failures.lock().unwrap().push(format!("{step}: {e:#}"));
                    Some("failed\n".to_string())
                }
            }
        }))
    };
    let env = GuestEnv::prepare()?;
    let boot = Boot {
        name: "crosvm-balloon".to_string(),
        servers: vec![format!(
            "{} device vfio-user-server balloon --socket {{socket}} --control-socket {} {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&control),
            sandboxed()?
        )],
        script: with_device_report(include_str!("../guest/crosvm-balloon.sh")),
        modules: vec!["virtio_balloon".to_string()],
        kernel_append: token.clone(),
        echo_prefix: Some("[crosvm-balloon] ".to_string()),
        timeout: Duration::from_secs(600),
        responder: Some(responder),
        ..Boot::default()
    };
    let run = run_confined(&env, &boot, &Jail::empty())?;
    run.check()?;
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "host steps failed: {failures:?}");
    let measured = measured.lock().unwrap();
    println!("QEMU's RAM file, bytes allocated: {measured:?}");
    assert_eq!(run.result("pci.device")?, "0x1045");
    assert_eq!(run.result("virtio.driver")?, "virtio_balloon");
    assert_eq!(run.result("balloon.inflate")?, "done");
    assert_eq!(run.result("balloon.deflate")?, "done");
    // The balloon's pages were taken from memory the guest had touched, so the host gets back
    // nearly all of them: allow for pages the guest had not touched yet.
    let returned = measured["inflate.before"].saturating_sub(measured["inflate.after"]);
    assert!(
        returned >= INFLATE * 3 / 4,
        "inflating by {INFLATE} returned only {returned} bytes to the host"
    );
    let free_before: u64 = run.result("balloon.free_before_kb")?.parse()?;
    let free_inflated: u64 = run.result("balloon.free_inflated_kb")?.parse()?;
    assert!(
        free_before - free_inflated >= INFLATE / 1024 * 9 / 10,
        "the guest lost {} KiB of free memory to the balloon",
        free_before - free_inflated
    );
    // Deflated, the guest uses the memory again, which the host gives it back.
    assert_eq!(run.result("balloon.refill_status")?, "0");
    assert_eq!(
        run.result("balloon.refill_md5")?,
        run.result("balloon.refill_expected_md5")?
    );
    assert!(measured["measure.before"] >= measured["inflate.after"] + INFLATE / 2);
    // Nothing else of the guest's memory changed.
    let pattern = run.result("balloon.pattern_md5")?;
    assert_eq!(run.result("balloon.pattern_md5_inflated")?, pattern);
    assert_eq!(run.result("balloon.pattern_md5_after")?, pattern);
    Ok(())
}

fn main() {
    checks::run_around(
        no_seccomp_violation,
        &[(
            "crosvm_balloon_returns_memory_to_the_host",
            crosvm_balloon_returns_memory_to_the_host,
        )],
    );
}
