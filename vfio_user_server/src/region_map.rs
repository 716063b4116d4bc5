// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A proposed protocol extension: the server asks the client to map a file over part of a
//! mappable region, and later to put the region's own file back, so that memory a device places
//! in a region while the guest runs (virtio-gpu blobs) is shared, not copied.
//!
//! Wire format (server to client, after the client proposed `"x-region-map": true` in VERSION
//! and the server's reply repeated it):
//!
//! ```text
//! REGION_MAP   (command 0x7f00): RegionMap body + 1 fd; the client maps `size` bytes of the fd
//!              from `fd_offset` at `offset` of its mapping of region `region`, MAP_SHARED |
//!              MAP_FIXED, with the protection of `flags` (READ 1, WRITE 2).
//! REGION_UNMAP (command 0x7f01): RegionMap body, no fd, `fd_offset` 0; the client maps the
//!              region's own file back over that range (from GET_REGION_INFO).
//! ```
//!
//! `offset` and `size` are page multiples inside one mmap area of the region (the whole region,
//! or a sparse area). The client replies with a header only, or an error reply with an errno; the
//! server acknowledges the device's mapping only after the reply, so the guest never sees the
//! range before the file is there. Replacing the pages of an existing mapping in place needs no
//! change to the VMM's memory slots: KVM and TCG both follow the host mapping.
//!
//! Requests come from any thread (a device worker); the connection's own thread sends them and
//! reads the replies, so the socket keeps one writer. A request the connection has not picked up
//! by its deadline is withdrawn, and the caller falls back to copying.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Condvar;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;

use crate::sys;

/// How long a requester waits for the connection to pick its request up and the client to
/// answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// One request for the client.
#[derive(Debug)]
pub enum RegionMapRequest {
    Map {
        region: u32,
        offset: u64,
        size: u64,
        fd: OwnedFd,
        fd_offset: u64,
        writable: bool,
    },
    Unmap {
        region: u32,
        offset: u64,
        size: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegionMapOutcome {
    /// The client applied it.
    Done,
    /// The client did not opt in (or went away): nothing was sent.
    NotOffered,
    /// Nothing was sent before the deadline; the request is withdrawn.
    TimedOut,
    /// The client refused, with this errno, or the exchange failed.
    Failed(i32),
}

/// Requests waiting for the connection's thread, and their results.
pub struct RegionMapQueue {
    wake: OwnedFd,
    state: Mutex<QueueState>,
    done: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// The current client opted in.
    enabled: bool,
    next_id: u64,
    pending: VecDeque<(u64, RegionMapRequest)>,
    /// Requests sent, not yet answered.
    in_flight: u64,
    results: BTreeMap<u64, RegionMapOutcome>,
    /// Posted requests: nobody collects their results.
    unwaited: std::collections::BTreeSet<u64>,
}

impl RegionMapQueue {
    pub fn new() -> io::Result<RegionMapQueue> {
        Ok(RegionMapQueue {
            wake: sys::eventfd(true)?,
            state: Mutex::default(),
            done: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Readable while requests wait: the connection's owner polls it with the socket and calls
    /// `Connection::handle_region_maps`.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Whether the current client takes requests.
    pub fn enabled(&self) -> bool {
        self.lock().enabled
    }

    /// Sends `request` through the connection's thread and waits for the client's answer.
    pub fn request(&self, request: RegionMapRequest, timeout: Duration) -> RegionMapOutcome {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        if !state.enabled {
            return RegionMapOutcome::NotOffered;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push_back((id, request));
        if let Err(e) = sys::eventfd_signal(self.wake.as_fd()) {
            state.pending.retain(|(pending, _)| *pending != id);
            return RegionMapOutcome::Failed(e.raw_os_error().unwrap_or(libc::EIO));
        }
        loop {
            if let Some(outcome) = state.results.remove(&id) {
                return outcome;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let still_pending = state.pending.iter().any(|(pending, _)| *pending == id);
            if left.is_zero() && still_pending {
                state.pending.retain(|(pending, _)| *pending != id);
                return RegionMapOutcome::TimedOut;
            }
            // Once sent, the answer (or the connection's own reply timeout) always comes.
            let wait = if still_pending {
                left
            } else {
                Duration::from_millis(100)
            };
            state = self
                .done
                .wait_timeout(state, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Queues `request` without waiting for it (for callers on the connection's own thread, or
    /// that cannot wait): sent the next time the connection handles its queue.
    pub fn post(&self, request: RegionMapRequest) {
        let mut state = self.lock();
        if !state.enabled {
            return;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.pending.push_back((id, request));
        state.unwaited.insert(id);
        let _ = sys::eventfd_signal(self.wake.as_fd());
    }

    /// Whether requests wait to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Opens or closes the queue to requests; closing fails what waits.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        let mut state = self.lock();
        state.enabled = enabled;
        if !enabled {
            for (id, _) in std::mem::take(&mut state.pending) {
                if !state.unwaited.remove(&id) {
                    state.results.insert(id, RegionMapOutcome::NotOffered);
                }
            }
            self.done.notify_all();
        }
    }

    /// The next request to send, if any (clears the wakeup when none is left).
    pub(crate) fn take(&self) -> Option<(u64, RegionMapRequest)> {
        let mut state = self.lock();
        let next = state.pending.pop_front();
        if next.is_some() {
            state.in_flight += 1;
        }
        if state.pending.is_empty() {
            let _ = sys::eventfd_read(self.wake.as_fd());
        }
        next
    }

    pub(crate) fn finish(&self, id: u64, outcome: RegionMapOutcome) {
        let mut state = self.lock();
        state.in_flight -= 1;
        if state.unwaited.remove(&id) {
            if outcome != RegionMapOutcome::Done {
                log::warn!("region map request {id} (posted): {outcome:?}");
            }
            return;
        }
        state.results.insert(id, outcome);
        self.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn unmap() -> RegionMapRequest {
        RegionMapRequest::Unmap {
            region: 2,
            offset: 0,
            size: 4096,
        }
    }

    #[test]
    fn nothing_is_queued_for_a_client_that_did_not_opt_in() {
        let queue = RegionMapQueue::new().unwrap();
        assert_eq!(
            queue.request(unmap(), Duration::from_secs(1)),
            RegionMapOutcome::NotOffered
        );
        assert!(queue.take().is_none());
        assert!(!sys::wait_readable(queue.wake_fd(), 0).unwrap());
    }

    #[test]
    fn a_request_nobody_sends_is_withdrawn_at_its_deadline() {
        let queue = RegionMapQueue::new().unwrap();
        queue.set_enabled(true);
        assert_eq!(
            queue.request(unmap(), Duration::from_millis(50)),
            RegionMapOutcome::TimedOut
        );
        assert!(queue.take().is_none(), "withdrawn");
    }

    #[test]
    fn the_connection_thread_answers_requests() {
        let queue = Arc::new(RegionMapQueue::new().unwrap());
        queue.set_enabled(true);
        let requester = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.request(unmap(), Duration::from_secs(10)))
        };
        assert!(sys::wait_readable(queue.wake_fd(), 10_000).unwrap());
        let (id, request) = queue.take().unwrap();
        assert!(matches!(request, RegionMapRequest::Unmap { region: 2, .. }));
        queue.finish(id, RegionMapOutcome::Failed(libc::EINVAL));
        assert_eq!(
            requester.join().unwrap(),
            RegionMapOutcome::Failed(libc::EINVAL)
        );
        queue.set_enabled(false);
        assert_eq!(
            queue.request(unmap(), Duration::from_secs(1)),
            RegionMapOutcome::NotOffered
        );
    }
}
