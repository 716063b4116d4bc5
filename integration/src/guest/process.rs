// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Child processes that cannot outlive the harness: QEMU, the servers and the tree's build.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Child;
use std::process::ChildStdin;
use std::process::ChildStdout;
use std::process::Command;
use std::process::ExitStatus;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use anyhow::Result;

/// A child that leads its own process group, killed with that group when dropped, including
/// while a panicking test unwinds.
///
/// The kernel also signals the child if the harness dies without unwinding (SIGKILL, abort),
/// through `PR_SET_PDEATHSIG`. That reaches the child only, not its own children (see the
/// servers' watchdog for those).
///
/// The leader is reaped only after its group has been killed: until then its pid, and so the
/// group id, cannot be reused by an unrelated process.
pub struct Guarded {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

impl Guarded {
    /// Spawns `command` in a new process group; `death_signal` is what the child gets if the
    /// spawning thread dies first.
    pub fn spawn_with_death_signal(
        name: &str,
        command: &mut Command,
        death_signal: libc::c_int,
    ) -> Result<Guarded> {
        command.process_group(0);
        // SAFETY: the closure runs between fork and exec and only makes the async-signal-safe
        // prctl system call.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Guarded {
            name: name.to_string(),
            child,
            status: None,
        })
    }

    pub fn spawn(name: &str, command: &mut Command) -> Result<Guarded> {
        Guarded::spawn_with_death_signal(name, command, libc::SIGKILL)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The leader's process id, which is also the group's id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The exit status if the leader has exited; what is left of its group is then killed.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() && !self.leader_exited()? {
            return Ok(None);
        }
        Ok(Some(self.kill()))
    }

    /// Waits for the leader to exit until `timeout` has passed: `None` if it is still running.
    pub fn wait_with_deadline(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Asks the whole group to stop with SIGTERM, and kills it after `grace`.
    pub fn terminate_group(&mut self, grace: Duration) -> ExitStatus {
        if self.status.is_none() {
            self.signal_group(libc::SIGTERM);
            let _ = self.wait_with_deadline(grace);
        }
        self.kill()
    }

    /// Kills the whole group and reaps the leader; returns the leader's exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        self.signal_group(libc::SIGKILL);
        let status = loop {
            match self.child.wait() {
                Ok(status) => break status,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Only possible if the child was reaped behind our back: report a kill.
                Err(_) => break std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL),
            }
        };
        self.status = Some(status);
        status
    }

    /// Whether the leader has exited, without reaping it.
    fn leader_exited(&self) -> Result<bool> {
        // SAFETY: an all-zero siginfo_t is valid; waitid writes into it and nothing else.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid siginfo_t that outlives the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_PID,
                self.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if ret != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("waiting for {}", self.name));
        }
        // SAFETY: waitid filled `info` in, and si_pid is zero when no child has changed state.
        Ok(unsafe { info.si_pid() } != 0)
    }

    fn signal_group(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill() has no memory effects; the group is the one this unreaped child leads.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}
