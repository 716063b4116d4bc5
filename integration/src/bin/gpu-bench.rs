// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Frames per second of a guest that redraws and commits a wl_shm buffer through crosvm's
//! virtio-gpu cross-domain context over vfio-user, in three modes of the host-visible BAR, in
//! the same run:
//!
//! - zero-copy: BAR2 mapped by the client, and the compositor given BAR2's own file for the
//!   wl_shm pool (the default);
//! - copy: BAR2 mapped by the client, and each frame copied out of BAR2's shadow into the blob
//!   the compositor holds (`--copy-wl-shm-frames`);
//! - trapped: BAR2 offered through REGION_READ/WRITE only (`--trapped-shared-memory`).
//!
//! Run as:
//!
//!     CROSVM_BIN=/path/to/crosvm gpu-bench [--width 1920] [--height 1080] [--rounds 3]
//!                                          [--mapped-frames 20] [--trapped-frames 1]
//!
//! Zero-copy and copy boot alternately, `--rounds` times each, and the table gives each one's
//! median and spread (min-max) over its rounds; trapped boots once. Needs root (weston runs under
//! chroot in the guest tree). The guest is QEMU under TCG, so drawing dominates a frame; the
//! server's own log gives what its relay copied.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::guest;
use integration::guest::compositor::is_root;
use integration::guest::compositor::Weston;
use integration::guest::programs;
use integration::guest::shell_quote;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::relay_log::relay_connections;
use integration::stats::Spread;

struct Options {
    width: u32,
    height: u32,
    rounds: u32,
    mapped_frames: u32,
    trapped_frames: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    ZeroCopy,
    Copy,
    Trapped,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ZeroCopy => "zero-copy",
            Mode::Copy => "copy",
            Mode::Trapped => "trapped",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Mode::ZeroCopy => "",
            Mode::Copy => "--copy-wl-shm-frames",
            Mode::Trapped => "--trapped-shared-memory",
        }
    }
}

/// One boot's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    fps: f64,
    frame_ms: f64,
    draw_ms: f64,
    commit_ms: f64,
    /// What the server's relay copied out, per frame, from its log.
    copied_bytes: f64,
    copy_ms: f64,
    /// How often the compositor got BAR2's file in place of a blob's.
    lent_files: u64,
}

fn main() -> Result<()> {
    let options = parse_args()?;
    let Some(crosvm) = std::env::var_os("CROSVM_BIN").map(PathBuf::from) else {
        bail!("CROSVM_BIN must name a crosvm binary with `device vfio-user-server gpu`");
    };
    if !is_root() {
        bail!("weston runs under chroot: run as root");
    }
    let env = GuestEnv::prepare()?;
    let program = programs::build(&env, "wayland-pattern")?;
    let weston = Weston::start(&env, "gpu-bench", options.width, options.height)?;
    let mut zero_copy = Vec::new();
    let mut copy = Vec::new();
    for round in 0..options.rounds {
        for (mode, into) in [(Mode::ZeroCopy, &mut zero_copy), (Mode::Copy, &mut copy)] {
            let figures = measure(&env, &crosvm, &weston, &program, &options, mode, round)?;
            eprintln!("round {round}, {}: {figures:?}", mode.name());
            into.push(figures);
        }
    }
    let trapped = measure(&env, &crosvm, &weston, &program, &options, Mode::Trapped, 0)?;

    println!(
        "{}x{} XRGB wl_shm buffer, copied in by the guest from RAM (8-byte stores) and committed, \
         each commit followed by a round trip; medians over {} alternating boots (min-max)",
        options.width, options.height, options.rounds
    );
    println!(
        "{:<10} {:>6} {:>22} {:>10} {:>9} {:>10} {:>16} {:>13} {:>5}",
        "BAR2",
        "frames",
        "fps",
        "frame ms",
        "draw ms",
        "commit ms",
        "copied B/frame",
        "copy ms/frame",
        "lent"
    );
    let rows = [
        (Mode::ZeroCopy, options.mapped_frames, &zero_copy[..]),
        (Mode::Copy, options.mapped_frames, &copy[..]),
        (
            Mode::Trapped,
            options.trapped_frames,
            std::slice::from_ref(&trapped),
        ),
    ];
    for (mode, frames, runs) in rows {
        let fps = Spread::of(runs, |f| f.fps);
        println!(
            "{:<10} {frames:>6} {:>22} {:>10.1} {:>9.1} {:>10.1} {:>16.0} {:>13.2} {:>5}",
            mode.name(),
            format!("{:.3} ({:.3}-{:.3})", fps.median, fps.min, fps.max),
            Spread::of(runs, |f| f.frame_ms).median,
            Spread::of(runs, |f| f.draw_ms).median,
            Spread::of(runs, |f| f.commit_ms).median,
            Spread::of(runs, |f| f.copied_bytes).median,
            Spread::of(runs, |f| f.copy_ms).median,
            runs.iter().map(|f| f.lent_files).max().unwrap_or(0),
        );
    }
    let ratios: Vec<f64> = zero_copy
        .iter()
        .zip(&copy)
        .map(|(z, c)| z.fps / c.fps)
        .collect();
    let ratio = Spread::of(&ratios, |r| *r);
    let target = ratio.median >= 1.2;
    println!(
        "zero-copy/copy fps: {:.3}x median of the {} pairs ({:.3}-{:.3}); target >= 1.2x: {}",
        ratio.median,
        ratios.len(),
        ratio.min,
        ratio.max,
        if target { "met" } else { "NOT met" }
    );
    let mapped = Spread::of(&copy, |f| f.fps).median;
    println!(
        "copy/trapped fps: {:.0}x",
        mapped / trapped.fps.max(f64::MIN_POSITIVE)
    );
    Ok(())
}

fn measure(
    env: &GuestEnv,
    crosvm: &Path,
    weston: &Weston,
    program: &Path,
    options: &Options,
    mode: Mode,
    round: u32,
) -> Result<Figures> {
    let frames = if mode == Mode::Trapped {
        options.trapped_frames
    } else {
        options.mapped_frames
    };
    let name = format!("gpu-bench-{}-{round}", mode.name());
    // Sandboxed, as served by default, its root an empty directory of ours.
    let server = format!(
        "{} device vfio-user-server gpu --socket {{socket}} --wayland-sock '{}' {} --params \
         '{{\"context-types\":\"cross-domain\"}}' --jail {}",
        crosvm.display(),
        weston.socket().display(),
        mode.flag(),
        shell_quote(&integration::sandbox::jail_value()?),
    );
    let boot = Boot {
        name: name.clone(),
        servers: vec![server],
        script: format!("/bin/wayland-pattern --bench {frames}\n"),
        modules: vec!["virtio_gpu".to_string()],
        echo_prefix: Some(format!("[{name}] ")),
        timeout: Duration::from_secs(1800),
        files: vec![("/bin/wayland-pattern".to_string(), program.to_path_buf())],
        ..Boot::default()
    };
    let run = guest::run(env, &boot)?;
    run.check()?;
    let value = |key: &str| -> Result<f64> {
        run.result(key)?
            .parse::<f64>()
            .with_context(|| format!("{key} is not a number"))
    };
    let log_path = env
        .dir
        .join("runs")
        .join(format!("{name}.servers/server0.log"));
    let log = std::fs::read_to_string(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    // The guest program makes one relay connection; every frame goes through it.
    let connections = relay_connections(&log);
    let Some(relay) = connections.iter().max_by_key(|c| c.messages) else {
        bail!("{}: the relay reported no connection", log_path.display());
    };
    let frames = f64::from(frames.max(1));
    Ok(Figures {
        fps: value("bench.fps")?,
        frame_ms: value("bench.frame_ms")?,
        draw_ms: value("bench.draw_ms")?,
        commit_ms: value("bench.commit_ms")?,
        copied_bytes: relay.copied_bytes as f64 / frames,
        copy_ms: relay.copy_ms / frames,
        lent_files: relay.lent_files,
    })
}

fn parse_args() -> Result<Options> {
    let mut options = Options {
        width: 1920,
        height: 1080,
        rounds: 3,
        mapped_frames: 20,
        trapped_frames: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            bail!("{} needs a value", pair[0]);
        };
        let value: u32 = value.parse().with_context(|| format!("{flag} {value}"))?;
        match flag.as_str() {
            "--width" => options.width = value,
            "--height" => options.height = value,
            "--rounds" => options.rounds = value.max(1),
            "--mapped-frames" => options.mapped_frames = value,
            "--trapped-frames" => options.trapped_frames = value,
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(options)
}
