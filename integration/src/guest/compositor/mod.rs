// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Host Wayland compositors for the GPU checks, and their screenshots. Two of them, so that what
//! the checks pass through is not tuned to one compositor's ways:
//!
//! - [`Weston`]: weston, with its kiosk shell.
//! - [`Cage`]: cage, a kiosk on wlroots.
//!
//! Both run from the guest tree, headless, with a pixman (software) renderer, and make every
//! toplevel fullscreen, so a client's buffer covers the output at (0, 0) and a screenshot must
//! show its pixels exactly. A check written against [`Compositor`] takes either.
//!
//! They run under `chroot` into the tree (they load their plugins and libraries from absolute
//! paths), so this needs root; their sockets live in the tree's /run, reachable from the host.

mod weston;
mod wlroots;

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

pub use self::weston::Weston;
pub use self::wlroots::Cage;
use super::env::tail_of_file;
use super::process::Guarded;
use super::GuestEnv;

/// How long a compositor may take to start, and a screenshot to be taken.
const TIMEOUT: Duration = Duration::from_secs(20);

/// What a check needs of a host compositor, whichever it is.
pub trait Compositor {
    /// The compositor's socket, as a host path.
    fn socket(&self) -> PathBuf;

    /// Captures the whole output.
    fn screenshot(&self) -> Result<Screenshot>;

    /// Waits until the output shows `expected(x, y)` (XRGB) at every pixel of a `width` x
    /// `height` output: a commit is handled before the repaint that shows it. Returns how the
    /// last screenshot differed if it never does.
    fn wait_for_frame(
        &self,
        width: u32,
        height: u32,
        expected: impl Fn(u32, u32) -> u32,
    ) -> std::result::Result<(), String> {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.screenshot() {
                Ok(shot) if (shot.width, shot.height) != (width, height) => {
                    last = format!("screenshot is {}x{}", shot.width, shot.height);
                }
                Ok(shot) => match shot.differences(&expected) {
                    None => return Ok(()),
                    Some(diff) => last = diff,
                },
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last)
    }
}

/// An RGB screenshot.
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Screenshot {
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        let at = (y as usize * self.width as usize + x as usize) * 3;
        let p = &self.rgb[at..at + 3];
        (u32::from(p[0]) << 16) | (u32::from(p[1]) << 8) | u32::from(p[2])
    }

    /// How the screenshot differs from `expected(x, y)` (XRGB): `None` if it does not.
    pub fn differences(&self, expected: impl Fn(u32, u32) -> u32) -> Option<String> {
        let mut count = 0usize;
        let mut first = None;
        for y in 0..self.height {
            for x in 0..self.width {
                let (got, want) = (self.pixel(x, y), expected(x, y) & 0xff_ffff);
                if got != want {
                    count += 1;
                    first.get_or_insert((x, y, got, want));
                }
            }
        }
        first.map(|(x, y, got, want)| {
            format!(
                "{count} of {} pixels differ; first at ({x}, {y}): {got:06x}, expected {want:06x}",
                self.width * self.height
            )
        })
    }
}

/// A compositor process under `chroot` into the tree, with its own `XDG_RUNTIME_DIR` there.
struct Chrooted {
    process: Guarded,
    /// What it runs, for messages.
    program: &'static str,
    root: PathBuf,
    /// `XDG_RUNTIME_DIR` inside the tree.
    runtime_dir: String,
    log: PathBuf,
}

impl Chrooted {
    /// Runs `program` with `args` and `vars` in its environment, logging to
    /// `<cache>/<name>-<program>.log`; `name` keeps concurrent ones apart.
    fn spawn(
        env: &GuestEnv,
        name: &str,
        program: &'static str,
        vars: &[(&str, &str)],
        args: &[String],
    ) -> Result<Chrooted> {
        if !is_root() {
            bail!("starting {program} under chroot needs root");
        }
        let runtime_dir = runtime_dir(name);
        let host_dir = env.root.join(runtime_dir.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&host_dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&host_dir)
            .with_context(|| format!("creating {}", host_dir.display()))?;
        let log_path = env.dir.join(format!("{name}-{program}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new("chroot");
        command
            .arg(&env.root)
            .arg("env")
            .arg(format!("XDG_RUNTIME_DIR={runtime_dir}"))
            .args(vars.iter().map(|(key, value)| format!("{key}={value}")))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = Guarded::spawn(program, &mut command)?;
        Ok(Chrooted {
            process,
            program,
            root: env.root.clone(),
            runtime_dir,
            log: log_path,
        })
    }

    /// Waits until `ready()`, for `what`; fails early if the compositor exits.
    fn wait_until(&mut self, what: &str, ready: impl Fn() -> bool) -> Result<()> {
        let deadline = Instant::now() + TIMEOUT;
        while !ready() {
            if let Some(status) = self.process.try_status()? {
                bail!(
                    "{} exited ({status}) before {what}; the end of its log {}:\n{}",
                    self.program,
                    self.log.display(),
                    tail_of_file(&self.log, 0, 4000)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not done {what} after {TIMEOUT:?} (its log: {})",
                    self.program,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// `tree_path`, a path in the tree, as a host path.
    fn host_path(&self, tree_path: &str) -> PathBuf {
        self.root.join(tree_path.trim_start_matches('/'))
    }

    /// Runs the shell command `script` in the tree as a client of the compositor's socket
    /// `display`, for at most [`TIMEOUT`].
    fn run_client(&self, display: &str, script: &str) -> Result<()> {
        let status = Command::new("timeout")
            .arg(TIMEOUT.as_secs().to_string())
            .arg("chroot")
            .arg(&self.root)
            .arg("env")
            .arg(format!("XDG_RUNTIME_DIR={}", self.runtime_dir))
            .arg(format!("WAYLAND_DISPLAY={display}"))
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running {script:?}"))?;
        if !status.success() {
            bail!("{script:?}: {status}");
        }
        Ok(())
    }
}

/// The `XDG_RUNTIME_DIR` in the tree of the compositor called `name`.
fn runtime_dir(name: &str) -> String {
    format!("/run/{name}")
}

fn decode_png(path: &Path) -> Result<Screenshot> {
    let decoder = png::Decoder::new(File::open(path)?);
    let mut reader = decoder.read_info().context("reading the PNG header")?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).context("decoding the PNG")?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => bail!("unexpected PNG color type {other:?}"),
    };
    if info.bit_depth != png::BitDepth::Eight {
        bail!("unexpected PNG bit depth {:?}", info.bit_depth);
    }
    let rgb = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Screenshot {
        width: info.width,
        height: info.height,
        rgb,
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no memory effects and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
