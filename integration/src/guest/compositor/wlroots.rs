// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! cage, a kiosk compositor on wlroots: headless, with the pixman renderer; screenshots with
//! grim (wlr-screencopy).
//!
//! cage maximizes every toplevel to the output and sends that size in the first configure, as
//! weston's kiosk shell does. It has no options for its output, and wlroots' headless backend
//! makes each output 1280x720 (`WLR_HEADLESS_OUTPUTS` sets only how many), so the output is
//! sized afterwards with wlr-randr, through wlr-output-management, which cage serves. That is
//! done by the one program cage insists on running (cage exits when it does): a shell that
//! sizes the output, reports the socket cage gave it in `WAYLAND_DISPLAY`, and sleeps.
//!
//! Its log shows "A configure is scheduled for an uninitialized xdg_surface" for a client that
//! asks for fullscreen before its first commit, as ours do: cage answers the request before
//! wlroots lets it, and the first commit gets its configure all the same.
//!
//! cage also listens for X11 clients for Xwayland, which it starts only when one connects: the
//! sockets and lock files it leaves in the tree's /tmp when killed are taken over by the next
//! cage once their process is gone.

use std::path::PathBuf;

use anyhow::bail;
use anyhow::Result;

use super::decode_png;
use super::runtime_dir;
use super::Chrooted;
use super::Compositor;
use super::Screenshot;
use crate::guest::GuestEnv;

/// Written by cage's program into the runtime directory once the output has its size: the
/// socket's name.
const DISPLAY_FILE: &str = "display";

pub struct Cage {
    chrooted: Chrooted,
    /// The socket's name in the runtime directory.
    display: String,
    pub width: u32,
    pub height: u32,
}

impl Cage {
    /// Starts cage with one `width` x `height` output; `name` keeps concurrent ones apart.
    pub fn start(env: &GuestEnv, name: &str, width: u32, height: u32) -> Result<Cage> {
        let dir = runtime_dir(name);
        // The headless backend's one output is HEADLESS-1. The socket's name is written aside
        // and renamed, so that it is never read half written.
        let program = format!(
            "wlr-randr --output HEADLESS-1 --custom-mode {width}x{height} \
             && echo \"$WAYLAND_DISPLAY\" > {dir}/{DISPLAY_FILE}.new \
             && mv {dir}/{DISPLAY_FILE}.new {dir}/{DISPLAY_FILE} \
             && exec sleep infinity"
        );
        let vars = [
            // Otherwise wlroots picks a backend from its environment: a window in the desktop
            // the checks are run from, if any, else the seat of the console, through logind or a
            // seatd of its own, which in the tree finds no terminal and hangs.
            ("WLR_BACKENDS", "headless"),
            // Software rendering, as weston's: wlroots would otherwise look for a GPU first,
            // and the pixels must not depend on the machine.
            ("WLR_RENDERER", "pixman"),
        ];
        let args = [
            "--".to_string(),
            "sh".to_string(),
            "-c".to_string(),
            program,
        ];
        let mut chrooted = Chrooted::spawn(env, name, "cage", &vars, &args)?;
        let display_file = chrooted.host_path(&format!("{dir}/{DISPLAY_FILE}"));
        chrooted.wait_until("sizing its output", || display_file.exists())?;
        let display = std::fs::read_to_string(&display_file)?.trim().to_string();
        let cage = Cage {
            chrooted,
            display,
            width,
            height,
        };
        // wlr-randr exits with 0 even when the compositor refuses the mode.
        let shot = cage.screenshot()?;
        if (shot.width, shot.height) != (width, height) {
            bail!(
                "cage's output is {}x{}, not {width}x{height} (its log: {})",
                shot.width,
                shot.height,
                cage.chrooted.log.display()
            );
        }
        Ok(cage)
    }
}

impl Compositor for Cage {
    fn socket(&self) -> PathBuf {
        let chrooted = &self.chrooted;
        chrooted.host_path(&format!("{}/{}", chrooted.runtime_dir, self.display))
    }

    /// Captures the output with grim, without the cursor.
    fn screenshot(&self) -> Result<Screenshot> {
        let shot = format!("{}/shot.png", self.chrooted.runtime_dir);
        let host_shot = self.chrooted.host_path(&shot);
        let _ = std::fs::remove_file(&host_shot);
        self.chrooted
            .run_client(&self.display, &format!("grim {shot}"))?;
        decode_png(&host_shot)
    }
}
