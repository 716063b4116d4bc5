// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Bounded access to the client's memory through the DMA table: [`GuestMemory`], which devices
//! keep, and the [`GuestSlice`]s it lends.
//!
//! Every access holds the table's read lock for the length of the copy, and DMA_UNMAP takes the
//! write lock: an unmap therefore waits for in-flight accesses to the region before the server
//! replies, and no access can start on a region once it is gone. An access to a mapping that
//! faulted (its file shrank) fails with `DmaAccessFaulted` (see `sys::FaultGuard`).

use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use crate::dma::DmaMapInfo;
use crate::dma::DmaRegion;
use crate::dma::DmaTable;
use crate::dma::PieceInfo;
use crate::error::Error;
use crate::error::Result;
use crate::sys;
use crate::sys::FaultGuard;

/// A contiguous piece of client memory, valid while the closure that received it runs.
///
/// It cannot be kept: DMA_UNMAP waits for it to be released. Copies go through raw pointers since
/// the guest may change the memory at any time.
pub struct GuestSlice<'a> {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    /// The client's address of the slice.
    address: u64,
    /// The map the slice lies in (none for an empty slice), for its fault mark.
    region: Option<&'a DmaRegion>,
    _table: PhantomData<&'a DmaTable>,
}

impl GuestSlice<'_> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `buf.len()` bytes starting at `offset` in the slice into `buf`.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len())?;
        // SAFETY: check() proved offset..offset+len lies inside the mapping, which the table's
        // read lock keeps alive; buf is a distinct Rust buffer.
        unsafe { sys::copy_guest(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) };
        self.check_fault(offset)
    }

    /// Copies `data` into the slice starting at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len())?;
        if !self.writable {
            return Err(Error::DmaAccessOutOfRange {
                address: offset as u64,
                len: data.len() as u64,
            });
        }
        // SAFETY: as in read_at, and the mapping is writable.
        unsafe { sys::copy_guest(data.as_ptr(), self.ptr.add(offset), data.len()) };
        self.check_fault(offset)
    }

    /// Fails if the memory faulted (see `sys::FaultGuard`): what was copied is not the
    /// client's.
    fn check_fault(&self, offset: usize) -> Result<()> {
        self.region.map_or(Ok(()), |region| {
            region.check_fault(self.address + offset as u64)
        })
    }

    /// The host address of the slice, for handing to a system call (e.g. an iovec). It is valid
    /// only while the closure that received this slice runs.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    fn check(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::DmaAccessOutOfRange {
                address: offset as u64,
                len: len as u64,
            }),
        }
    }
}

/// A shareable handle on a connection's DMA table: devices keep a clone for their worker threads.
#[derive(Clone, Debug, Default)]
pub struct GuestMemory {
    table: Arc<RwLock<DmaTable>>,
}

impl GuestMemory {
    pub fn new(max_maps: usize) -> GuestMemory {
        GuestMemory {
            table: Arc::new(RwLock::new(DmaTable::new(max_maps))),
        }
    }

    /// Reads guest memory at `address` into `buf`. The range may span adjacent maps, but every
    /// byte must be inside a map that the server could mmap.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<()> {
        let table = self.read_table();
        for piece in table.pieces(address, buf.len(), false)? {
            let src =
                piece
                    .region
                    .host_ptr(piece.address)
                    .ok_or(Error::DmaAccessRequiresClient {
                        address: piece.address,
                    })?;
            let dst = &mut buf[piece.buf_offset..piece.buf_offset + piece.len];
            // SAFETY: pieces() proved address..+len lies inside this region's mapping, which the
            // read lock keeps mapped; dst is a distinct Rust buffer of the same length.
            unsafe { sys::copy_guest(src, dst.as_mut_ptr(), piece.len) };
            piece.region.check_fault(piece.address)?;
        }
        Ok(())
    }

    /// Writes `data` to guest memory at `address`, under the same rules as [`GuestMemory::read`].
    pub fn write(&self, address: u64, data: &[u8]) -> Result<()> {
        let table = self.read_table();
        for piece in table.pieces(address, data.len(), true)? {
            let dst =
                piece
                    .region
                    .host_ptr(piece.address)
                    .ok_or(Error::DmaAccessRequiresClient {
                        address: piece.address,
                    })?;
            let src = &data[piece.buf_offset..piece.buf_offset + piece.len];
            // SAFETY: as in read(); the region was mapped writable (pieces() checked `writable`).
            unsafe { sys::copy_guest(src.as_ptr(), dst, piece.len) };
            piece.region.check_fault(piece.address)?;
        }
        Ok(())
    }

    /// Runs `f` on the guest memory `address..address+len`, which must lie inside one mmapped
    /// map. An unmap of that map waits until `f` returns.
    pub fn with_slice<R>(
        &self,
        address: u64,
        len: usize,
        f: impl FnOnce(&GuestSlice) -> R,
    ) -> Result<R> {
        let table = self.read_table();
        let pieces = table.pieces(address, len, false)?;
        let (region, ptr) = match pieces.as_slice() {
            [] => return Ok(f(&empty_slice())),
            [piece] => (
                piece.region,
                piece
                    .region
                    .host_ptr(piece.address)
                    .ok_or(Error::DmaAccessRequiresClient { address })?,
            ),
            // A slice cannot span two separate mappings.
            _ => {
                return Err(Error::DmaAccessOutOfRange {
                    address,
                    len: len as u64,
                })
            }
        };
        let slice = GuestSlice {
            ptr,
            len,
            writable: region.writable,
            address,
            region: Some(region),
            _table: PhantomData,
        };
        let result = f(&slice);
        // What `f` did through the slice's pointer (an iovec for a system call, say) is not
        // checked by the slice itself.
        region.check_fault(address)?;
        Ok(result)
    }

    /// Gives the client's pages under `address..address + len` back to the host, as a balloon
    /// does with the pages its driver hands over: a hole is punched in the client's file under
    /// each map the range crosses, which frees the pages for the client and every process that
    /// maps them, and they read as zeros when next touched. The range must be whole pages inside
    /// writable maps that came with an fd; nothing is released otherwise.
    pub fn release(&self, address: u64, len: u64) -> Result<()> {
        let page = sys::page_size();
        let out_of_range = Error::DmaAccessOutOfRange { address, len };
        if !address.is_multiple_of(page) || !len.is_multiple_of(page) {
            return Err(out_of_range);
        }
        let len = usize::try_from(len).map_err(|_| out_of_range)?;
        let table = self.read_table();
        let pieces = table.pieces(address, len, true)?;
        let mut holes = Vec::with_capacity(pieces.len());
        for piece in &pieces {
            let (fd, offset) =
                piece
                    .region
                    .file_at(piece.address)
                    .ok_or(Error::DmaAccessRequiresClient {
                        address: piece.address,
                    })?;
            holes.push((piece.address, fd, offset, piece.len as u64));
        }
        for (address, fd, offset, len) in holes {
            sys::punch_hole(fd.as_fd(), offset, len)
                .map_err(|source| Error::DmaReleaseFailed { address, source })?;
        }
        Ok(())
    }

    /// Whether every byte of the range is inside a map (mmapped or not).
    pub fn contains(&self, address: u64, len: u64) -> bool {
        usize::try_from(len)
            .ok()
            .is_some_and(|len| self.read_table().pieces(address, len, false).is_ok())
    }

    /// How an access splits over the maps, or an error if any byte is outside them. Only the
    /// message loop may act on the result: it is the only thread that changes the table.
    pub(crate) fn pieces(&self, address: u64, len: usize, write: bool) -> Result<Vec<PieceInfo>> {
        let table = self.read_table();
        Ok(table
            .pieces(address, len, write)?
            .into_iter()
            .map(|piece| PieceInfo {
                address: piece.address,
                buf_offset: piece.buf_offset,
                len: piece.len,
                mapped: piece.region.is_mapped(),
            })
            .collect())
    }

    pub(crate) fn lock(&self) -> RwLockWriteGuard<'_, DmaTable> {
        self.table
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read_table(&self) -> RwLockReadGuard<'_, DmaTable> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current maps, in address order. A device that maps the fds itself must drop its
    /// mappings of a range in `Device::dma_unmapping`.
    pub fn maps(&self) -> Vec<DmaMapInfo> {
        self.read_table().regions().map(DmaRegion::info).collect()
    }

    /// A number that changes whenever a map is added or removed.
    pub fn generation(&self) -> u64 {
        self.read_table().generation()
    }

    /// Number of maps in the table.
    pub fn map_count(&self) -> usize {
        self.read_table().len()
    }

    /// The client's address of the first fault on its memory, if one happened; the connection
    /// is dropped then (see `sys::FaultGuard`).
    pub fn first_fault(&self) -> Option<u64> {
        self.read_table().first_fault()
    }

    /// Guards a mapping of the client's memory that a device made itself (from the fds in
    /// [`GuestMemory::maps`]), as the server's own are: a fault in it replaces it with zeros and
    /// drops the client instead of ending the process. `client_address` is where `ptr` lies in
    /// the client's address space, for the report.
    ///
    /// # Safety
    /// As `sys::FaultGuard::new`: `ptr..ptr + len` is a mapping the caller owns that holds only
    /// the client's memory, stays mapped until the guard is dropped, and is not being accessed
    /// when it is.
    pub unsafe fn guard_mapping(
        &self,
        ptr: *mut u8,
        len: usize,
        client_address: u64,
    ) -> Result<FaultGuard> {
        let alarm = self.read_table().alarm().clone();
        // SAFETY: the caller's contract is FaultGuard::new's.
        unsafe { FaultGuard::new(ptr, len, client_address, alarm) }.map_err(|source| {
            Error::DmaMapUnguarded {
                address: client_address,
                source,
            }
        })
    }
}

fn empty_slice<'a>() -> GuestSlice<'a> {
    GuestSlice {
        ptr: std::ptr::NonNull::dangling().as_ptr(),
        len: 0,
        writable: false,
        address: 0,
        region: None,
        _table: PhantomData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::tests::map;
    use crate::dma::tests::memfd;
    use crate::error::Disposition;

    #[test]
    fn read_write_within_and_across_adjacent_maps() {
        let memory = GuestMemory::new(16);
        let fd = memfd(0x3000);
        let fd2 = fd.try_clone().unwrap();
        memory
            .lock()
            .add(&map(0x10000, 0x1000, 0), Some(fd))
            .unwrap();
        memory
            .lock()
            .add(&map(0x11000, 0x2000, 0x1000), Some(fd2))
            .unwrap();

        memory.write(0x10ffe, &[1, 2, 3, 4]).unwrap();
        let mut back = [0u8; 4];
        memory.read(0x10ffe, &mut back).unwrap();
        assert_eq!(back, [1, 2, 3, 4]);

        // A slice must not straddle two maps, even adjacent ones.
        assert!(memory.with_slice(0x10ffe, 4, |_| ()).is_err());
        memory
            .with_slice(0x11000, 2, |slice| {
                let mut two = [0u8; 2];
                slice.read_at(0, &mut two).unwrap();
                assert_eq!(two, [3, 4]);
                assert!(slice.read_at(1, &mut two).is_err());
            })
            .unwrap();
    }

    /// Bytes the file behind `fd` holds in memory.
    fn allocated(fd: &std::os::fd::OwnedFd) -> u64 {
        let file = std::fs::File::from(fd.try_clone().unwrap());
        std::os::unix::fs::MetadataExt::blocks(&file.metadata().unwrap()) * 512
    }

    #[test]
    fn release_punches_holes_under_the_range_only() {
        let page = sys::page_size();
        let memory = GuestMemory::new(16);
        let fd = memfd(8 * page);
        let observer = fd.try_clone().unwrap();
        let fd2 = fd.try_clone().unwrap();
        // Two adjacent maps of one file, the second further into it.
        memory
            .lock()
            .add(&map(0x100000, 4 * page, 0), Some(fd))
            .unwrap();
        memory
            .lock()
            .add(&map(0x100000 + 4 * page, 2 * page, 6 * page), Some(fd2))
            .unwrap();
        let everything = vec![0xa5u8; 6 * page as usize];
        memory.write(0x100000, &everything).unwrap();
        let before = allocated(&observer);

        // Three pages of the first map and the first of the second.
        memory.release(0x100000 + page, 4 * page).unwrap();
        assert_eq!(allocated(&observer), before - 4 * page);
        let mut back = vec![0u8; 6 * page as usize];
        memory.read(0x100000, &mut back).unwrap();
        let page = page as usize;
        assert!(back[..page].iter().all(|&b| b == 0xa5), "kept before");
        assert!(back[page..5 * page].iter().all(|&b| b == 0), "released");
        assert!(back[5 * page..].iter().all(|&b| b == 0xa5), "kept after");
    }

    #[test]
    fn release_refuses_what_it_cannot_release_whole() {
        let page = sys::page_size();
        let memory = GuestMemory::new(16);
        let fd = memfd(2 * page);
        let observer = fd.try_clone().unwrap();
        memory
            .lock()
            .add(&map(0x100000, 2 * page, 0), Some(fd))
            .unwrap();
        memory.lock().add(&map(0x200000, page, 0), None).unwrap();
        memory
            .write(0x100000, &vec![1u8; 2 * page as usize])
            .unwrap();
        let before = allocated(&observer);
        // Not whole pages; past the end of the map; wrapping; a map without an fd.
        assert!(memory.release(0x100000 + 1, page).is_err());
        assert!(memory.release(0x100000, page + 1).is_err());
        assert!(memory.release(0x100000 + page, 2 * page).is_err());
        assert!(memory.release(u64::MAX - page + 1, 2 * page).is_err());
        assert!(matches!(
            memory.release(0x200000, page),
            Err(Error::DmaAccessRequiresClient { .. })
        ));
        assert_eq!(allocated(&observer), before, "nothing released");
    }

    #[test]
    fn access_outside_the_maps_fails() {
        let memory = GuestMemory::new(16);
        memory
            .lock()
            .add(&map(0x1000, 0x1000, 0), Some(memfd(0x1000)))
            .unwrap();
        let mut buf = [0u8; 8];
        // Runs past the end of the only map.
        assert!(memory.read(0x1ffc, &mut buf).is_err());
        // Before the map.
        assert!(memory.read(0xff8, &mut buf).is_err());
        // Wraps the address space.
        assert!(memory.read(u64::MAX - 2, &mut buf).is_err());
        assert!(memory.write(0x2000, &buf).is_err());
        assert!(memory.read(0x1ff8, &mut buf).is_ok());
    }

    #[test]
    fn a_file_that_shrinks_fails_the_access_instead_of_the_process() {
        let memory = GuestMemory::new(4);
        let file = memfd(0x4000);
        let shrinker = std::fs::File::from(file.try_clone().unwrap());
        memory
            .lock()
            .add(&map(0x10000, 0x4000, 0), Some(file))
            .unwrap();
        memory.write(0x13000, b"last page").unwrap();
        shrinker.set_len(0x1000).unwrap();
        assert_eq!(memory.first_fault(), None);
        let mut back = [0u8; 9];
        assert!(matches!(
            memory.read(0x13000, &mut back),
            Err(Error::DmaAccessFaulted { address: 0x13000 })
        ));
        assert!(Error::DmaAccessFaulted { address: 0 }.disposition() != Disposition::Reply(14));
        // Where the copy touched the page first.
        let fault = memory.first_fault().unwrap();
        assert!((0x13000..0x13009).contains(&fault), "{fault:#x}");
        // The whole map is gone now, the page still backed by the file included.
        assert!(memory.write(0x10000, b"x").is_err());
        assert!(memory
            .with_slice(0x10000, 16, |slice| slice
                .read_at(0, &mut [0u8; 4])
                .is_err())
            .is_err());
        assert_eq!(memory.lock().remove(0x10000, 0x4000).unwrap().len(), 1);
    }

    #[test]
    fn unmapped_ranges_need_the_client() {
        let memory = GuestMemory::new(4);
        memory.lock().add(&map(0x1000, 0x1000, 0), None).unwrap();
        let mut buf = [0u8; 4];
        assert!(matches!(
            memory.read(0x1000, &mut buf),
            Err(Error::DmaAccessRequiresClient { .. })
        ));
        assert_eq!(
            memory.pieces(0x1000, 4, false).unwrap(),
            vec![PieceInfo {
                address: 0x1000,
                buf_offset: 0,
                len: 4,
                mapped: false
            }]
        );
    }

    #[test]
    fn unaligned_fd_offset_is_honoured() {
        let memory = GuestMemory::new(4);
        let fd = memfd(0x2000);
        let file = std::fs::File::from(fd.try_clone().unwrap());
        std::os::unix::fs::FileExt::write_all_at(&file, b"xyz", 0x1010).unwrap();
        memory
            .lock()
            .add(&map(0x5000, 0x100, 0x1010), Some(fd))
            .unwrap();
        let mut back = [0u8; 3];
        memory.read(0x5000, &mut back).unwrap();
        assert_eq!(&back, b"xyz");
    }

    #[test]
    fn unmap_waits_for_in_flight_access() {
        use std::sync::mpsc;
        use std::time::Duration;
        use std::time::Instant;

        let memory = GuestMemory::new(4);
        memory
            .lock()
            .add(&map(0x1000, 0x1000, 0), Some(memfd(0x1000)))
            .unwrap();
        let (started_tx, started_rx) = mpsc::channel();
        let worker_memory = memory.clone();
        let worker = std::thread::spawn(move || {
            worker_memory
                .with_slice(0x1000, 16, |slice| {
                    started_tx.send(()).unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                    slice.write_at(0, b"still mapped").unwrap();
                    Instant::now()
                })
                .unwrap()
        });
        started_rx.recv().unwrap();
        let removed = memory.lock().remove(0x1000, 0x1000).unwrap();
        let unmapped_at = Instant::now();
        let finished_at = worker.join().unwrap();
        assert_eq!(removed.len(), 1);
        assert!(finished_at <= unmapped_at);
    }
}
