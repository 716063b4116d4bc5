// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A host Wayland compositor for the GPU checks: weston from the guest tree, headless, with the
//! pixman renderer and the kiosk shell (every toplevel fullscreen, so a client's buffer covers
//! the output at (0, 0)), and its screenshots.
//!
//! weston runs under `chroot` into the tree (its backends and shells are loaded from absolute
//! paths), so this needs root; its socket lives in the tree's /run, reachable from the host.

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

use super::process::Guarded;
use super::GuestEnv;

const SOCKET: &str = "wayland-check";

pub struct Weston {
    _process: Guarded,
    root: PathBuf,
    /// `XDG_RUNTIME_DIR` inside the tree.
    runtime_dir: String,
    pub width: u32,
    pub height: u32,
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

impl Weston {
    /// Starts weston with one `width` x `height` output; `name` keeps concurrent ones apart.
    pub fn start(env: &GuestEnv, name: &str, width: u32, height: u32) -> Result<Weston> {
        if !is_root() {
            bail!("starting weston under chroot needs root");
        }
        let runtime_dir = format!("/run/{name}");
        let host_dir = env.root.join(runtime_dir.trim_start_matches('/'));
        let _ = std::fs::remove_dir_all(&host_dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&host_dir)
            .with_context(|| format!("creating {}", host_dir.display()))?;
        let log = File::create(env.dir.join(format!("{name}-weston.log")))?;
        let mut command = Command::new("chroot");
        command
            .arg(&env.root)
            .args(["env", &format!("XDG_RUNTIME_DIR={runtime_dir}"), "weston"])
            .args([
                "--backend=headless",
                "--renderer=pixman",
                &format!("--width={width}"),
                &format!("--height={height}"),
                "--shell=kiosk",
                "--no-config",
                "--idle-time=0",
                // Needed for weston-screenshooter.
                "--debug",
                &format!("--socket={SOCKET}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = Guarded::spawn("weston", &mut command)?;
        let weston = Weston {
            _process: process,
            root: env.root.clone(),
            runtime_dir,
            width,
            height,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !weston.socket().exists() {
            if Instant::now() > deadline {
                bail!("weston did not create {}", weston.socket().display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(weston)
    }

    /// The compositor's socket, as a host path.
    pub fn socket(&self) -> PathBuf {
        self.host_path(&format!("{}/{SOCKET}", self.runtime_dir))
    }

    fn host_path(&self, tree_path: &str) -> PathBuf {
        self.root.join(tree_path.trim_start_matches('/'))
    }

    /// Captures the output with weston-screenshooter.
    pub fn screenshot(&self) -> Result<Screenshot> {
        let shots = format!("{}/shots", self.runtime_dir);
        let host_shots = self.host_path(&shots);
        let _ = std::fs::remove_dir_all(&host_shots);
        std::fs::create_dir_all(&host_shots)?;
        let status = Command::new("timeout")
            .arg("20")
            .arg("chroot")
            .arg(&self.root)
            .args([
                "sh",
                "-c",
                &format!(
                    "cd {shots} && XDG_RUNTIME_DIR={} WAYLAND_DISPLAY={SOCKET} weston-screenshooter",
                    self.runtime_dir
                ),
            ])
            .stdin(Stdio::null())
            .status()
            .context("running weston-screenshooter")?;
        if !status.success() {
            bail!("weston-screenshooter: {status}");
        }
        let png = std::fs::read_dir(&host_shots)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .context("weston-screenshooter wrote no PNG")?;
        decode_png(&png)
    }
}

impl Weston {
    /// Waits until the output shows `expected(x, y)` (XRGB) at every pixel of a `width` x
    /// `height` output: a commit is handled before the repaint that shows it. Returns how the
    /// last screenshot differed if it never does.
    pub fn wait_for_frame(
        &self,
        width: u32,
        height: u32,
        expected: impl Fn(u32, u32) -> u32,
    ) -> std::result::Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
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
