// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Surviving SIGBUS on memory a client shares with the server.
//!
//! A client may shrink a file after the server has mapped it; the next access to a page past the
//! file's new end raises SIGBUS, which ends the process. So may a file whose filesystem runs out
//! of space, or an I/O error under a file-backed map. Ranges registered here are guarded
//! instead: on a SIGBUS inside one, the handler maps anonymous memory over the whole range (the
//! faulting access then completes, on zeros), marks the range as faulted, records the fault in
//! the range's [`FaultAlarm`] and shuts the alarm's socket down, so that the connection's loop
//! sees its client gone and drops it. Accesses check the mark afterwards and fail.
//!
//! A signal handler may only do async-signal-safe work: this one reads a fixed table of atomics
//! and makes system calls (mmap, shutdown, and sigaction when it passes a foreign fault on).
//! A SIGBUS outside every guarded range goes to the handler that was installed before ours
//! (Rust's own, which reports stack overflows), or ends the process as it would have anyway.

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicPtr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::OnceLock;

/// Most ranges guarded at once, in the whole process: a connection guards one range per DMA
/// map that came with an fd (at most `max_dma_maps`), and a VMM library that maps the same fds
/// again guards its own.
pub const MAX_GUARDED_RANGES: usize = 4096;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

/// "No fault yet" in [`FaultAlarm`].
const NO_FAULT: u64 = u64::MAX;

/// One guarded range. The owner writes it while it is CLAIMED; the handler reads it only while
/// it is ACTIVE.
struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    /// The client's address of `start`, for the report.
    client_address: AtomicU64,
    /// The owner's alarm; kept alive by the guard while the slot is ACTIVE.
    alarm: AtomicPtr<FaultAlarm>,
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            client_address: AtomicU64::new(0),
            alarm: AtomicPtr::new(std::ptr::null_mut()),
            faulted: AtomicBool::new(false),
        }
    }
}

static SLOTS: [Slot; MAX_GUARDED_RANGES] = [const { Slot::new() }; MAX_GUARDED_RANGES];

/// The SIGBUS action that was in place before ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

/// Where the faults of a group of ranges (one connection's) are reported.
#[derive(Debug)]
pub struct FaultAlarm {
    /// Shut down on a fault, so that whoever waits on the socket wakes up to a disconnect. Only
    /// owned here, which keeps `socket_fd` valid: the handler uses the raw number.
    _socket: Option<OwnedFd>,
    socket_fd: RawFd,
    /// The client's address of the first fault, or NO_FAULT.
    first_fault: AtomicU64,
}

impl FaultAlarm {
    /// An alarm that shuts `socket` down (a dup of the connection's socket) on a fault, or that
    /// only records it.
    pub fn new(socket: Option<OwnedFd>) -> Arc<FaultAlarm> {
        let socket_fd = socket.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        Arc::new(FaultAlarm {
            _socket: socket,
            socket_fd,
            first_fault: AtomicU64::new(NO_FAULT),
        })
    }

    /// Shuts the socket down, as a fault does: the connection is over, and the client must see
    /// it end even while other fds of the socket live on (this alarm's, or a child's).
    pub fn hang_up(&self) {
        if self.socket_fd >= 0 {
            // SAFETY: the alarm owns this fd; shutdown takes no pointers.
            unsafe { libc::shutdown(self.socket_fd, libc::SHUT_RDWR) };
        }
    }

    /// The client's address of the first fault in any range guarded with this alarm.
    pub fn first_fault(&self) -> Option<u64> {
        match self.first_fault.load(Ordering::SeqCst) {
            NO_FAULT => None,
            address => Some(address),
        }
    }
}

/// A guarded range; dropping it ends the guard.
#[derive(Debug)]
pub struct FaultGuard {
    slot: &'static Slot,
    /// Keeps the alarm the slot points to alive.
    _alarm: Arc<FaultAlarm>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("start", &self.start.load(Ordering::Relaxed))
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

impl FaultGuard {
    /// Guards `len` bytes at `start`, which the client knows as `client_address`. Fails with
    /// ENOSPC when [`MAX_GUARDED_RANGES`] ranges are guarded already.
    ///
    /// # Safety
    /// `start..start + len` must be a mapping that the caller owns, that holds nothing but client
    /// memory, and that stays mapped until the guard is dropped; no access to it may be running
    /// when the guard is dropped. On a SIGBUS inside it, the whole range is replaced by
    /// anonymous memory (`MAP_FIXED`).
    pub unsafe fn new(
        start: *mut u8,
        len: usize,
        client_address: u64,
        alarm: Arc<FaultAlarm>,
    ) -> io::Result<FaultGuard> {
        install()?;
        let slot = SLOTS
            .iter()
            .find(|slot| {
                slot.state
                    .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        slot.start.store(start as usize, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.client_address.store(client_address, Ordering::Relaxed);
        slot.alarm
            .store(Arc::as_ptr(&alarm).cast_mut(), Ordering::Relaxed);
        slot.faulted.store(false, Ordering::Relaxed);
        // Publishes the fields above to the handler.
        slot.state.store(ACTIVE, Ordering::Release);
        Ok(FaultGuard {
            slot,
            _alarm: alarm,
        })
    }

    /// Whether a fault replaced the range: what was read from it since may be zeros, and what
    /// was written is lost.
    pub fn faulted(&self) -> bool {
        self.slot.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        self.slot.state.store(CLAIMED, Ordering::SeqCst);
        self.slot
            .alarm
            .store(std::ptr::null_mut(), Ordering::Relaxed);
        self.slot.state.store(FREE, Ordering::Release);
    }
}

/// Installs the handler once per process.
fn install() -> io::Result<()> {
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: zeroed sigaction is a valid value for sigaction to overwrite.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: queries the current action into a live struct; installs nothing.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) } < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        let _ = PREVIOUS.set(previous);
        // SAFETY: zeroed sigaction is a valid empty action, filled in below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigbus;
        action.sa_sigaction = handler as usize;
        // SA_ONSTACK: Rust gives its threads an alternate signal stack, which the handler uses
        // if the fault happened with the stack nearly full.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sa_mask is a live sigset_t inside `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is a complete action whose handler only does async-signal-safe work.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL));
        }
        Ok(())
    });
    result.map_err(io::Error::from_raw_os_error)
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; the handler restores it before returning, as the code it
    // interrupted expects.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGBUS, si_addr
    // is the faulting address.
    let address = unsafe { (*info).si_addr() } as usize;
    if !recover(address) {
        pass_on(signal, info, context);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Replaces the guarded range that holds `address`, if any. Async-signal-safe.
fn recover(address: usize) -> bool {
    for slot in &SLOTS {
        if slot.state.load(Ordering::Acquire) != ACTIVE {
            continue;
        }
        let start = slot.start.load(Ordering::Relaxed);
        let len = slot.len.load(Ordering::Relaxed);
        if address < start || address - start >= len {
            continue;
        }
        // Marked first: an access on another thread that reads the replacement's zeros then
        // sees the mark when it checks.
        slot.faulted.store(true, Ordering::SeqCst);
        // SAFETY: the range is a mapping its guard's owner holds for the client's memory only
        // (FaultGuard::new's contract); MAP_FIXED replaces exactly that range.
        let replaced = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if replaced == libc::MAP_FAILED {
            return false;
        }
        let alarm = slot.alarm.load(Ordering::Relaxed);
        if !alarm.is_null() {
            // SAFETY: the guard keeps the alarm alive while its slot is ACTIVE, and it cannot be
            // dropped while an access to its range (this fault) is running.
            let alarm = unsafe { &*alarm };
            let client_address = slot
                .client_address
                .load(Ordering::Relaxed)
                .wrapping_add((address - start) as u64);
            let _ = alarm.first_fault.compare_exchange(
                NO_FAULT,
                client_address,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            if alarm.socket_fd >= 0 {
                // SAFETY: the alarm owns this fd while it lives; shutdown takes no pointers.
                unsafe { libc::shutdown(alarm.socket_fd, libc::SHUT_RDWR) };
            }
        }
        return true;
    }
    false
}

/// Hands a SIGBUS that is not ours to the action that was there before, or restores the default
/// action so that the fault, taken again on return, ends the process as it would have.
fn pass_on(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let handler = PREVIOUS
        .get()
        .filter(|previous| previous.sa_sigaction != libc::SIG_DFL)
        .filter(|previous| previous.sa_sigaction != libc::SIG_IGN);
    match handler {
        Some(previous) if previous.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: with SA_SIGINFO, sa_sigaction is a three-argument handler installed by
            // someone else for this signal; it gets the arguments the kernel gave us.
            let previous: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(previous.sa_sigaction) };
            previous(signal, info, context);
        }
        Some(previous) => {
            // SAFETY: without SA_SIGINFO, sa_sigaction is a one-argument handler.
            let previous: extern "C" fn(libc::c_int) =
                unsafe { std::mem::transmute(previous.sa_sigaction) };
            previous(signal);
        }
        None => {
            // SAFETY: zeroed sigaction with SIG_DFL (0) is the default action.
            let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
            default.sa_sigaction = libc::SIG_DFL;
            // SAFETY: installs the default action from a live struct.
            unsafe { libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::sys::copy_guest;
    use crate::sys::memfd;
    use crate::sys::MappedFile;

    #[test]
    fn truncated_file_faults_into_zeros_and_an_alarm() {
        let file = memfd(c"fault-test", 0x3000).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"before", 0x2000).unwrap();
        let map = MappedFile::map(file.as_fd(), 0, 0x3000, true, true).unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let alarm = FaultAlarm::new(Some(ours.into()));
        // SAFETY: `map` is this test's own mapping of client-like memory and outlives the guard.
        let guard =
            unsafe { FaultGuard::new(map.as_ptr(), map.len(), 0x10000, alarm.clone()) }.unwrap();
        let mut back = [0u8; 6];
        // SAFETY: inside the mapping.
        unsafe { copy_guest(map.as_ptr().add(0x2000), back.as_mut_ptr(), 6) };
        assert_eq!(&back, b"before");
        assert!(!guard.faulted());

        file.set_len(0x1000).unwrap();
        // SAFETY: inside the mapping; the page is past the file's end now, which faults.
        unsafe { copy_guest(map.as_ptr().add(0x2004), back.as_mut_ptr(), 6) };
        assert_eq!(back, [0; 6], "the replacement reads as zeros");
        assert!(guard.faulted());
        // Where the copy touched the page first.
        let fault = alarm.first_fault().unwrap();
        assert!((0x12004..0x1200a).contains(&fault), "{fault:#x}");
        let mut theirs = theirs;
        let mut byte = [0u8; 1];
        assert_eq!(
            theirs.read(&mut byte).unwrap(),
            0,
            "the socket was shut down"
        );
        drop(guard);
    }

    /// Run by `foreign_faults_still_end_the_process` in a child process: with a guard in place,
    /// a SIGBUS on memory no guard covers must end the process.
    #[test]
    #[ignore = "ends its process with SIGBUS; run in a child by foreign_faults_still_end_the_process"]
    fn foreign_fault_child() {
        let guarded = memfd(c"fault-test", 0x1000).unwrap();
        let guarded_map = MappedFile::map(guarded.as_fd(), 0, 0x1000, true, true).unwrap();
        let alarm = FaultAlarm::new(None);
        // SAFETY: this test's own mapping, alive until the process ends.
        let _guard = unsafe { FaultGuard::new(guarded_map.as_ptr(), 0x1000, 0, alarm) }.unwrap();
        let foreign = memfd(c"fault-test", 0x2000).unwrap();
        let foreign_map = MappedFile::map(foreign.as_fd(), 0, 0x2000, true, true).unwrap();
        foreign.set_len(0x1000).unwrap();
        let mut byte = [0u8; 1];
        // SAFETY: inside the mapping; the page is past the file's end, so this raises SIGBUS,
        // which no guard covers.
        unsafe { copy_guest(foreign_map.as_ptr().add(0x1800), byte.as_mut_ptr(), 1) };
        unreachable!("the foreign SIGBUS did not end the process");
    }

    #[test]
    fn foreign_faults_still_end_the_process() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sys::linux::guest_fault::tests::foreign_fault_child",
                "--ignored",
                "--test-threads=1",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A handler that swallowed the fault would leave the child faulting forever.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child is still running: the foreign SIGBUS was swallowed");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(libc::SIGBUS), "{status}");
    }

    #[test]
    fn slots_are_reused() {
        let file = memfd(c"fault-test", 0x1000).unwrap();
        let map = MappedFile::map(file.as_fd(), 0, 0x1000, true, true).unwrap();
        let alarm = FaultAlarm::new(None);
        for _ in 0..MAX_GUARDED_RANGES + 10 {
            // SAFETY: as above.
            let guard = unsafe { FaultGuard::new(map.as_ptr(), 0x1000, 0, alarm.clone()) };
            drop(guard.unwrap());
        }
        assert_eq!(alarm.first_fault(), None);
    }
}
