// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Benchmarks our virtio-blk, served over vfio-user by this executable (as `virtio-server`
//! would), against QEMU's own
//! virtio-blk-pci on the same host file, each in a Linux guest under TCG. It prints figures and
//! ratios and asserts nothing about speed.
//!
//!     cargo run --release -p integration --bin guest-bench
//!
//! Both guests run `guest/blk-bench.sh`: sequential O_DIRECT `dd` on /dev/vda with 4 KiB and
//! 1 MiB requests, writes then reads, three runs per case. The disk is a fresh, fully allocated
//! 256 MiB raw file in a temporary directory; it is synced and dropped from the host's page
//! cache before each guest, so that neither starts with the other's cached data.
//!
//! QEMU's device gets `-drive ...,format=raw,cache=writeback,aio=threads` by default: like
//! `virtio-server`, it then goes through the host's page cache, so the comparison is like for
//! like. `GUEST_BENCH_QEMU_CACHE=writeback,none` adds a QEMU guest with `cache=none`
//! (O_DIRECT on the host file). `RUST_LOG=debug` reaches the server, whose log then lists each
//! message; the bench counts them per command.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::guest;
use integration::guest::shell_quote;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::guest::GuestRun;
use integration::serve;
use integration::serve::SERVE_VIRTIO;

const SCRIPT: &str = include_str!("../../guest/blk-bench.sh");
const DISK_SIZE: u64 = 256 << 20;
const RUNS: usize = 3;
/// The script's cases, with what the table calls them.
const CASES: [(&str, &str); 4] = [
    ("4k_write", "4K write"),
    ("4k_read", "4K read"),
    ("1m_write", "1M write"),
    ("1m_read", "1M read"),
];
/// What ours should reach, as a fraction of QEMU's own device.
const TARGET: f64 = 0.9;
/// A boot takes 10 to 20 seconds under TCG and the I/O well under a minute; the timeout only
/// bounds a stuck guest.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a `DISK_SIZE` file of zeros, so that no write of either guest allocates blocks and
/// no read hits a hole.
fn create_disk(path: &Path) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..DISK_SIZE / chunk.len() as u64 {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    Ok(())
}

/// Flushes the file and drops its pages from the host's page cache.
fn settle_disk(path: &Path) -> Result<()> {
    let file = File::options().read(true).write(true).open(path)?;
    file.sync_all()?;
    // SAFETY: a plain syscall on an fd this function owns.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!(
            "posix_fadvise on {}: {}",
            path.display(),
            std::io::Error::from_raw_os_error(rc)
        );
    }
    Ok(())
}

/// A path as one value of a QEMU option list: commas doubled.
fn qemu_option_value(path: &Path) -> Result<String> {
    let path = path.to_str().context("non-UTF-8 disk path")?;
    Ok(path.replace(',', ",,"))
}

/// One case of one guest: the bytes of a run and each run's time and requests.
struct Case {
    bytes: u64,
    centiseconds: Vec<u64>,
    requests: Vec<u64>,
}

impl Case {
    fn from_run(run: &GuestRun, case: &str) -> Result<Case> {
        if let Some(error) = run.results.get(&format!("{case}.error")) {
            bail!("guest {}: {case} failed: {error}", run.name);
        }
        let number = |key: String| -> Result<u64> {
            run.result(&key)?
                .parse()
                .with_context(|| format!("guest {}: {key}", run.name))
        };
        let mut centiseconds = Vec::new();
        let mut requests = Vec::new();
        for i in 1..=RUNS {
            centiseconds.push(number(format!("{case}.run{i}.centiseconds"))?);
            requests.push(number(format!("{case}.run{i}.requests"))?);
        }
        Ok(Case {
            bytes: number(format!("{case}.bytes"))?,
            centiseconds,
            requests,
        })
    }

    /// MiB/s of a run that took `centiseconds` (at least one: the clock's resolution).
    fn rate(&self, centiseconds: u64) -> f64 {
        let seconds = centiseconds.max(1) as f64 / 100.0;
        self.bytes as f64 / f64::from(1 << 20) / seconds
    }

    fn sorted(&self) -> Vec<u64> {
        let mut sorted = self.centiseconds.clone();
        sorted.sort_unstable();
        sorted
    }

    fn median_rate(&self) -> f64 {
        self.rate(self.sorted()[RUNS / 2])
    }

    fn best_rate(&self) -> f64 {
        self.rate(self.sorted()[0])
    }

    /// Bytes per request the device saw, over all runs.
    fn bytes_per_request(&self) -> f64 {
        let requests: u64 = self.requests.iter().sum();
        (self.bytes * RUNS as u64) as f64 / requests.max(1) as f64
    }
}

/// How many messages of each command the server's debug log lists.
fn server_commands(run: &GuestRun) -> Option<BTreeMap<u16, u64>> {
    let dir = run.log_dir.with_file_name(format!("{}.servers", run.name));
    let log = std::fs::read_to_string(dir.join("server0.log")).ok()?;
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.split_once("command ").map(|(_, rest)| rest) else {
            continue;
        };
        let Some(command) = rest.split(' ').next().and_then(|c| c.parse().ok()) else {
            continue;
        };
        *counts.entry(command).or_insert(0) += 1;
    }
    (!counts.is_empty()).then_some(counts)
}

fn boot(env: &GuestEnv, name: &str, servers: Vec<String>, extra: Vec<String>) -> Result<GuestRun> {
    let started = Instant::now();
    let run = guest::run(
        env,
        &Boot {
            name: name.to_string(),
            servers,
            script: SCRIPT.to_string(),
            modules: vec!["virtio_blk".to_string()],
            timeout: BOOT_TIMEOUT,
            extra_qemu_args: extra,
            ..Boot::default()
        },
    )?;
    run.check()?;
    eprintln!(
        "guest-bench: {name} done in {:.1} s (logs: {})",
        started.elapsed().as_secs_f64(),
        run.log_dir.display()
    );
    Ok(run)
}

fn queue_line(run: &GuestRun) -> String {
    [
        "max_segments",
        "max_sectors_kb",
        "max_hw_sectors_kb",
        "scheduler",
    ]
    .iter()
    .map(|key| {
        let value = run
            .results
            .get(&format!("queue.{key}"))
            .map_or("?", String::as_str);
        format!("{key}={value}")
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// Prints ours against one QEMU guest.
fn print_comparison(ours: &GuestRun, qemu: &GuestRun, drive: &str) -> Result<()> {
    println!("  ours: virtio-server blk over vfio-user (vfio-user-pci)");
    println!("  QEMU: virtio-blk-pci, -drive {drive}");
    println!();
    println!(
        "{:<9} {:>8} {:>16} {:>16} {:>10} {:>14}  {:>9}",
        "case", "per run", "ours MiB/s", "QEMU MiB/s", "ours/QEMU", "target", "KiB/req"
    );
    for (key, label) in CASES {
        let a = Case::from_run(ours, key)?;
        let b = Case::from_run(qemu, key)?;
        let ratio = a.median_rate() / b.median_rate();
        let verdict = if ratio >= TARGET { "met" } else { "missed" };
        println!(
            "{label:<9} {:>4} MiB {:>7.1} ({:>6.1}) {:>7.1} ({:>6.1}) {:>9.2}x {:>5.2}x {verdict:<6}  {:>4.0}/{:<4.0}",
            a.bytes >> 20,
            a.median_rate(),
            a.best_rate(),
            b.median_rate(),
            b.best_rate(),
            ratio,
            TARGET,
            a.bytes_per_request() / 1024.0,
            b.bytes_per_request() / 1024.0,
        );
    }
    println!();
    for (key, _) in CASES {
        let a = Case::from_run(ours, key)?;
        let b = Case::from_run(qemu, key)?;
        println!(
            "  {key}: centiseconds ours {:?} QEMU {:?}; requests ours {:?} QEMU {:?}",
            a.centiseconds, b.centiseconds, a.requests, b.requests
        );
    }
    println!("  queue ours: {}", queue_line(ours));
    println!("  queue QEMU: {}", queue_line(qemu));
    Ok(())
}

fn main() -> Result<()> {
    serve::serve_if_asked();
    let started = Instant::now();
    // This bench serves our virtio-blk itself, as `guest-bench serve-virtio blk ...`.
    let server = serve::this_executable_serving(SERVE_VIRTIO)?;
    let caches =
        std::env::var("GUEST_BENCH_QEMU_CACHE").unwrap_or_else(|_| "writeback".to_string());
    let caches: Vec<&str> = caches.split(',').filter(|c| !c.is_empty()).collect();
    if caches.is_empty()
        || caches
            .iter()
            .any(|c| !c.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        bail!("GUEST_BENCH_QEMU_CACHE: cache modes separated by commas, e.g. none,writeback");
    }
    let env = GuestEnv::prepare()?;

    let dir = TempDir(std::env::temp_dir().join(format!("guest-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let disk = dir.0.join("disk.img");
    create_disk(&disk)?;

    settle_disk(&disk)?;
    let server_command = format!(
        "{server} blk --file {} --socket {{socket}}",
        shell_quote(disk.to_str().context("non-UTF-8 disk path")?)
    );
    let ours = boot(&env, "guest-bench-ours", vec![server_command], Vec::new())?;

    let mut qemus = Vec::new();
    for cache in caches {
        settle_disk(&disk)?;
        let drive = format!(
            "file={},if=none,id=bench,format=raw,cache={cache},aio=threads",
            qemu_option_value(&disk)?
        );
        let run = boot(
            &env,
            &format!("guest-bench-qemu-{cache}"),
            Vec::new(),
            vec![
                "-drive".to_string(),
                drive.clone(),
                "-device".to_string(),
                "virtio-blk-pci,drive=bench".to_string(),
            ],
        )?;
        qemus.push((run, drive));
    }

    println!(
        "virtio-blk in a TCG guest: sequential O_DIRECT dd on /dev/vda, {} MiB raw host file",
        DISK_SIZE >> 20
    );
    println!(
        "MiB/s: median of {RUNS} runs, best in brackets; ratio of the medians; KiB per request \
         ours/QEMU"
    );
    for (qemu, drive) in &qemus {
        println!();
        print_comparison(&ours, qemu, drive)?;
    }
    if !qemus
        .iter()
        .any(|(_, drive)| drive.contains("cache=writeback"))
    {
        println!();
        println!(
            "note: virtio-server does buffered I/O on the host file; GUEST_BENCH_QEMU_CACHE=\
             none,writeback adds QEMU with the same host I/O"
        );
    }
    if let Some(counts) = server_commands(&ours) {
        let counts: Vec<String> = counts
            .iter()
            .map(|(command, count)| format!("{command}:{count}"))
            .collect();
        println!(
            "  server messages over the whole boot (command:count): {}",
            counts.join(" ")
        );
    }
    println!();
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
