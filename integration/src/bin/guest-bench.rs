// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Benchmarks a virtio-blk served over vfio-user (ours by default, or any server command)
//! against QEMU's own virtio-blk-pci on the same host file, each in a Linux guest under TCG. It
//! prints figures and ratios and asserts nothing about speed.
//!
//!     cargo run --release -p integration --bin guest-bench [-- --server 'CMD' --boots N]
//!
//! `--server` names the server, `{socket}` and `{disk}` standing for its socket and the disk file,
//! e.g. crosvm's block (with `--log-level=debug` for the message counts):
//!
//!     --server 'crosvm --log-level=debug device vfio-user-server block --socket {socket} \
//!               --file {disk} --jail pivot-root=/some/empty/dir'
//!
//! Without it, this executable serves its own virtio-blk (as `virtio-server`). The server's
//! guests and QEMU's alternate, A B A B ..., `--boots` times each (5 by default), so that a slow
//! phase of the machine does not land on one side only.
//!
//! Every guest runs `guest/blk-bench.sh`: sequential O_DIRECT `dd` on /dev/vda with 4 KiB and
//! 1 MiB requests, writes then reads, three runs per case. The disk is a fresh, fully allocated
//! 256 MiB raw file in a temporary directory; it is synced and dropped from the host's page
//! cache before each guest, so that none starts with another's cached data.
//!
//! QEMU's device gets `-drive ...,format=raw,cache=writeback,aio=threads` by default: like
//! `virtio-server` and crosvm's block, it then goes through the host's page cache, so the
//! comparison is like for like. `GUEST_BENCH_QEMU_CACHE=writeback,none` adds a QEMU guest with
//! `cache=none` (O_DIRECT on the host file) to each round.
//!
//! How to read it under TCG: the guest's CPU is emulated, so every figure is dominated by the
//! emulation of the guest's driver and of QEMU's side of the device, and varies with what else the
//! machine does (two runs an hour apart have differed by 2x). Compare the two sides of one run
//! only, on the medians over boots, with the spread (lowest and highest boot) showing how much to
//! trust a difference: ratios inside the spreads' overlap say nothing. Per boot, a case's figure is
//! the median of its three runs. The server's CPU time per request and the times its threads were
//! scheduled in per request (each a wakeup, the hops a request takes through it; its whole process
//! tree, between the script's `@@BENCH begin` and `end`), and its messages per request by command
//! (counted from its debug log over the whole boot, which boot adds a few hundred to) show where
//! the server's time goes, whatever the emulation costs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
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
use integration::guest::Responder;
use integration::guest::Servers;
use integration::procfs::tree_sched;
use integration::serve;
use integration::serve::SERVE_VIRTIO;
use integration::stats::Spread;

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

fn boot_of(name: &str) -> Boot {
    Boot {
        name: name.to_string(),
        script: SCRIPT.to_string(),
        modules: vec!["virtio_blk".to_string()],
        timeout: BOOT_TIMEOUT,
        ..Boot::default()
    }
}

fn report_done(name: &str, started: Instant, run: &GuestRun) {
    eprintln!(
        "guest-bench: {name} done in {:.1} s (logs: {})",
        started.elapsed().as_secs_f64(),
        run.log_dir.display()
    );
}

/// A guest against the server `command`, and what the server's processes spent between the
/// script's `@@BENCH begin` and `@@BENCH end`: CPU time (ns) and times scheduled in.
fn boot_server(env: &GuestEnv, name: &str, command: &str) -> Result<(GuestRun, (u64, u64))> {
    let started = Instant::now();
    let mut boot = boot_of(name);
    boot.servers = vec![command.to_string()];
    let mut servers = Servers::start(env, &boot)?;
    let pid = servers.pids()[0];
    let samples: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    {
        let samples = samples.clone();
        boot.responder = Some(Responder(Arc::new(move |line: &str| {
            if line.contains("@@BENCH begin") || line.contains("@@BENCH end") {
                samples.lock().unwrap().push(tree_sched(pid));
            }
            None
        })));
    }
    let run = servers.boot(env, &boot)?;
    run.check()?;
    report_done(name, started, &run);
    let samples = samples.lock().unwrap().clone();
    let [begin, end] = samples[..] else {
        bail!("guest {name}: the script's @@BENCH lines were not both seen: {samples:?}");
    };
    Ok((
        run,
        (end.0.saturating_sub(begin.0), end.1.saturating_sub(begin.1)),
    ))
}

/// A guest with QEMU's own virtio-blk-pci on `drive`.
fn boot_qemu(env: &GuestEnv, name: &str, drive: &str) -> Result<GuestRun> {
    let started = Instant::now();
    let mut boot = boot_of(name);
    boot.extra_qemu_args = vec![
        "-drive".to_string(),
        drive.to_string(),
        "-device".to_string(),
        "virtio-blk-pci,drive=bench".to_string(),
    ];
    let run = guest::run(env, &boot)?;
    run.check()?;
    report_done(name, started, &run);
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

/// The requests the device completed in all cases and runs of `run`.
fn total_requests(run: &GuestRun) -> Result<u64> {
    let mut total = 0;
    for (key, _) in CASES {
        total += Case::from_run(run, key)?.requests.iter().sum::<u64>();
    }
    Ok(total)
}

/// "median [lowest-highest]" of `values`.
fn spread_text(values: &[f64], decimals: usize) -> String {
    let spread = Spread::of(values, |v| *v);
    format!(
        "{:.*} [{:.*}-{:.*}]",
        decimals, spread.median, decimals, spread.min, decimals, spread.max
    )
}

/// Prints the server's boots against one QEMU configuration's, case by case.
fn print_comparison(ours: &[(GuestRun, (u64, u64))], qemu: &[GuestRun], drive: &str) -> Result<()> {
    println!("  QEMU: virtio-blk-pci, -drive {drive}");
    println!();
    println!(
        "{:<9} {:>8} {:>24} {:>24} {:>10} {:>14}  {:>9}",
        "case", "per run", "server MiB/s", "QEMU MiB/s", "ratio", "target", "KiB/req"
    );
    for (key, label) in CASES {
        let a: Vec<Case> = ours
            .iter()
            .map(|(run, _)| Case::from_run(run, key))
            .collect::<Result<_>>()?;
        let b: Vec<Case> = qemu
            .iter()
            .map(|run| Case::from_run(run, key))
            .collect::<Result<_>>()?;
        let a_rates: Vec<f64> = a.iter().map(Case::median_rate).collect();
        let b_rates: Vec<f64> = b.iter().map(Case::median_rate).collect();
        let ratio = Spread::of(&a_rates, |v| *v).median / Spread::of(&b_rates, |v| *v).median;
        let verdict = if ratio >= TARGET { "met" } else { "missed" };
        let per_request =
            |cases: &[Case]| Spread::of(cases, |case| case.bytes_per_request()).median / 1024.0;
        println!(
            "{label:<9} {:>4} MiB {:>24} {:>24} {:>9.2}x {:>5.2}x {verdict:<6}  {:>4.0}/{:<4.0}",
            a[0].bytes >> 20,
            spread_text(&a_rates, 1),
            spread_text(&b_rates, 1),
            ratio,
            TARGET,
            per_request(&a),
            per_request(&b),
        );
    }
    println!();
    for (key, _) in CASES {
        let rates = |runs: Vec<Result<Case>>| -> Result<Vec<String>> {
            runs.into_iter()
                .map(|case| case.map(|case| format!("{:.1}", case.median_rate())))
                .collect()
        };
        println!(
            "  {key}: MiB/s per boot, server {:?} QEMU {:?}",
            rates(
                ours.iter()
                    .map(|(run, _)| Case::from_run(run, key))
                    .collect()
            )?,
            rates(qemu.iter().map(|run| Case::from_run(run, key)).collect())?
        );
    }
    println!("  queue server: {}", queue_line(&ours[0].0));
    println!("  queue QEMU:   {}", queue_line(&qemu[0]));
    Ok(())
}

/// The server's CPU time, times scheduled in and messages per request, over its boots.
fn print_server_costs(ours: &[(GuestRun, (u64, u64))]) -> Result<()> {
    let mut cpu_us = Vec::new();
    let mut runs = Vec::new();
    let mut messages: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
    for (run, (cpu_ns, scheduled)) in ours {
        let requests = total_requests(run)?.max(1) as f64;
        cpu_us.push(*cpu_ns as f64 / 1000.0 / requests);
        runs.push(*scheduled as f64 / requests);
        for (command, count) in server_commands(run).unwrap_or_default() {
            messages
                .entry(command)
                .or_default()
                .push(count as f64 / requests);
        }
    }
    println!(
        "  server CPU per request (all its processes, during the cases), us: {}",
        spread_text(&cpu_us, 2)
    );
    // Each is a thread wakeup (or a preemption): the hops a request takes through the server.
    println!(
        "  server threads scheduled in per request (all its processes, during the cases): {}",
        spread_text(&runs, 2)
    );
    if messages.is_empty() {
        println!(
            "  server messages per request: not counted (no `command N` lines in its log: run it \
             with debug logging, e.g. RUST_LOG=debug or crosvm's --log-level=debug)"
        );
    } else {
        let by_command: Vec<String> = messages
            .iter()
            .map(|(command, per_boot)| {
                format!("{command}:{:.3}", Spread::of(per_boot, |v| *v).median)
            })
            .collect();
        println!(
            "  server messages per request by command (command:median over boots, whole boot): {}",
            by_command.join(" ")
        );
    }
    Ok(())
}

struct Options {
    /// The server command, `{socket}` and `{disk}` still in it.
    server: Option<String>,
    boots: usize,
}

fn parse_options() -> Result<Options> {
    let mut options = Options {
        server: None,
        boots: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--server" => {
                if !value.contains("{socket}") || !value.contains("{disk}") {
                    bail!("--server needs {{socket}} and {{disk}} in its command: {value}");
                }
                options.server = Some(value);
            }
            "--boots" => {
                options.boots = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| format!("--boots takes a positive number, not {value}"))?;
            }
            other => bail!(
                "usage: guest-bench [--server 'CMD {{socket}} {{disk}}'] [--boots N]; not {other}"
            ),
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    serve::serve_if_asked();
    let started = Instant::now();
    let options = parse_options()?;
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
    let disk_text = shell_quote(disk.to_str().context("non-UTF-8 disk path")?);
    // The server's own `{socket}` is filled in by the harness.
    let (server_name, server_command) = match &options.server {
        Some(command) => (command.clone(), command.replace("{disk}", &disk_text)),
        None => {
            // This bench serves our virtio-blk itself, as `guest-bench serve-virtio blk ...`.
            let this = serve::this_executable_serving(SERVE_VIRTIO)?;
            (
                "virtio-server blk over vfio-user (this executable)".to_string(),
                format!("{this} blk --file {disk_text} --socket {{socket}}"),
            )
        }
    };
    let drives: Vec<String> = caches
        .iter()
        .map(|cache| {
            Ok(format!(
                "file={},if=none,id=bench,format=raw,cache={cache},aio=threads",
                qemu_option_value(&disk)?
            ))
        })
        .collect::<Result<_>>()?;

    let mut ours = Vec::new();
    let mut qemus: Vec<Vec<GuestRun>> = drives.iter().map(|_| Vec::new()).collect();
    for round in 1..=options.boots {
        settle_disk(&disk)?;
        ours.push(boot_server(
            &env,
            &format!("guest-bench-server-{round}"),
            &server_command,
        )?);
        for ((cache, drive), runs) in caches.iter().zip(&drives).zip(&mut qemus) {
            settle_disk(&disk)?;
            runs.push(boot_qemu(
                &env,
                &format!("guest-bench-qemu-{cache}-{round}"),
                drive,
            )?);
        }
    }

    println!(
        "virtio-blk in a TCG guest: sequential O_DIRECT dd on /dev/vda, {} MiB raw host file, {} \
         boots of each side, alternating",
        DISK_SIZE >> 20,
        options.boots
    );
    println!(
        "MiB/s: median over boots [lowest-highest boot], a boot's figure being the median of its \
         {RUNS} runs; ratio of the medians; KiB per request server/QEMU"
    );
    println!("  server: {server_name}");
    for (runs, drive) in qemus.iter().zip(&drives) {
        println!();
        print_comparison(&ours, runs, drive)?;
    }
    if !drives.iter().any(|drive| drive.contains("cache=writeback")) {
        println!();
        println!(
            "note: the servers do buffered I/O on the host file; GUEST_BENCH_QEMU_CACHE=\
             none,writeback adds QEMU with the same host I/O"
        );
    }
    println!();
    print_server_costs(&ours)?;
    println!();
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
