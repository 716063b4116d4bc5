// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Ranges of a shadowed region that a peer reads through the region's own file.
//!
//! A relay may hand a peer (a Wayland compositor) the region's file in place of a file placed in
//! it, so the peer reads the guest's bytes where the guest writes them and nobody copies them.
//! The peer then reads whatever the region holds at that range, including what the guest places
//! there after the file is gone. So the range is lent: before [`ShadowMemory::unmap`] frees a
//! placed file's range, every [`Borrower`] that may still read it gives it back, which for a
//! relay connection means the connection ends and the peer drops what it mapped.
//!
//! [`ShadowMemory::unmap`]: crate::ShadowMemory::unmap

use std::io;
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::Weak;
use std::time::Duration;

/// How long an unmap waits for a borrower to give a range back before going on without it.
pub const GIVE_BACK_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a file lies in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub offset: u64,
    pub len: u64,
}

impl Placement {
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.len
    }
}

/// A shadowed region, as a relay's stream filter sees it.
pub trait SharedRegion {
    /// Where the file behind `fd` is placed, if it is placed once, whole, from its start, and
    /// can be lent: the caller may then hand the peer the region's file for it. The range counts
    /// as lent from this call on, until the caller's borrower gives it back.
    fn lend(&self, fd: BorrowedFd) -> Option<Placement>;
    /// A new fd of the region's own file, for the peer.
    fn region_fd(&self) -> io::Result<OwnedFd>;
}

/// Someone who may read ranges of the region through its file.
pub trait Borrower: Send + Sync {
    /// Whether `range` may still be read through what this borrower was lent.
    fn may_read(&self, range: &Range<u64>) -> bool;
    /// Records that `range` is lent from now on (called under the region's lock).
    fn lent(&self, range: Range<u64>);
    /// Returns once nothing reads `range` through this borrower any more, or after `timeout`
    /// (false then).
    fn give_back(&self, range: &Range<u64>, timeout: Duration) -> bool;
}

/// The borrowers of one region.
#[derive(Default)]
pub struct Borrowers {
    list: Mutex<Vec<Weak<dyn Borrower>>>,
}

impl Borrowers {
    pub fn add(&self, borrower: Weak<dyn Borrower>) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|b| b.strong_count() > 0);
        list.push(borrower);
    }

    /// Gets `range` back from every borrower that may read it. Must not be called with the
    /// region's lock held: a borrower may need it to finish what it is doing.
    pub fn give_back(&self, range: &Range<u64>) {
        let borrowers: Vec<_> = self
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for borrower in borrowers {
            if borrower.may_read(range) && !borrower.give_back(range, GIVE_BACK_TIMEOUT) {
                log::warn!(
                    "shadow: {:#x}..{:#x} not given back within {GIVE_BACK_TIMEOUT:?}; freeing it \
                     anyway (a peer may read zeros or what is placed there next)",
                    range.start,
                    range.end
                );
            }
        }
    }
}

/// Whether two ranges share a byte.
pub fn overlap(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}
