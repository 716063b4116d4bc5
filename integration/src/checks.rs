// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A test harness for checks that cannot run on every machine (no crosvm binary, not root, no
//! `/dev/vhost-vsock`): such a check is reported by cargo as `ignored (REASON)` and counted
//! as ignored, never as passed. libtest has no way for a test to ignore itself at run time, so
//! test files that need one set `harness = false` and call [`run`] from their `main`, which
//! takes libtest's own options (filters, `--test-threads`, `--list`, ...).

use libtest_mimic::Arguments;
use libtest_mimic::Completion;
use libtest_mimic::Trial;

/// Why a check did not pass.
#[derive(Debug)]
pub enum NotPassed {
    /// The check cannot run here, for this reason; nothing was checked.
    Skipped(String),
    Failed(anyhow::Error),
}

/// What a check returns: `?` turns any error into a failure; [`skip`] and [`require`] say that
/// the check cannot run here.
pub type Checked = std::result::Result<(), NotPassed>;

/// The check cannot run here, for `reason`.
pub fn skip(reason: impl Into<String>) -> NotPassed {
    NotPassed::Skipped(reason.into())
}

/// Skips the check, for `reason`, unless `condition` holds.
pub fn require(condition: bool, reason: impl Into<String>) -> Checked {
    if condition {
        Ok(())
    } else {
        Err(skip(reason))
    }
}

impl<E: Into<anyhow::Error>> From<E> for NotPassed {
    fn from(error: E) -> NotPassed {
        NotPassed::Failed(error.into())
    }
}

/// A named check for [`run`].
pub type Check = (&'static str, fn() -> Checked);

/// Runs `checks` as libtest would run `#[test]`s, with the process's arguments, and exits: a
/// skipped check is reported as ignored with its reason, a failure or a panic as FAILED.
pub fn run(checks: &[Check]) -> ! {
    run_around(|_, check| check(), checks)
}

/// [`run`], every check called through `around` with its name, which may assert more of each.
pub fn run_around(around: fn(&str, fn() -> Checked) -> Checked, checks: &[Check]) -> ! {
    let arguments = Arguments::from_args();
    let trials = checks
        .iter()
        .map(|&(name, check)| {
            Trial::ignorable_test(name, move || match around(name, check) {
                Ok(()) => Ok(Completion::Completed),
                Err(NotPassed::Skipped(reason)) => Ok(Completion::ignored_with(reason)),
                Err(NotPassed::Failed(error)) => Err(format!("{error:?}").into()),
            })
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_nothing() -> Checked {
        require(true, "never")?;
        Ok(())
    }

    fn needs_a_unicorn() -> Checked {
        require(false, "this host has no unicorn")?;
        unreachable!("a skipped check goes no further");
    }

    fn fails() -> Checked {
        std::fs::read("/nonexistent/file")?;
        Ok(())
    }

    #[test]
    fn outcomes() {
        assert!(needs_nothing().is_ok());
        assert!(
            matches!(needs_a_unicorn(), Err(NotPassed::Skipped(reason)) if reason == "this host has no unicorn")
        );
        assert!(matches!(fails(), Err(NotPassed::Failed(_))));
    }
}
