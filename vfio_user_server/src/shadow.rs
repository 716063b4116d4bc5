// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Host-visible memory for a region whose contents live in other files.
//!
//! A device such as virtio-gpu places files (blobs) at offsets of a BAR while the guest runs.
//! vfio-user cannot add an fd to a region after GET_REGION_INFO, and clients map each region
//! once, so [`ShadowMemory`] backs the whole region with one file of its own that the client
//! maps, and keeps it coherent with the placed files by copying:
//!
//! - [`ShadowMemory::map`] copies the file into the region before it returns, so the guest never
//!   sees the range's old contents once the device acknowledges the mapping;
//! - [`ShadowMemory::copy_out_exported`] copies the region back into the files that were handed to
//!   a peer (a compositor), before each message that peer gets: it sees a snapshot at each message,
//!   which matches a buffer's attach/commit/release cycle;
//! - [`ShadowMemory::unmap`] copies the range back into its file and frees the range's pages.
//!
//! What this does not give: writes to a file by anyone else after it was mapped do not reach the
//! guest (a compositor writing into a client's buffer, as screen capture protocols do).
//!
//! A relay may also lend a peer the region's own file in place of a placed file ([`crate::lease`]):
//! the peer then reads the guest's bytes with no copy, and the placed file's range is given back
//! before [`ShadowMemory::unmap`] frees it.
//!
//! With a client that takes the proposed REGION_MAP extension ([`ShadowMemory::set_region_maps`]),
//! a placed file is mapped by the client itself over its range instead: shared, no copies, and
//! coherent both ways. The copies remain for clients without it, and whenever a request fails.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use remain::sorted;
use thiserror::Error;

use crate::device::RegionMmap;
use crate::lease::Borrower;
use crate::lease::Borrowers;
use crate::lease::Placement;
use crate::region_map::RegionMapOutcome;
use crate::region_map::RegionMapQueue;
use crate::region_map::RegionMapRequest;
use crate::region_map::DEFAULT_TIMEOUT;
use crate::sys;
use crate::sys::MappedFile;

#[sorted]
#[derive(Error, Debug)]
pub enum ShadowError {
    #[error(
        "mapping {offset:#x}+{len:#x} is empty, misaligned or outside the {size:#x}-byte region"
    )]
    InvalidRange { offset: u64, len: u64, size: u64 },
    #[error("mapping {offset:#x}+{len:#x} overlaps the mapping at {existing:#x}")]
    Overlaps {
        offset: u64,
        len: u64,
        existing: u64,
    },
    #[error("the file at {0:#x} is mapped read-only")]
    ReadOnly(u64),
    #[error("the region's backing file has not been created")]
    RegionMissing,
    #[error("the region was already created with {existing:#x} bytes, not {size:#x}")]
    RegionSizeMismatch { size: u64, existing: u64 },
    #[error("the file holds {file_size:#x} bytes, fewer than {fd_offset:#x}+{len:#x}")]
    SourceTooShort {
        fd_offset: u64,
        len: u64,
        file_size: u64,
    },
    #[error("{0}")]
    Sys(#[from] io::Error),
    #[error("no mapping at {0:#x}")]
    UnknownMapping(u64),
}

pub type Result<T> = std::result::Result<T, ShadowError>;

/// A region's backing file and the files placed in it. Cheap to share: every method takes
/// `&self`, so the device's mapping requests, a relay and the connection can hold it at once.
#[derive(Default)]
pub struct ShadowMemory {
    state: Mutex<Option<Shadow>>,
    /// The current client's REGION_MAP queue and this region's index, when there is a client.
    region_maps: Mutex<Option<(Arc<RegionMapQueue>, u32)>>,
    /// Whoever was lent ranges of the region's file.
    borrowers: Borrowers,
}

struct Shadow {
    file: Arc<OwnedFd>,
    /// This process's view of the whole file; the client maps the same pages.
    view: MappedFile,
    size: u64,
    /// By offset in the region.
    mappings: BTreeMap<u64, Placed>,
    /// Identities of files handed to a peer, whose contents it reads.
    exported: BTreeSet<(u64, u64)>,
}

struct Placed {
    source: MappedFile,
    identity: (u64, u64),
    /// Where the range starts in the file.
    fd_offset: u64,
    /// Whether the guest's writes are copied back into the file.
    writable: bool,
    /// The client maps the file itself (REGION_MAP): nothing to copy.
    by_client: bool,
    /// Being unmapped: no longer lent to anyone.
    leaving: bool,
}

impl ShadowMemory {
    pub fn new() -> Arc<ShadowMemory> {
        Arc::new(ShadowMemory::default())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Shadow>> {
        // A panic while copying leaves plain bytes behind, nothing half-updated to protect.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the region's backing file of `size` bytes, once, and returns how the client maps
    /// it: whole, no sparse areas. Asking again with the same size returns the same file.
    pub fn region_mmap(&self, name: &str, size: u64) -> Result<RegionMmap> {
        let mut state = self.lock();
        if let Some(shadow) = state.as_ref() {
            if shadow.size != size {
                return Err(ShadowError::RegionSizeMismatch {
                    size,
                    existing: shadow.size,
                });
            }
            return Ok(shadow.region_mmap());
        }
        let len = usize::try_from(size).map_err(|_| ShadowError::InvalidRange {
            offset: 0,
            len: size,
            size,
        })?;
        let name = CString::new(name).unwrap_or_else(|_| c"vfio-user-shadow".to_owned());
        // The file's pages exist only where the guest or a copy-in wrote: an 8 GiB BAR costs
        // what is mapped in it. The client gets an fd of it: sealed at its size, it cannot make
        // the server's view fault by shrinking it.
        let file = OwnedFd::from(sys::sealed_memfd(&name, size)?);
        let view = MappedFile::map(file.as_fd(), 0, len, true, true)?;
        let shadow = Shadow {
            file: Arc::new(file),
            view,
            size,
            mappings: BTreeMap::new(),
            exported: BTreeSet::new(),
        };
        let mmap = shadow.region_mmap();
        *state = Some(shadow);
        Ok(mmap)
    }

    /// Places `len` bytes of `fd` from `fd_offset` at `offset` in the region and copies them in.
    /// With `writable`, the guest's writes are copied back at [`ShadowMemory::unmap`] and
    /// [`ShadowMemory::copy_out_exported`]; a file that cannot be mapped writable (a sealed
    /// keymap) is placed read-only.
    pub fn map(
        &self,
        offset: u64,
        fd: BorrowedFd,
        fd_offset: u64,
        len: u64,
        writable: bool,
    ) -> Result<()> {
        let mut state = self.lock();
        let shadow = state.as_mut().ok_or(ShadowError::RegionMissing)?;
        let page = sys::page_size();
        let end = offset.checked_add(len);
        if len == 0 || !offset.is_multiple_of(page) || end.is_none_or(|end| end > shadow.size) {
            return Err(ShadowError::InvalidRange {
                offset,
                len,
                size: shadow.size,
            });
        }
        if let Some(existing) = shadow.overlapping(offset, len) {
            return Err(ShadowError::Overlaps {
                offset,
                len,
                existing,
            });
        }
        // Shrinking the file later would make the copies fault; seal it where possible and check
        // its size now.
        sys::seal_against_shrinking(fd);
        let file_size = sys::file_size(fd)?;
        // Guest blobs are whole pages, the files behind them need not be (a compositor's keymap):
        // the tail of the file's last page reads as zeros and faults nowhere.
        let mappable_size = file_size.div_ceil(page) * page;
        if fd_offset
            .checked_add(len)
            .is_none_or(|end| end > mappable_size)
        {
            return Err(ShadowError::SourceTooShort {
                fd_offset,
                len,
                file_size,
            });
        }
        let map_len = len as usize;
        let (source, writable) = match MappedFile::map(fd, fd_offset, map_len, true, writable) {
            Ok(source) => (source, writable),
            Err(e) if writable && matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                (MappedFile::map(fd, fd_offset, map_len, true, false)?, false)
            }
            Err(e) => return Err(e.into()),
        };
        let mut placed = Placed {
            source,
            identity: sys::file_identity(fd)?,
            fd_offset,
            writable,
            by_client: false,
            leaving: false,
        };
        // The client's answer may take a while, and the connection's thread (which sends the
        // request) may need this lock meanwhile: ask without holding it.
        drop(state);
        placed.by_client = self.map_in_client(offset, fd, fd_offset, len, writable);
        let mut state = self.lock();
        let shadow = state.as_mut().ok_or(ShadowError::RegionMissing)?;
        if let Some(existing) = shadow.overlapping(offset, len) {
            // Placed concurrently by another thread: undo ours.
            if placed.by_client {
                self.unmap_in_client(offset, len);
            }
            return Err(ShadowError::Overlaps {
                offset,
                len,
                existing,
            });
        }
        if !placed.by_client {
            // SAFETY: `source` maps exactly `len` bytes; the view maps the whole region and
            // offset + len <= size was checked above; the two are distinct mappings.
            unsafe {
                sys::copy_guest(
                    placed.source.as_ptr(),
                    shadow.view.as_ptr().add(offset as usize),
                    map_len,
                )
            };
        }
        shadow.mappings.insert(offset, placed);
        Ok(())
    }

    /// Hands the current client's REGION_MAP queue to the region (index `region`), or takes it
    /// away (`None`, at a disconnect). Files placed from then on are mapped by the client when it
    /// takes the extension.
    pub fn set_region_maps(&self, queue: Option<Arc<RegionMapQueue>>, region: u32) {
        *self.region_maps.lock().unwrap_or_else(|e| e.into_inner()) = queue.map(|q| (q, region));
    }

    fn queue(&self) -> Option<(Arc<RegionMapQueue>, u32)> {
        self.region_maps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the client to map the file itself; false if it does not take the extension or did
    /// not manage to.
    fn map_in_client(
        &self,
        offset: u64,
        fd: BorrowedFd,
        fd_offset: u64,
        size: u64,
        writable: bool,
    ) -> bool {
        let Some((queue, region)) = self.queue() else {
            return false;
        };
        if !queue.enabled() {
            return false;
        }
        let fd = match fd.try_clone_to_owned() {
            Ok(fd) => fd,
            Err(e) => {
                log::warn!("shadow: cannot duplicate a file for the client: {e}");
                return false;
            }
        };
        let request = RegionMapRequest::Map {
            region,
            offset,
            size,
            fd,
            fd_offset,
            writable,
        };
        match queue.request(request, DEFAULT_TIMEOUT) {
            RegionMapOutcome::Done => true,
            RegionMapOutcome::NotOffered => false,
            outcome => {
                log::warn!("shadow: client mapping of {offset:#x}+{size:#x}: {outcome:?}; copying");
                false
            }
        }
    }

    /// Asks the client to map the region's own file back over a range, without waiting: the
    /// caller may be on the connection's thread.
    fn unmap_in_client(&self, offset: u64, size: u64) {
        if let Some((queue, region)) = self.queue() {
            queue.post(RegionMapRequest::Unmap {
                region,
                offset,
                size,
            });
        }
    }

    /// Removes the mapping at `offset`: copies the range back into its file if writable, then
    /// frees the range's pages, which the guest reads as zeros from then on.
    pub fn unmap(&self, offset: u64) -> Result<()> {
        // Nobody may be lent the range from here on; whoever was gives it back first.
        let range = {
            let mut state = self.lock();
            let shadow = state.as_mut().ok_or(ShadowError::RegionMissing)?;
            let placed = shadow
                .mappings
                .get_mut(&offset)
                .ok_or(ShadowError::UnknownMapping(offset))?;
            placed.leaving = true;
            offset..offset + placed.source.len() as u64
        };
        self.borrowers.give_back(&range);
        let mut state = self.lock();
        let shadow = state.as_mut().ok_or(ShadowError::RegionMissing)?;
        let placed = shadow
            .mappings
            .remove(&offset)
            .ok_or(ShadowError::UnknownMapping(offset))?;
        if placed.by_client {
            self.unmap_in_client(offset, placed.source.len() as u64);
        }
        shadow.release(offset, &placed)?;
        if !shadow
            .mappings
            .values()
            .any(|p| p.identity == placed.identity)
        {
            shadow.exported.remove(&placed.identity);
        }
        Ok(())
    }

    /// Removes every mapping as [`ShadowMemory::unmap`] does (the device is gone, or reset).
    pub fn unmap_all(&self) {
        let ranges: Vec<Range<u64>> = {
            let mut state = self.lock();
            let Some(shadow) = state.as_mut() else {
                return;
            };
            shadow
                .mappings
                .iter_mut()
                .map(|(offset, placed)| {
                    placed.leaving = true;
                    *offset..offset + placed.source.len() as u64
                })
                .collect()
        };
        for range in &ranges {
            self.borrowers.give_back(range);
        }
        let mut state = self.lock();
        let Some(shadow) = state.as_mut() else {
            return;
        };
        for (offset, placed) in std::mem::take(&mut shadow.mappings) {
            if placed.by_client {
                self.unmap_in_client(offset, placed.source.len() as u64);
            }
            if let Err(e) = shadow.release(offset, &placed) {
                log::warn!("shadow: releasing {offset:#x}: {e}");
            }
        }
        shadow.exported.clear();
    }

    /// Registers someone who may be lent ranges with [`ShadowMemory::lend`]: before a range is
    /// freed, it gives the range back.
    pub fn add_borrower(&self, borrower: std::sync::Weak<dyn Borrower>) {
        self.borrowers.add(borrower);
    }

    /// Where the file behind `fd` is placed, if it can be lent to `borrower` in place of the
    /// file: placed once, whole from its start, by this server (not by the client with
    /// REGION_MAP: the file is then the guest's memory itself), and not being unmapped. The range
    /// is recorded as lent to `borrower` before anyone can unmap it.
    pub fn lend(&self, fd: BorrowedFd, borrower: &dyn Borrower) -> Option<Placement> {
        let identity = sys::file_identity(fd).ok()?;
        let state = self.lock();
        let shadow = state.as_ref()?;
        let mut placed = shadow
            .mappings
            .iter()
            .filter(|(_, p)| p.identity == identity);
        let (&offset, found) = placed.next()?;
        if placed.next().is_some() || found.fd_offset != 0 || found.by_client || found.leaving {
            return None;
        }
        let placement = Placement {
            offset,
            len: found.source.len() as u64,
        };
        borrower.lent(placement.range());
        Some(placement)
    }

    /// A new fd of the region's own file, to lend to a peer.
    pub fn region_fd(&self) -> io::Result<OwnedFd> {
        let state = self.lock();
        let shadow = state
            .as_ref()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        shadow.file.try_clone()
    }

    /// Records that the file behind `fd` was handed to a peer: from now on its mappings are
    /// copied out before each message to that peer.
    pub fn note_exported(&self, fd: BorrowedFd) {
        let Ok(identity) = sys::file_identity(fd) else {
            return;
        };
        let mut state = self.lock();
        if let Some(shadow) = state.as_mut() {
            if shadow.mappings.values().any(|p| p.identity == identity) {
                shadow.exported.insert(identity);
            }
        }
    }

    /// Copies the region into every writable mapped file a peer holds. Returns the bytes copied.
    pub fn copy_out_exported(&self) -> u64 {
        let state = self.lock();
        let Some(shadow) = state.as_ref() else {
            return 0;
        };
        let mut copied = 0;
        for (offset, placed) in &shadow.mappings {
            // A file the client maps itself is the guest's memory: nothing to bring up to date.
            if placed.writable && !placed.by_client && shadow.exported.contains(&placed.identity) {
                shadow.copy_back(*offset, placed);
                copied += placed.source.len() as u64;
            }
        }
        copied
    }

    /// Reads the region at `offset`, for a client that accesses it with REGION_READ instead of
    /// mapping it.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<()> {
        let state = self.lock();
        let shadow = state.as_ref().ok_or(ShadowError::RegionMissing)?;
        let at = shadow.check_access(offset, data.len())?;
        let memory = shadow.memory_at(offset, data.len(), at, false)?;
        // SAFETY: `memory` is valid for `data.len()` bytes (`memory_at`); `data` is a distinct,
        // writable buffer.
        unsafe { sys::copy_guest(memory, data.as_mut_ptr(), data.len()) };
        Ok(())
    }

    /// Writes the region at `offset`, for a client that accesses it with REGION_WRITE.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        let state = self.lock();
        let shadow = state.as_ref().ok_or(ShadowError::RegionMissing)?;
        let at = shadow.check_access(offset, data.len())?;
        let memory = shadow.memory_at(offset, data.len(), at, true)?;
        // SAFETY: as in `read`, with `memory` as the destination (writable: `memory_at`).
        unsafe { sys::copy_guest(data.as_ptr(), memory, data.len()) };
        Ok(())
    }

    /// The number of files placed in the region.
    pub fn mapping_count(&self) -> usize {
        self.lock().as_ref().map_or(0, |s| s.mappings.len())
    }
}

impl Shadow {
    fn region_mmap(&self) -> RegionMmap {
        RegionMmap {
            fd: self.file.clone(),
            offset: 0,
            sparse_areas: None,
        }
    }

    /// `offset` as an index into the view, if `len` bytes from it are inside the region.
    fn check_access(&self, offset: u64, len: usize) -> Result<usize> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(offset as usize),
            _ => Err(ShadowError::InvalidRange {
                offset,
                len: len as u64,
                size: self.size,
            }),
        }
    }

    /// Where the guest's bytes at `offset..offset + len` (`at` in the view, checked) live: in
    /// the file when the client maps it itself and the access is inside it, else in the view.
    /// A file the client maps read-only cannot be written.
    fn memory_at(&self, offset: u64, len: usize, at: usize, writing: bool) -> Result<*mut u8> {
        if let Some((&start, placed)) = self.mappings.range(..=offset).next_back() {
            let inside = offset - start + len as u64 <= placed.source.len() as u64;
            if placed.by_client && inside {
                if writing && !placed.writable {
                    return Err(ShadowError::ReadOnly(start));
                }
                // SAFETY: offset - start + len <= the source's length, checked just above.
                return Ok(unsafe { placed.source.as_ptr().add((offset - start) as usize) });
            }
        }
        // SAFETY: `at + len` is inside the view, checked by the caller.
        Ok(unsafe { self.view.as_ptr().add(at) })
    }

    /// The offset of a mapping that overlaps `offset..offset + len`.
    fn overlapping(&self, offset: u64, len: u64) -> Option<u64> {
        let end = offset + len;
        // The last mapping that starts before `end` is the only candidate: mappings never
        // overlap each other.
        let (&start, placed) = self.mappings.range(..end).next_back()?;
        (start + placed.source.len() as u64 > offset).then_some(start)
    }

    fn copy_back(&self, offset: u64, placed: &Placed) {
        // SAFETY: `offset` + the source's length was checked against the view when the mapping
        // was placed; the source mapping is writable (checked by the callers) and distinct.
        unsafe {
            sys::copy_guest(
                self.view.as_ptr().add(offset as usize),
                placed.source.as_ptr(),
                placed.source.len(),
            )
        };
    }

    fn release(&self, offset: u64, placed: &Placed) -> io::Result<()> {
        if placed.writable && !placed.by_client {
            self.copy_back(offset, placed);
        }
        sys::punch_hole(self.file.as_fd(), offset, placed.source.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    use super::*;

    fn blob(bytes: &[u8]) -> File {
        let file = sys::memfd(c"blob", bytes.len() as u64).unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file
    }

    /// Reads the region through a mapping of its own, as the client does.
    fn client_view(mmap: &RegionMmap, len: usize) -> MappedFile {
        MappedFile::map(mmap.fd.as_fd(), mmap.offset, len, true, true).unwrap()
    }

    fn read(view: &MappedFile, offset: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        // SAFETY: the tests keep offset + len inside the view.
        unsafe { sys::copy_guest(view.as_ptr().add(offset), out.as_mut_ptr(), len) };
        out
    }

    fn write(view: &MappedFile, offset: usize, data: &[u8]) {
        // SAFETY: the tests keep offset + len inside the view.
        unsafe { sys::copy_guest(data.as_ptr(), view.as_ptr().add(offset), data.len()) };
    }

    #[test]
    fn mapped_file_appears_and_guest_writes_return_at_unmap() {
        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap("test", 1 << 20).unwrap();
        let client = client_view(&mmap, 1 << 20);
        let file = blob(&[7u8; 8192]);
        shadow.map(0x4000, file.as_fd(), 0, 8192, true).unwrap();
        assert_eq!(read(&client, 0x4000, 8192), vec![7u8; 8192]);
        assert_eq!(read(&client, 0x3000, 4096), vec![0u8; 4096]);

        write(&client, 0x4000 + 100, b"guest");
        let mut in_file = [0u8; 5];
        file.read_exact_at(&mut in_file, 100).unwrap();
        assert_eq!(&in_file, &[7u8; 5], "no copy-out before unmap or export");

        shadow.unmap(0x4000).unwrap();
        file.read_exact_at(&mut in_file, 100).unwrap();
        assert_eq!(&in_file, b"guest");
        assert_eq!(read(&client, 0x4000, 8192), vec![0u8; 8192], "range freed");
        assert_eq!(shadow.mapping_count(), 0);
    }

    #[test]
    fn the_clients_fd_cannot_resize_the_region() {
        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap("test", 1 << 20).unwrap();
        let theirs = std::fs::File::from(mmap.fd.try_clone().unwrap());
        // A client that shrinks the file would make the server's view fault; one that grows it
        // would make the server hold memory for nothing.
        assert!(theirs.set_len(0x1000).is_err());
        assert!(theirs.set_len(2 << 20).is_err());
        assert_eq!(theirs.metadata().unwrap().len(), 1 << 20);
        // Mapping and freeing ranges (holes) still work.
        let file = blob(&[3u8; 4096]);
        shadow.map(0x8000, file.as_fd(), 0, 4096, true).unwrap();
        shadow.unmap(0x8000).unwrap();
    }

    #[test]
    fn exported_files_get_the_guest_writes_before_each_message() {
        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap("test", 1 << 20).unwrap();
        let client = client_view(&mmap, 1 << 20);
        let shared = blob(&[0u8; 4096]);
        let private = blob(&[0u8; 4096]);
        shadow.map(0, shared.as_fd(), 0, 4096, true).unwrap();
        shadow.map(0x1000, private.as_fd(), 0, 4096, true).unwrap();
        // A duplicate fd (as a socket delivers it) is the same file.
        let received = shared.try_clone().unwrap();
        shadow.note_exported(received.as_fd());

        write(&client, 0, b"frame 1");
        write(&client, 0x1000, b"not sent");
        assert_eq!(shadow.copy_out_exported(), 4096);
        let mut bytes = [0u8; 8];
        shared.read_exact_at(&mut bytes[..7], 0).unwrap();
        assert_eq!(&bytes[..7], b"frame 1");
        private.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!(
            bytes, [0u8; 8],
            "a file no peer holds is copied at unmap only"
        );

        write(&client, 0, b"frame 2");
        shadow.copy_out_exported();
        shared.read_exact_at(&mut bytes[..7], 0).unwrap();
        assert_eq!(&bytes[..7], b"frame 2");
    }

    #[test]
    fn bad_mappings_are_refused_without_touching_the_region() {
        let shadow = ShadowMemory::new();
        let file = blob(&[1u8; 8192]);
        assert!(matches!(
            shadow.map(0, file.as_fd(), 0, 4096, true),
            Err(ShadowError::RegionMissing)
        ));
        let mmap = shadow.region_mmap("test", 0x10000).unwrap();
        assert!(matches!(
            shadow.region_mmap("test", 0x20000),
            Err(ShadowError::RegionSizeMismatch { .. })
        ));
        let again = shadow.region_mmap("test", 0x10000).unwrap();
        assert!(Arc::ptr_eq(&mmap.fd, &again.fd));
        for (offset, len) in [
            (0x100, 4096),
            (0, 0),
            (0xf000, 0x2000),
            (u64::MAX - 0xfff, 4096),
        ] {
            assert!(
                matches!(
                    shadow.map(offset, file.as_fd(), 0, len, true),
                    Err(ShadowError::InvalidRange { .. })
                ),
                "{offset:#x}+{len:#x}"
            );
        }
        assert!(matches!(
            shadow.map(0, file.as_fd(), 4096, 8192, true),
            Err(ShadowError::SourceTooShort { .. })
        ));
        shadow.map(0x2000, file.as_fd(), 0, 8192, true).unwrap();
        for offset in [0x1000, 0x2000, 0x3000] {
            assert!(matches!(
                shadow.map(offset, file.as_fd(), 0, 8192, true),
                Err(ShadowError::Overlaps {
                    existing: 0x2000,
                    ..
                })
            ));
        }
        shadow.map(0x4000, file.as_fd(), 0, 4096, true).unwrap();
        assert!(matches!(
            shadow.unmap(0x3000),
            Err(ShadowError::UnknownMapping(0x3000))
        ));
        shadow.unmap_all();
        assert_eq!(shadow.mapping_count(), 0);
        let client = client_view(&mmap, 0x10000);
        assert_eq!(read(&client, 0, 0x10000), vec![0u8; 0x10000]);
    }

    #[test]
    fn trapped_access_sees_the_same_bytes_as_a_mapping() {
        let shadow = ShadowMemory::new();
        let mut byte = [0u8; 1];
        assert!(matches!(
            shadow.read(0, &mut byte),
            Err(ShadowError::RegionMissing)
        ));
        let mmap = shadow.region_mmap("test", 0x10000).unwrap();
        let client = client_view(&mmap, 0x10000);
        let file = blob(b"pixels");
        shadow.map(0x2000, file.as_fd(), 0, 6, true).unwrap();
        let mut read = [0u8; 6];
        shadow.read(0x2000, &mut read).unwrap();
        assert_eq!(&read, b"pixels");
        shadow.write(0x2000, b"PIX").unwrap();
        assert_eq!(super::tests::read(&client, 0x2000, 6), b"PIXels");
        for offset in [0xffff, 0x10000, u64::MAX] {
            assert!(matches!(
                shadow.write(offset, b"ab"),
                Err(ShadowError::InvalidRange { .. })
            ));
            assert!(shadow.read(offset, &mut read).is_err());
        }
        shadow.write(0xfffe, b"ab").unwrap();
    }

    #[test]
    fn read_only_files_are_copied_in_and_never_written() {
        let shadow = ShadowMemory::new();
        let mmap = shadow.region_mmap("test", 0x10000).unwrap();
        let client = client_view(&mmap, 0x10000);
        let file = sys::memfd(c"keymap", 6).unwrap();
        file.write_all_at(b"keymap", 0).unwrap();
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        let read_only = File::open(path).unwrap();
        // Asked writable, placed read-only: the fd allows no more. A whole page of a 6-byte
        // file, as a guest maps it: the rest of the page is zeros; a second page is refused.
        assert!(matches!(
            shadow.map(0, read_only.as_fd(), 0, 8192, true),
            Err(ShadowError::SourceTooShort { .. })
        ));
        shadow.map(0, read_only.as_fd(), 0, 4096, true).unwrap();
        assert_eq!(read(&client, 0, 6), b"keymap");
        assert_eq!(read(&client, 6, 4090), vec![0u8; 4090]);
        write(&client, 0, b"KEYMAP");
        shadow.note_exported(read_only.as_fd());
        assert_eq!(shadow.copy_out_exported(), 0);
        shadow.unmap(0).unwrap();
        let mut bytes = [0u8; 6];
        file.read_exact_at(&mut bytes, 0).unwrap();
        assert_eq!(&bytes, b"keymap");
    }

    /// Records what it was lent.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<Range<u64>>>);

    impl Borrower for Recorder {
        fn may_read(&self, range: &Range<u64>) -> bool {
            let lent = self.0.lock().unwrap();
            lent.iter().any(|l| crate::lease::overlap(l, range))
        }

        fn lent(&self, range: Range<u64>) {
            self.0.lock().unwrap().push(range);
        }

        fn give_back(&self, range: &Range<u64>, _timeout: std::time::Duration) -> bool {
            self.0.lock().unwrap().retain(|l| l != range);
            true
        }
    }

    #[test]
    fn only_files_placed_once_whole_are_lent_and_they_come_back_before_unmap() {
        let shadow = ShadowMemory::new();
        let recorder = Arc::new(Recorder::default());
        let weak: std::sync::Weak<Recorder> = Arc::downgrade(&recorder);
        shadow.add_borrower(weak);
        let whole = blob(&[1u8; 8192]);
        let tail = blob(&[2u8; 8192]);
        let unplaced = blob(&[3u8; 4096]);
        assert!(shadow.lend(whole.as_fd(), recorder.as_ref()).is_none());
        assert!(shadow.region_fd().is_err(), "no region yet");
        let mmap = shadow.region_mmap("test", 1 << 20).unwrap();
        shadow.map(0x4000, whole.as_fd(), 0, 8192, true).unwrap();
        shadow.map(0x8000, tail.as_fd(), 4096, 4096, true).unwrap();
        assert_eq!(
            shadow.lend(whole.as_fd(), recorder.as_ref()),
            Some(Placement {
                offset: 0x4000,
                len: 8192
            })
        );
        assert!(shadow.lend(tail.as_fd(), recorder.as_ref()).is_none());
        assert!(shadow.lend(unplaced.as_fd(), recorder.as_ref()).is_none());
        assert_eq!(*recorder.0.lock().unwrap(), vec![0x4000..0x6000]);
        let region = shadow.region_fd().unwrap();
        assert_eq!(
            sys::file_identity(region.as_fd()).unwrap(),
            sys::file_identity(mmap.fd.as_fd()).unwrap()
        );
        shadow.unmap(0x8000).unwrap();
        assert_eq!(recorder.0.lock().unwrap().len(), 1, "not that range");
        shadow.unmap(0x4000).unwrap();
        assert!(recorder.0.lock().unwrap().is_empty(), "given back");
    }
}
