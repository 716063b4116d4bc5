// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! weston, headless, with the pixman renderer and the kiosk shell; screenshots with
//! weston-screenshooter.

use std::path::PathBuf;

use anyhow::Context;
use anyhow::Result;

use super::decode_png;
use super::Chrooted;
use super::Compositor;
use super::Screenshot;
use crate::guest::GuestEnv;

const SOCKET: &str = "wayland-check";

pub struct Weston {
    chrooted: Chrooted,
    pub width: u32,
    pub height: u32,
}

impl Weston {
    /// Starts weston with one `width` x `height` output; `name` keeps concurrent ones apart.
    pub fn start(env: &GuestEnv, name: &str, width: u32, height: u32) -> Result<Weston> {
        let args = [
            "--backend=headless".to_string(),
            "--renderer=pixman".to_string(),
            format!("--width={width}"),
            format!("--height={height}"),
            "--shell=kiosk".to_string(),
            "--no-config".to_string(),
            "--idle-time=0".to_string(),
            // Needed for weston-screenshooter.
            "--debug".to_string(),
            format!("--socket={SOCKET}"),
        ];
        let chrooted = Chrooted::spawn(env, name, "weston", &[], &args)?;
        let mut weston = Weston {
            chrooted,
            width,
            height,
        };
        let socket = weston.socket();
        weston
            .chrooted
            .wait_until("creating its socket", || socket.exists())?;
        Ok(weston)
    }

    // The trait's methods again, so that callers need not import it.

    /// See [`Compositor::socket`].
    pub fn socket(&self) -> PathBuf {
        Compositor::socket(self)
    }

    /// See [`Compositor::screenshot`].
    pub fn screenshot(&self) -> Result<Screenshot> {
        Compositor::screenshot(self)
    }

    /// See [`Compositor::wait_for_frame`].
    pub fn wait_for_frame(
        &self,
        width: u32,
        height: u32,
        expected: impl Fn(u32, u32) -> u32,
    ) -> std::result::Result<(), String> {
        Compositor::wait_for_frame(self, width, height, expected)
    }
}

impl Compositor for Weston {
    fn socket(&self) -> PathBuf {
        let chrooted = &self.chrooted;
        chrooted.host_path(&format!("{}/{SOCKET}", chrooted.runtime_dir))
    }

    /// Captures the output with weston-screenshooter, which writes a PNG named by the time into
    /// its working directory.
    fn screenshot(&self) -> Result<Screenshot> {
        let shots = format!("{}/shots", self.chrooted.runtime_dir);
        let host_shots = self.chrooted.host_path(&shots);
        let _ = std::fs::remove_dir_all(&host_shots);
        std::fs::create_dir_all(&host_shots)?;
        self.chrooted
            .run_client(SOCKET, &format!("cd {shots} && weston-screenshooter"))?;
        let png = std::fs::read_dir(&host_shots)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .context("weston-screenshooter wrote no PNG")?;
        decode_png(&png)
    }
}
