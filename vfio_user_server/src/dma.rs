// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The DMA table (the client memory a device may reach) and bounded access to it.
//!
//! Every access holds the table's read lock for the length of the copy, and DMA_UNMAP takes the
//! write lock: an unmap therefore waits for in-flight accesses to the region before the server
//! replies, and no access can start on a region once it is gone.
//!
//! What a client cannot do to the server through its maps: a map is refused unless its fd is a
//! regular file opened for the access asked, the range lies inside the file, and the bounds
//! (maps, distinct files) leave room. A file that shrinks later, under the server's mapping,
//! does not end the process: every mapping is guarded against SIGBUS (`sys::FaultGuard`), and a
//! fault fails the access and drops the client. Files the client sealed against shrinking
//! (QEMU's memfd backend seals by default) cannot fault that way at all.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;
use std::sync::Weak;

use log::debug;

use crate::error::Error;
use crate::error::Result;
use crate::protocol::DmaMap;
use crate::protocol::DMA_MAP_FLAG_READ;
use crate::protocol::DMA_MAP_FLAG_WRITE;
use crate::sys;
use crate::sys::FaultAlarm;
use crate::sys::FaultGuard;
use crate::sys::FileFacts;
use crate::sys::MappedFile;

/// Most distinct files the maps of one client may use at once. The server keeps one fd per file,
/// so this bounds the fds a client can make it hold. QEMU sends one memfd per RAM block (a few;
/// at most one per memory slot, of which it has 256), cloud-hypervisor one per memory zone.
pub const MAX_DMA_FILES: usize = 256;

/// One DMA map as the client described it.
#[derive(Debug)]
pub struct DmaRegion {
    pub address: u64,
    pub size: u64,
    pub readable: bool,
    pub writable: bool,
    /// Offset of the map in the client's fd (0 without an fd).
    pub file_offset: u64,
    /// The client sealed the file against shrinking, so the map cannot fault past its end.
    pub sealed: bool,
    /// The server's own mapping, when the client sent an fd.
    mapping: Option<Mapping>,
}

#[derive(Debug)]
struct Mapping {
    /// Declared before `file`: the guard ends before the mapping goes.
    guard: FaultGuard,
    file: MappedFile,
    /// The client's fd, kept so that a device can map the memory its own way (a VMM library
    /// that builds its guest memory from fds, as crosvm's does).
    fd: Arc<OwnedFd>,
    /// Where `address` lies inside `file` (the fd offset rounded down to a page).
    delta: usize,
}

impl DmaRegion {
    fn end(&self) -> u64 {
        // Cannot overflow: checked when the map was added.
        self.address + self.size
    }

    pub fn is_mapped(&self) -> bool {
        self.mapping.is_some()
    }

    /// Whether a fault replaced the server's mapping (see `sys::FaultGuard`).
    fn faulted(&self) -> bool {
        self.mapping
            .as_ref()
            .is_some_and(|mapping| mapping.guard.faulted())
    }

    fn same_as(&self, other: &DmaMap, has_fd: bool) -> bool {
        self.address == other.address
            && self.size == other.size
            && self.file_offset == other.offset
            && self.readable == (other.flags & DMA_MAP_FLAG_READ != 0)
            && self.writable == (other.flags & DMA_MAP_FLAG_WRITE != 0)
            && self.is_mapped() == has_fd
    }

    /// Host pointer for `address`; the caller has checked that it lies inside the region.
    fn host_ptr(&self, address: u64) -> Option<*mut u8> {
        let mapping = self.mapping.as_ref()?;
        let offset = mapping.delta + (address - self.address) as usize;
        // Stays inside the mapping: offset < delta + size == mapping length.
        Some(mapping.file.as_ptr().wrapping_add(offset))
    }
}

/// Checks, before anything is mapped, that the client's file can back `map` as asked.
fn vet_file(map: &DmaMap, facts: &FileFacts, writable: bool) -> Result<()> {
    // Rule: only a regular file has a size, which bounds what the mapping may touch; a device
    // node could map anything.
    if !facts.regular {
        return Err(Error::DmaMapFdNotAFile {
            address: map.address,
            kind: facts.kind,
        });
    }
    let refuse = |access, why| Error::DmaMapFdAccess {
        address: map.address,
        access,
        why,
    };
    // Rule: mmap needs an fd opened for reading, whatever the protection.
    if !facts.readable {
        return Err(refuse("at all", "the fd was not opened for reading"));
    }
    // Rule: a writable shared mapping needs an fd opened for writing and no write seal.
    if writable && !facts.writable {
        return Err(refuse("writable", "the fd was opened read-only"));
    }
    if writable && facts.sealed_against_writing {
        return Err(refuse("writable", "the file is sealed against writes"));
    }
    // Rule: the map lies inside the file; a page past its end faults on the first access.
    match map.offset.checked_add(map.size) {
        Some(end) if end <= facts.size => Ok(()),
        _ => Err(Error::DmaMapBeyondFile {
            address: map.address,
            size: map.size,
            offset: map.offset,
            file_size: facts.size,
        }),
    }
}

/// One DMA map as devices see it.
#[derive(Clone, Debug)]
pub struct DmaMapInfo {
    pub address: u64,
    pub size: u64,
    pub readable: bool,
    pub writable: bool,
    /// The client's fd and the map's offset in it; `None` for memory reached with messages.
    pub fd: Option<(Arc<OwnedFd>, u64)>,
    /// The client sealed the file against shrinking: a mapping of it cannot fault past its end.
    pub sealed: bool,
}

/// The client's DMA maps, keyed by start address. Maps never overlap.
#[derive(Debug)]
pub struct DmaTable {
    regions: BTreeMap<u64, DmaRegion>,
    max_maps: usize,
    /// Counts changes, so that a device holding its own view of the maps knows when to rebuild.
    generation: u64,
    /// One kept fd per file, by (device, inode): QEMU sends the same memfd for many maps, and
    /// an fd per map would run into the process's fd limit long before `max_dma_maps`.
    files: HashMap<(u64, u64), Weak<OwnedFd>>,
    /// Where faults on the mappings are reported.
    alarm: Arc<FaultAlarm>,
}

impl Default for DmaTable {
    fn default() -> Self {
        DmaTable::new(0)
    }
}

impl DmaTable {
    pub fn new(max_maps: usize) -> DmaTable {
        DmaTable {
            regions: BTreeMap::new(),
            max_maps,
            generation: 0,
            files: HashMap::new(),
            alarm: FaultAlarm::new(None),
        }
    }

    /// Shuts `socket` (the connection's) down when the client's memory faults, waking whoever
    /// waits on it to a disconnect. Only for a table that has no maps yet.
    pub(crate) fn set_fault_socket(&mut self, socket: OwnedFd) {
        debug_assert!(self.regions.is_empty());
        self.alarm = FaultAlarm::new(Some(socket));
    }

    /// The client's address of the first fault on its memory, if one happened.
    pub fn first_fault(&self) -> Option<u64> {
        self.alarm.first_fault()
    }

    /// Adds a map; with an fd the memory is mapped MAP_SHARED once, here.
    pub fn add(&mut self, map: &DmaMap, fd: Option<OwnedFd>) -> Result<()> {
        let invalid = Error::DmaMapInvalid {
            address: map.address,
            size: map.size,
        };
        // Rule: a map covers at least one byte and does not wrap the address space.
        let end = match map.address.checked_add(map.size) {
            Some(end) if map.size > 0 => end,
            _ => return Err(invalid),
        };
        // Rule: a map is readable, writable or both.
        if map.flags & !(DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE) != 0
            || map.flags & (DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE) == 0
        {
            return Err(invalid);
        }
        // Rule: a map already known with the same parameters is not an error (clients re-send
        // maps after a memory-layout change); any other overlap is.
        if let Some(existing) = self.overlapping(map.address, end).next() {
            if existing.same_as(map, fd.is_some()) {
                return Ok(());
            }
            return Err(Error::DmaMapOverlaps {
                address: map.address,
                size: map.size,
            });
        }
        // Rule: the number of simultaneous maps is bounded by what we advertised.
        if self.regions.len() >= self.max_maps {
            return Err(Error::DmaMapTooMany(self.max_maps));
        }
        let readable = map.flags & DMA_MAP_FLAG_READ != 0;
        let writable = map.flags & DMA_MAP_FLAG_WRITE != 0;
        let (mapping, sealed) = match fd {
            Some(fd) => {
                let (mapping, facts) = self.map_fd(map, fd, readable, writable)?;
                debug!(
                    "DMA map {:#x}+{:#x}: offset {:#x} of a {:#x}-byte file, {}",
                    map.address,
                    map.size,
                    map.offset,
                    facts.size,
                    if facts.sealed_against_shrinking {
                        "sealed against shrinking"
                    } else {
                        "not sealed: guarded against faults"
                    }
                );
                (Some(mapping), facts.sealed_against_shrinking)
            }
            None => (None, false),
        };
        self.generation += 1;
        self.regions.insert(
            map.address,
            DmaRegion {
                address: map.address,
                size: map.size,
                readable,
                writable,
                file_offset: map.offset,
                sealed,
                mapping,
            },
        );
        Ok(())
    }

    /// Vets the client's fd for `map` and maps it MAP_SHARED, guarded against faults.
    fn map_fd(
        &mut self,
        map: &DmaMap,
        fd: OwnedFd,
        readable: bool,
        writable: bool,
    ) -> Result<(Mapping, FileFacts)> {
        let facts = sys::file_facts(fd.as_fd()).map_err(Error::Mmap)?;
        vet_file(map, &facts, writable)?;
        // Rule: the distinct files kept are bounded (one fd each).
        if self.kept_fd(facts.identity).is_none() && self.live_files() >= MAX_DMA_FILES {
            return Err(Error::DmaMapTooManyFiles(MAX_DMA_FILES));
        }
        let page = sys::page_size();
        let aligned = map.offset & !(page - 1);
        let delta = map.offset - aligned;
        let len = usize::try_from(map.size)
            .ok()
            .and_then(|size| size.checked_add(delta as usize))
            .ok_or(Error::DmaMapInvalid {
                address: map.address,
                size: map.size,
            })?;
        let file =
            MappedFile::map(fd.as_fd(), aligned, len, readable, writable).map_err(Error::Mmap)?;
        // SAFETY: `file` is a mapping of the client's memory only, owned by the `Mapping` built
        // below together with the guard, which is dropped first (field order). Accesses hold the
        // table's read lock, and a map leaves the table only under the write lock, so none runs
        // when the guard goes.
        let guard = unsafe {
            FaultGuard::new(
                file.as_ptr(),
                file.len(),
                map.address.wrapping_sub(delta),
                self.alarm.clone(),
            )
        }
        .map_err(|source| Error::DmaMapUnguarded {
            address: map.address,
            source,
        })?;
        let mapping = Mapping {
            guard,
            file,
            fd: self.share_fd(fd, facts.identity),
            delta: delta as usize,
        };
        Ok((mapping, facts))
    }

    /// The `(address, size)` of every map inside `address..address+size`. A map that lies only
    /// partly inside the range is an error, since a map cannot be split.
    pub fn maps_inside(&self, address: u64, size: u64) -> Result<Vec<(u64, u64)>> {
        let end = address
            .checked_add(size)
            .ok_or(Error::DmaMapInvalid { address, size })?;
        self.overlapping(address, end)
            .map(|region| {
                if region.address < address || region.end() > end {
                    Err(Error::DmaMapInvalid { address, size })
                } else {
                    Ok((region.address, region.size))
                }
            })
            .collect()
    }

    /// Removes every map inside `address..address+size` (see [`DmaTable::maps_inside`]) and
    /// returns them. Unknown ranges are tolerated: nothing is removed.
    pub fn remove(&mut self, address: u64, size: u64) -> Result<Vec<DmaRegion>> {
        let inside = self.maps_inside(address, size)?;
        if !inside.is_empty() {
            self.generation += 1;
        }
        Ok(inside
            .into_iter()
            .filter_map(|(start, _)| self.regions.remove(&start))
            .collect())
    }

    /// Removes the map with the lowest address, if any. Unlike [`DmaTable::remove`], it needs
    /// no memory but the map's own, so a disconnect can always release everything.
    pub fn remove_first(&mut self) -> Option<DmaRegion> {
        self.generation += 1;
        self.regions.pop_first().map(|(_, region)| region)
    }

    /// Ends the client's hold on the server: shuts the connection's socket down, so the client
    /// sees the end even if another fd of the socket lives on, and forgets it.
    pub(crate) fn hang_up(&mut self) {
        self.alarm.hang_up();
        self.alarm = FaultAlarm::new(None);
        self.files.clear();
    }

    /// The fd kept for the file with `identity`, while a map uses it.
    fn kept_fd(&self, identity: (u64, u64)) -> Option<Arc<OwnedFd>> {
        self.files.get(&identity).and_then(Weak::upgrade)
    }

    /// Files that maps use.
    fn live_files(&self) -> usize {
        self.files
            .values()
            .filter(|kept| kept.strong_count() > 0)
            .count()
    }

    /// The kept fd for the file behind `fd`: an earlier map's if it is the same file, else `fd`.
    fn share_fd(&mut self, fd: OwnedFd, identity: (u64, u64)) -> Arc<OwnedFd> {
        if let Some(kept) = self.kept_fd(identity) {
            return kept;
        }
        // Forget files no map uses any more before remembering this one.
        self.files.retain(|_, kept| kept.strong_count() > 0);
        let fd = Arc::new(fd);
        self.files.insert(identity, Arc::downgrade(&fd));
        fd
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn regions(&self) -> impl Iterator<Item = &DmaRegion> {
        self.regions.values()
    }

    /// Maps that intersect `start..end`, in address order.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &DmaRegion> {
        let before = self
            .regions
            .range(..start)
            .next_back()
            .map(|(_, region)| region)
            .filter(|region| region.end() > start);
        before.into_iter().chain(
            self.regions
                .range(start..)
                .map(|(_, region)| region)
                .take_while(move |region| region.address < end),
        )
    }

    /// The map containing `address`.
    fn find(&self, address: u64) -> Option<&DmaRegion> {
        self.regions
            .range(..=address)
            .next_back()
            .map(|(_, region)| region)
            .filter(|region| address < region.end())
    }

    /// Splits `address..address+len` into pieces, one per map, failing if any byte is outside
    /// the maps or the access is not allowed.
    fn pieces(&self, address: u64, len: usize, write: bool) -> Result<Vec<Piece<'_>>> {
        let out_of_range = || Error::DmaAccessOutOfRange {
            address,
            len: len as u64,
        };
        let end = address.checked_add(len as u64).ok_or_else(out_of_range)?;
        let mut pieces = Vec::new();
        let mut cursor = address;
        let mut done = 0usize;
        while cursor < end {
            let region = self.find(cursor).ok_or_else(out_of_range)?;
            if (write && !region.writable) || (!write && !region.readable) {
                return Err(out_of_range());
            }
            let piece_end = end.min(region.end());
            let piece_len = (piece_end - cursor) as usize;
            pieces.push(Piece {
                region,
                address: cursor,
                buf_offset: done,
                len: piece_len,
            });
            done += piece_len;
            cursor = piece_end;
        }
        Ok(pieces)
    }
}

/// Part of an access that falls inside one map, as the message loop sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PieceInfo {
    pub address: u64,
    pub buf_offset: usize,
    pub len: usize,
    /// The server mmapped this map; otherwise it is reached with DMA_READ/DMA_WRITE.
    pub mapped: bool,
}

/// Part of an access that falls inside one map.
struct Piece<'a> {
    region: &'a DmaRegion,
    address: u64,
    buf_offset: usize,
    len: usize,
}

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
        match self.region {
            Some(region) if region.faulted() => Err(Error::DmaAccessFaulted {
                address: self.address + offset as u64,
            }),
            _ => Ok(()),
        }
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
            if piece.region.faulted() {
                return Err(Error::DmaAccessFaulted {
                    address: piece.address,
                });
            }
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
            if piece.region.faulted() {
                return Err(Error::DmaAccessFaulted {
                    address: piece.address,
                });
            }
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
        if region.faulted() {
            return Err(Error::DmaAccessFaulted { address });
        }
        Ok(result)
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
        self.read_table()
            .regions()
            .map(|region| DmaMapInfo {
                address: region.address,
                size: region.size,
                readable: region.readable,
                writable: region.writable,
                fd: region
                    .mapping
                    .as_ref()
                    .map(|mapping| (mapping.fd.clone(), region.file_offset)),
                sealed: region.sealed,
            })
            .collect()
    }

    /// A number that changes whenever a map is added or removed.
    pub fn generation(&self) -> u64 {
        self.read_table().generation
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
        let alarm = self.read_table().alarm.clone();
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
    use std::os::fd::AsRawFd;
    use std::os::fd::FromRawFd;
    use std::os::fd::OwnedFd;

    use super::*;
    use crate::error::Disposition;

    fn memfd(size: u64) -> OwnedFd {
        sys::memfd(c"dma-test", size).unwrap().into()
    }

    fn map(address: u64, size: u64, offset: u64) -> DmaMap {
        DmaMap {
            argsz: 32,
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            offset,
            address,
            size,
        }
    }

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
    fn overlaps_wraps_and_duplicates() {
        let mut table = DmaTable::new(2);
        table.add(&map(0x1000, 0x2000, 0), None).unwrap();
        // Identical re-map is accepted without a second entry.
        table.add(&map(0x1000, 0x2000, 0), None).unwrap();
        assert_eq!(table.len(), 1);
        // Overlaps at either end.
        assert!(matches!(
            table.add(&map(0x2000, 0x2000, 0), None),
            Err(Error::DmaMapOverlaps { .. })
        ));
        assert!(table.add(&map(0x0, 0x1001, 0), None).is_err());
        // Zero size and wrap.
        assert!(table.add(&map(0x9000, 0, 0), None).is_err());
        assert!(table.add(&map(u64::MAX - 0xfff, 0x2000, 0), None).is_err());
        table.add(&map(0x3000, 0x1000, 0), None).unwrap();
        assert!(matches!(
            table.add(&map(0x8000, 0x1000, 0), None),
            Err(Error::DmaMapTooMany(2))
        ));
        // Unknown range: tolerated. Partial: refused. Whole: removed.
        let generation = table.generation;
        assert!(table.remove(0x100000, 0x1000).unwrap().is_empty());
        assert_eq!(table.generation, generation, "nothing changed");
        assert!(table.remove(0x1000, 0x1000).is_err());
        assert_eq!(table.remove(0x1000, 0x2000).unwrap().len(), 1);
        assert_ne!(table.generation, generation);
        assert!(table.remove_first().is_some());
        assert!(table.remove_first().is_none());
    }

    #[test]
    fn fds_are_vetted_before_they_are_mapped() {
        let mut table = DmaTable::new(16);
        // Past the end of the file, from the start or from an offset.
        let small = memfd(0x1000);
        assert!(matches!(
            table.add(&map(0x10000, 0x200000, 0), Some(small)),
            Err(Error::DmaMapBeyondFile {
                file_size: 0x1000,
                ..
            })
        ));
        assert!(matches!(
            table.add(&map(0x10000, 0x1000, 0x400000), Some(memfd(0x200000))),
            Err(Error::DmaMapBeyondFile { .. })
        ));
        assert!(matches!(
            table.add(&map(0x10000, 0x1000, u64::MAX - 0xfff), Some(memfd(0x1000))),
            Err(Error::DmaMapBeyondFile { .. })
        ));
        // Not a regular file.
        let (socket, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            table.add(&map(0x10000, 0x1000, 0), Some(socket.into())),
            Err(Error::DmaMapFdNotAFile {
                kind: "a socket",
                ..
            })
        ));
        // Read-only fd, asked for a writable map; sealed against writes.
        let dir = std::env::temp_dir().join(format!("dma-vet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ram");
        std::fs::write(&path, vec![0u8; 0x1000]).unwrap();
        let read_only = std::fs::File::open(&path).unwrap();
        assert!(matches!(
            table.add(&map(0x10000, 0x1000, 0), Some(read_only.into())),
            Err(Error::DmaMapFdAccess {
                access: "writable",
                ..
            })
        ));
        let mut read_map = map(0x10000, 0x1000, 0);
        read_map.flags = DMA_MAP_FLAG_READ;
        table
            .add(&read_map, Some(std::fs::File::open(&path).unwrap().into()))
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let sealed = sealable_memfd(0x1000);
        add_seals(&sealed, libc::F_SEAL_WRITE);
        assert!(matches!(
            table.add(&map(0x20000, 0x1000, 0), Some(sealed)),
            Err(Error::DmaMapFdAccess {
                access: "writable",
                why: "the file is sealed against writes",
                ..
            })
        ));
        assert_eq!(table.len(), 1, "only the read-only map of the read-only fd");
    }

    fn add_seals(fd: &OwnedFd, seals: i32) {
        // SAFETY: no pointers; the result is checked.
        let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        assert_eq!(ret, 0);
    }

    fn sealable_memfd(size: u64) -> OwnedFd {
        // SAFETY: a valid NUL-terminated name; the result is checked.
        let fd = unsafe {
            libc::memfd_create(
                c"dma-test".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        assert!(fd >= 0);
        // SAFETY: memfd_create returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let file = std::fs::File::from(fd);
        file.set_len(size).unwrap();
        file.into()
    }

    #[test]
    fn sealed_files_are_reported() {
        let memory = GuestMemory::new(4);
        let sealed = sealable_memfd(0x2000);
        add_seals(&sealed, libc::F_SEAL_SHRINK);
        memory
            .lock()
            .add(&map(0x1000, 0x1000, 0), Some(sealed))
            .unwrap();
        memory
            .lock()
            .add(&map(0x4000, 0x1000, 0), Some(memfd(0x1000)))
            .unwrap();
        let sealed: Vec<bool> = memory.maps().iter().map(|map| map.sealed).collect();
        assert_eq!(sealed, vec![true, false]);
    }

    #[test]
    fn distinct_files_are_bounded() {
        let mut table = DmaTable::new(MAX_DMA_FILES + 8);
        let mut address = 0x100000;
        for _ in 0..MAX_DMA_FILES {
            table
                .add(&map(address, 0x1000, 0), Some(memfd(0x1000)))
                .unwrap();
            address += 0x1000;
        }
        assert!(matches!(
            table.add(&map(address, 0x1000, 0), Some(memfd(0x1000))),
            Err(Error::DmaMapTooManyFiles(MAX_DMA_FILES))
        ));
        // Another map of a file already kept costs no fd.
        let kept = table
            .regions()
            .next()
            .unwrap()
            .mapping
            .as_ref()
            .unwrap()
            .fd
            .clone();
        let again = kept.try_clone().unwrap();
        drop(kept);
        table.add(&map(address, 0x1000, 0), Some(again)).unwrap();
        // Unmapping frees room.
        table.remove(0x100000, 0x1000).unwrap();
        let _ = table.remove(0x101000, 0x1000).unwrap();
        table
            .add(&map(address + 0x1000, 0x1000, 0), Some(memfd(0x1000)))
            .unwrap();
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
    fn maps_of_one_file_share_one_fd() {
        let mut table = DmaTable::new(16);
        let file = memfd(0x10000);
        for i in 0..4 {
            let map = map(0x10000 * (i + 1), 0x1000, 0x1000 * i);
            table.add(&map, Some(file.try_clone().unwrap())).unwrap();
        }
        let other = memfd(0x1000);
        table.add(&map(0x100000, 0x1000, 0), Some(other)).unwrap();
        let fds: Vec<_> = table
            .regions()
            .map(|region| region.mapping.as_ref().unwrap().fd.clone())
            .collect();
        assert!(fds[..4].iter().all(|fd| Arc::ptr_eq(fd, &fds[0])));
        assert!(!Arc::ptr_eq(&fds[0], &fds[4]));
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
