// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The DMA table: the client memory a device may reach, as the client described it in DMA_MAP
//! and as the server mapped it. Devices reach it through `GuestMemory` (guest_memory.rs).
//!
//! What a client cannot do to the server through its maps: a map is refused unless its fd is a
//! regular file opened for the access asked, the range lies inside the file, and the bounds
//! (maps, distinct files) leave room. A file that shrinks later, under the server's mapping,
//! does not end the process: every mapping is guarded against SIGBUS (`sys::FaultGuard`), and a
//! fault fails the access and drops the client. Files the client sealed against shrinking
//! (QEMU's memfd backend seals by default) cannot fault that way at all.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::Arc;
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

    /// Fails with `DmaAccessFaulted` at `address` if a fault replaced the server's mapping (see
    /// `sys::FaultGuard`): what an access copied is then not the client's memory.
    pub(crate) fn check_fault(&self, address: u64) -> Result<()> {
        match &self.mapping {
            Some(mapping) if mapping.guard.faulted() => Err(Error::DmaAccessFaulted { address }),
            _ => Ok(()),
        }
    }

    /// The client's fd and the offset in it of `address`, which the caller has checked lies
    /// inside the region; `None` for a map without an fd.
    pub(crate) fn file_at(&self, address: u64) -> Option<(&OwnedFd, u64)> {
        let mapping = self.mapping.as_ref()?;
        Some((&mapping.fd, self.file_offset + (address - self.address)))
    }

    /// The map as devices see it.
    pub(crate) fn info(&self) -> DmaMapInfo {
        DmaMapInfo {
            address: self.address,
            size: self.size,
            readable: self.readable,
            writable: self.writable,
            fd: self
                .mapping
                .as_ref()
                .map(|mapping| (mapping.fd.clone(), self.file_offset)),
            sealed: self.sealed,
        }
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
    pub(crate) fn host_ptr(&self, address: u64) -> Option<*mut u8> {
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

    /// Where faults on the client's memory are reported, for mappings a device makes itself.
    pub(crate) fn alarm(&self) -> &Arc<FaultAlarm> {
        &self.alarm
    }

    /// A number that changes whenever a map is added or removed.
    pub fn generation(&self) -> u64 {
        self.generation
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
    pub(crate) fn pieces(&self, address: u64, len: usize, write: bool) -> Result<Vec<Piece<'_>>> {
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
pub(crate) struct Piece<'a> {
    pub region: &'a DmaRegion,
    pub address: u64,
    pub buf_offset: usize,
    pub len: usize,
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::fd::AsRawFd;
    use std::os::fd::FromRawFd;
    use std::os::fd::OwnedFd;

    use super::*;

    /// A memfd of `size` bytes, as a client's RAM (guest_memory.rs's tests use it too).
    pub(crate) fn memfd(size: u64) -> OwnedFd {
        sys::memfd(c"dma-test", size).unwrap().into()
    }

    /// A readable and writable DMA_MAP body.
    pub(crate) fn map(address: u64, size: u64, offset: u64) -> DmaMap {
        DmaMap {
            argsz: 32,
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            offset,
            address,
            size,
        }
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
        let mut table = DmaTable::new(4);
        let sealed = sealable_memfd(0x2000);
        add_seals(&sealed, libc::F_SEAL_SHRINK);
        table.add(&map(0x1000, 0x1000, 0), Some(sealed)).unwrap();
        table
            .add(&map(0x4000, 0x1000, 0), Some(memfd(0x1000)))
            .unwrap();
        let sealed: Vec<bool> = table.regions().map(|region| region.info().sealed).collect();
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
}
