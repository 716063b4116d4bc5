// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Frames per second of a guest that redraws and commits a wl_shm buffer through crosvm's
//! virtio-gpu cross-domain context over vfio-user, with the host-visible BAR mapped by the
//! client (the shadow copy) and trapped (every guest store a REGION_WRITE), in the same run:
//!
//!     CROSVM_BIN=/path/to/crosvm gpu-bench [--width 1920] [--height 1080]
//!                                          [--mapped-frames 20] [--trapped-frames 1]
//!
//! Needs root (weston runs under chroot in the guest tree). The guest is QEMU under TCG, so
//! drawing dominates a mapped frame; the relay's own log gives the copy's share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::guest;
use integration::guest::compositor::is_root;
use integration::guest::compositor::Weston;
use integration::guest::programs;
use integration::guest::Boot;
use integration::guest::GuestEnv;

struct Options {
    width: u32,
    height: u32,
    mapped_frames: u32,
    trapped_frames: u32,
}

struct Figures {
    fps: f64,
    frame_ms: f64,
    draw_ms: f64,
    commit_ms: f64,
    /// The relay's copy-out per frame, from the server's log.
    copy_ms: Option<f64>,
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
    let mapped = measure(&env, &crosvm, &weston, &program, &options, false)?;
    let trapped = measure(&env, &crosvm, &weston, &program, &options, true)?;

    println!(
        "{}x{} XRGB wl_shm buffer, copied in by the guest from RAM (8-byte stores) and committed, each \
         commit followed by a round trip",
        options.width, options.height
    );
    println!(
        "{:<8} {:>7} {:>9} {:>10} {:>9} {:>10} {:>13}",
        "BAR2", "frames", "fps", "frame ms", "draw ms", "commit ms", "copy-out ms"
    );
    for (name, frames, f) in [
        ("mapped", options.mapped_frames, &mapped),
        ("trapped", options.trapped_frames, &trapped),
    ] {
        println!(
            "{name:<8} {frames:>7} {:>9.3} {:>10.1} {:>9.1} {:>10.1} {:>13}",
            f.fps,
            f.frame_ms,
            f.draw_ms,
            f.commit_ms,
            f.copy_ms.map_or("-".to_string(), |c| format!("{c:.2}")),
        );
    }
    let ratio = mapped.fps / trapped.fps;
    println!(
        "mapped/trapped fps: {ratio:.0}x (target >= 100x: {})",
        if ratio >= 100.0 { "met" } else { "NOT met" }
    );
    if let Some(copy) = mapped.copy_ms {
        println!(
            "copy-out share of a mapped frame: {:.2}% ({copy:.2} ms of {:.1} ms)",
            copy / mapped.frame_ms * 100.0,
            mapped.frame_ms
        );
    }
    Ok(())
}

fn measure(
    env: &GuestEnv,
    crosvm: &std::path::Path,
    weston: &Weston,
    program: &std::path::Path,
    options: &Options,
    trapped: bool,
) -> Result<Figures> {
    let frames = if trapped {
        options.trapped_frames
    } else {
        options.mapped_frames
    };
    let name = if trapped {
        "gpu-bench-trapped"
    } else {
        "gpu-bench-mapped"
    };
    let server = format!(
        "{} device vfio-user-server gpu --socket {{socket}} --wayland-sock '{}' {} --params \
         '{{\"context-types\":\"cross-domain\"}}'",
        crosvm.display(),
        weston.socket().display(),
        if trapped {
            "--trapped-shared-memory"
        } else {
            ""
        },
    );
    let boot = Boot {
        name: name.to_string(),
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
    let log = std::fs::read_to_string(
        env.dir
            .join("runs")
            .join(format!("{name}.servers/server0.log")),
    )
    .unwrap_or_default();
    // "copied out N MiB in T ms" once per relay connection; the guest program makes one.
    let copy_ms = log
        .lines()
        .filter_map(|line| {
            line.split(" in ")
                .nth(1)?
                .strip_suffix(" ms")?
                .parse::<f64>()
                .ok()
        })
        .reduce(f64::max)
        .map(|total| total / f64::from(frames.max(1)));
    Ok(Figures {
        fps: value("bench.fps")?,
        frame_ms: value("bench.frame_ms")?,
        draw_ms: value("bench.draw_ms")?,
        commit_ms: value("bench.commit_ms")?,
        copy_ms,
    })
}

fn parse_args() -> Result<Options> {
    let mut options = Options {
        width: 1920,
        height: 1080,
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
            "--mapped-frames" => options.mapped_frames = value,
            "--trapped-frames" => options.trapped_frames = value,
            _ => bail!("unknown option {flag}"),
        }
    }
    Ok(options)
}
