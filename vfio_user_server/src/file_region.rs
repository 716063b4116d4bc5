// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A region whose bytes are one file's own, mapped by the client from that file.
//!
//! virtio-pmem's shared memory BAR is its disk image, fixed for the device's life: the client
//! maps the image itself, so the guest's stores land in the file's page cache with no copy, and
//! the device's flush (an fdatasync on the server's descriptor) takes them to the disk. Regions
//! whose files come and go while the guest runs use [`crate::ShadowMemory`] instead.
//!
//! A read-only image is not offered for mapping: a client maps a region with the protection its
//! flags give, a writable BAR, and a guest store into a read-only mapping would fault in the
//! client. Trapped, its reads are served here and a store is refused with an error reply.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use remain::sorted;
use thiserror::Error;

use crate::device::RegionMmap;
use crate::sys;

#[sorted]
#[derive(Error, Debug)]
pub enum FileRegionError {
    #[error("the file's {0:#x} bytes are no whole number of pages")]
    NotPages(u64),
    #[error("{offset:#x}+{len:#x} is outside the file's {file_size:#x} bytes")]
    OutOfRange {
        offset: u64,
        len: u64,
        file_size: u64,
    },
    #[error("the file is read-only")]
    ReadOnly,
    #[error("the file's {file_size:#x} bytes do not fit in the {size:#x}-byte region")]
    Size { file_size: u64, size: u64 },
    #[error("{0}")]
    Sys(#[from] io::Error),
}

pub type Result<T> = std::result::Result<T, FileRegionError>;

/// A region whose first bytes are a file's; what lies past the file's end is neither mapped nor
/// served.
pub struct FileRegion {
    /// What the client maps.
    fd: Arc<OwnedFd>,
    /// The same file, for trapped accesses.
    file: File,
    file_size: u64,
    writable: bool,
    identity: (u64, u64),
}

impl FileRegion {
    /// The region holding `file`, whose size must be whole pages. `writable` says whether the
    /// guest may store into it (the file must then be open for writing).
    pub fn new(file: OwnedFd, writable: bool) -> Result<FileRegion> {
        let file_size = sys::file_size(file.as_fd())?;
        if file_size == 0 || !file_size.is_multiple_of(sys::page_size()) {
            return Err(FileRegionError::NotPages(file_size));
        }
        let identity = sys::file_identity(file.as_fd())?;
        Ok(FileRegion {
            file: File::from(file.try_clone()?),
            fd: Arc::new(file),
            file_size,
            writable,
            identity,
        })
    }

    /// How the client maps the region of `size` bytes (the BAR's): the file itself, up to its
    /// end; `None` for a read-only file, served trapped (see the module comment).
    pub fn region_mmap(&self, size: u64) -> Result<Option<RegionMmap>> {
        if self.file_size > size {
            return Err(FileRegionError::Size {
                file_size: self.file_size,
                size,
            });
        }
        Ok(self.writable.then(|| RegionMmap {
            fd: self.fd.clone(),
            offset: 0,
            sparse_areas: (self.file_size < size).then(|| vec![(0, self.file_size)]),
        }))
    }

    /// Whether placing `len` bytes of `fd` from `fd_offset` at `offset` in the region is
    /// already done: the same file at the same offset, inside it.
    pub fn holds(&self, fd: BorrowedFd, fd_offset: u64, offset: u64, len: u64) -> bool {
        fd_offset == offset
            && offset
                .checked_add(len)
                .is_some_and(|end| end <= self.file_size)
            && sys::file_identity(fd).is_ok_and(|identity| identity == self.identity)
    }

    /// Reads the file's bytes at `offset` (a trapped access).
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<()> {
        self.check_range(offset, data.len())?;
        Ok(self.file.read_exact_at(data, offset)?)
    }

    /// Writes `data` to the file at `offset` (a trapped access).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(FileRegionError::ReadOnly);
        }
        self.check_range(offset, data.len())?;
        Ok(self.file.write_all_at(data, offset)?)
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.file_size => Ok(()),
            _ => Err(FileRegionError::OutOfRange {
                offset,
                len: len as u64,
                file_size: self.file_size,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `pages` pages of a known pattern, and the page size.
    fn image(pages: u64) -> (File, u64) {
        let page = sys::page_size();
        let file = sys::memfd(c"file-region-test", pages * page).unwrap();
        let bytes: Vec<u8> = (0..pages * page).map(|i| (i % 251) as u8).collect();
        file.write_all_at(&bytes, 0).unwrap();
        (file, page)
    }

    fn region(file: &File, writable: bool) -> Result<FileRegion> {
        FileRegion::new(OwnedFd::from(file.try_clone().unwrap()), writable)
    }

    #[test]
    fn the_client_maps_the_file_up_to_its_end() {
        let (file, page) = image(2);
        let region = region(&file, true).unwrap();
        let whole = region.region_mmap(2 * page).unwrap().unwrap();
        assert_eq!(whole.offset, 0);
        assert_eq!(whole.sparse_areas, None);
        let larger = region.region_mmap(4 * page).unwrap().unwrap();
        assert_eq!(larger.sparse_areas, Some(vec![(0, 2 * page)]));
        assert_eq!(
            sys::file_identity(larger.fd.as_fd()).unwrap(),
            sys::file_identity(file.as_fd()).unwrap()
        );
    }

    #[test]
    fn a_read_only_file_is_trapped_and_refuses_stores() {
        let (file, page) = image(1);
        let region = region(&file, false).unwrap();
        assert!(region.region_mmap(page).unwrap().is_none());
        let mut byte = [0];
        region.read(7, &mut byte).unwrap();
        assert_eq!(byte, [7]);
        assert!(matches!(
            region.write(0, &[1]),
            Err(FileRegionError::ReadOnly)
        ));
    }

    #[test]
    fn trapped_accesses_reach_the_file_and_stop_at_its_end() {
        let (file, page) = image(1);
        let region = region(&file, true).unwrap();
        region.write(page - 2, &[0xaa, 0xbb]).unwrap();
        let mut back = [0; 2];
        file.read_exact_at(&mut back, page - 2).unwrap();
        assert_eq!(back, [0xaa, 0xbb]);
        // Past the file, inside the region: nothing to serve.
        assert!(matches!(
            region.read(page - 1, &mut back),
            Err(FileRegionError::OutOfRange { .. })
        ));
        assert!(matches!(
            region.write(u64::MAX, &[0]),
            Err(FileRegionError::OutOfRange { .. })
        ));
    }

    #[test]
    fn holds_only_the_same_file_at_the_same_offset() {
        let (file, page) = image(2);
        let region = region(&file, true).unwrap();
        let fd = file.as_fd();
        assert!(region.holds(fd, 0, 0, 2 * page));
        assert!(region.holds(fd, page, page, page));
        assert!(!region.holds(fd, 0, page, page));
        assert!(!region.holds(fd, 0, 0, 3 * page));
        assert!(!region.holds(fd, 0, 0, u64::MAX));
        let (other, _) = image(2);
        assert!(!region.holds(other.as_fd(), 0, 0, page));
    }

    #[test]
    fn sizes_that_cannot_be_mapped_are_refused() {
        let (file, page) = image(2);
        // Larger than the BAR.
        assert!(matches!(
            region(&file, true).unwrap().region_mmap(page),
            Err(FileRegionError::Size { .. })
        ));
        file.set_len(page + 1).unwrap();
        assert!(matches!(
            region(&file, true),
            Err(FileRegionError::NotPages(_))
        ));
        file.set_len(0).unwrap();
        assert!(matches!(
            region(&file, true),
            Err(FileRegionError::NotPages(0))
        ));
    }
}
