// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Adaptive polling of the client's socket.
//!
//! A client that waits for the reply to each message (cloud-hypervisor's BAR writes are
//! synchronous: a queue notify costs its vCPU a full round trip) sends its next message soon
//! after the last reply. Sleeping on the socket in between costs the server a wakeup, and when
//! client and server run on different CPUs the wakeup of an idle CPU can cost far more than the
//! round trip itself. So after a message the server may spin on the socket for a while before it
//! sleeps.
//!
//! The spin adapts, as KVM's halt polling does: its budget grows while messages arrive soon after
//! the server gave up spinning, and shrinks while they do not, so that a client that is idle, or
//! that posts its writes without waiting (QEMU), costs little CPU. Polling is off unless a
//! maximum is set, and then costs nothing: no clock read, no syscall.

use std::io;
use std::time::Duration;
use std::time::Instant;

/// The spin budget's state for one connection.
#[derive(Clone, Debug)]
pub struct AdaptivePoll {
    /// The longest spin; zero turns polling off.
    max: Duration,
    /// The current spin, between zero and `max`.
    budget: Duration,
}

impl AdaptivePoll {
    /// Polling for up to `max` after each message; `Duration::ZERO` turns it off.
    pub fn new(max: Duration) -> AdaptivePoll {
        AdaptivePoll { max, budget: max }
    }

    /// No polling.
    pub fn off() -> AdaptivePoll {
        AdaptivePoll::new(Duration::ZERO)
    }

    pub fn is_enabled(&self) -> bool {
        !self.max.is_zero()
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long the next spin may last.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Spins until `ready` says a message is there or the budget has passed. Returns whether a
    /// message is there; false at once, without calling `ready`, when the budget is zero.
    pub fn spin(&mut self, mut ready: impl FnMut() -> io::Result<bool>) -> io::Result<bool> {
        if self.budget.is_zero() {
            return Ok(false);
        }
        let start = Instant::now();
        loop {
            if ready()? {
                return Ok(true);
            }
            if start.elapsed() >= self.budget {
                return Ok(false);
            }
            // Not a bare spin: a client on this same CPU must get to run to send anything, and
            // yielding lets it; with nothing else to run the yield returns at once.
            std::thread::yield_now();
        }
    }

    /// Tells the policy how long the server slept, after a spin that gave up (or had no budget),
    /// until the next message: one that came within `max` would have been caught by a longer
    /// spin, so the budget grows; one that came later would not, so it shrinks.
    pub fn slept(&mut self, slept: Duration) {
        if !self.is_enabled() {
            return;
        }
        if slept <= self.max {
            let floor = self.max / GROW_FROM;
            self.budget = (self.budget * 2).max(floor).min(self.max);
        } else {
            self.budget /= 2;
            if self.budget < self.max / SHRINK_TO_ZERO_BELOW {
                self.budget = Duration::ZERO;
            }
        }
    }
}

impl Default for AdaptivePoll {
    fn default() -> AdaptivePoll {
        AdaptivePoll::off()
    }
}

/// A budget that grows from zero starts at `max / GROW_FROM`.
const GROW_FROM: u32 = 8;
/// A budget that shrinks below `max / SHRINK_TO_ZERO_BELOW` stops spinning altogether, until a
/// message comes soon after a sleep again.
const SHRINK_TO_ZERO_BELOW: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(100);

    #[test]
    fn off_never_calls_ready() {
        let mut poll = AdaptivePoll::off();
        assert!(!poll.is_enabled());
        let ready = poll
            .spin(|| panic!("polling is off: nothing may be polled"))
            .unwrap();
        assert!(!ready);
        poll.slept(Duration::from_nanos(1));
        assert_eq!(poll.budget(), Duration::ZERO);
    }

    #[test]
    fn a_message_already_there_ends_the_spin_at_once() {
        let mut poll = AdaptivePoll::new(Duration::from_secs(60));
        let mut calls = 0;
        let ready = poll
            .spin(|| {
                calls += 1;
                Ok(true)
            })
            .unwrap();
        assert!(ready);
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_spin_gives_up_after_its_budget() {
        let mut poll = AdaptivePoll::new(Duration::from_millis(2));
        let start = Instant::now();
        let mut calls = 0u64;
        let ready = poll
            .spin(|| {
                calls += 1;
                Ok(false)
            })
            .unwrap();
        assert!(!ready);
        assert!(start.elapsed() >= Duration::from_millis(2));
        assert!(calls > 1, "it polled more than once");
    }

    #[test]
    fn errors_end_the_spin() {
        let mut poll = AdaptivePoll::new(Duration::from_secs(60));
        let result = poll.spin(|| Err(io::Error::other("gone")));
        assert!(result.is_err());
    }

    #[test]
    fn long_sleeps_shrink_the_budget_to_nothing() {
        let mut poll = AdaptivePoll::new(MAX);
        let mut budgets = Vec::new();
        for _ in 0..6 {
            poll.slept(Duration::from_millis(10));
            budgets.push(poll.budget().as_nanos());
        }
        assert_eq!(budgets, [50_000, 25_000, 12_500, 6_250, 0, 0]);
    }

    #[test]
    fn short_sleeps_grow_it_back_to_the_maximum() {
        let mut poll = AdaptivePoll::new(MAX);
        for _ in 0..8 {
            poll.slept(Duration::from_millis(10));
        }
        assert_eq!(poll.budget(), Duration::ZERO);
        let mut budgets = Vec::new();
        for _ in 0..5 {
            poll.slept(Duration::from_micros(30));
            budgets.push(poll.budget().as_nanos());
        }
        assert_eq!(budgets, [12_500, 25_000, 50_000, 100_000, 100_000]);
    }

    #[test]
    fn a_sleep_of_exactly_the_maximum_counts_as_short() {
        let mut poll = AdaptivePoll::new(MAX);
        poll.slept(Duration::from_millis(1));
        assert_eq!(poll.budget(), MAX / 2);
        poll.slept(MAX);
        assert_eq!(poll.budget(), MAX);
    }
}
