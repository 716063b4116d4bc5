// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Every OS call of the crate: fd passing, mmap, eventfds, memfds. Nothing outside this module
//! uses `unsafe`.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::io::IoSlice;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// Space reserved for received fds. More than a message may carry, so that an oversized batch is
/// reported as an error instead of silently truncated away.
pub const MAX_RECV_FDS: usize = 64;

/// What one `recvmsg` returned.
pub struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// The kernel dropped fds that did not fit (MSG_CTRUNC).
    pub fds_truncated: bool,
}

/// Receives bytes and any fds that ride with them. Interrupted calls are retried.
pub fn recv_with_fds(socket: BorrowedFd, buf: &mut [u8]) -> io::Result<Received> {
    // A u64 array keeps the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; (MAX_RECV_FDS * size_of::<RawFd>() + 64) / 8];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: zeroed msghdr is a valid empty value; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; (MAX_RECV_FDS * size_of::<RawFd>() + 64) / 8]>();
        // SAFETY: msg points at an iovec covering `buf` and a control buffer of msg_controllen
        // bytes, both valid and writable for the duration of the call.
        let ret = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let mut fds = Vec::new();
        // SAFETY: msg was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay within msg_control.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: cmsg is non-null and points inside the control buffer, per CMSG_NXTHDR.
            let header = unsafe { &*cmsg };
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN(0) is a pure size computation.
                let data_len = header.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
                let count = data_len / size_of::<RawFd>();
                // SAFETY: CMSG_DATA points at `count` fds written by the kernel; unaligned reads
                // because the data is only 4-byte aligned.
                let data = unsafe { libc::CMSG_DATA(cmsg) } as *const RawFd;
                for i in 0..count {
                    // SAFETY: i < count, inside the data the kernel wrote.
                    let fd = unsafe { data.add(i).read_unaligned() };
                    // SAFETY: SCM_RIGHTS installed this fd in our table; nothing else owns it.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
            // SAFETY: msg and cmsg are valid as above.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
        return Ok(Received {
            len: ret as usize,
            fds,
            fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        });
    }
}

/// Sends `bufs` with `fds` attached to their first byte. Returns the bytes sent, which may be
/// fewer than asked; the caller sends the rest without fds.
pub fn send_with_fds(
    socket: BorrowedFd,
    bufs: &[IoSlice],
    fds: &[BorrowedFd],
) -> io::Result<usize> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: zeroed msghdr is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len();
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer holds CMSG_SPACE(fd_bytes) bytes, enough for one header.
        let cmsg = unsafe { &mut *libc::CMSG_FIRSTHDR(&msg) };
        cmsg.cmsg_level = libc::SOL_SOCKET;
        cmsg.cmsg_type = libc::SCM_RIGHTS;
        // SAFETY: pure size computation.
        cmsg.cmsg_len = unsafe { libc::CMSG_LEN(fd_bytes as u32) } as usize;
        // SAFETY: CMSG_DATA has room for fd_bytes bytes, as sized by CMSG_SPACE above.
        let data = unsafe { libc::CMSG_DATA(cmsg) } as *mut RawFd;
        for (i, fd) in fds.iter().enumerate() {
            // SAFETY: i < fds.len(), within the reserved data.
            unsafe { data.add(i).write_unaligned(fd.as_raw_fd()) };
        }
    }
    loop {
        // SAFETY: IoSlice is ABI-compatible with iovec; every buffer outlives the call.
        let ret = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(ret as usize);
    }
}

/// A shared mapping of a file, unmapped on drop.
#[derive(Debug)]
pub struct MappedFile {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; access goes through raw pointers whose
// callers synchronize as the DMA table does.
unsafe impl Send for MappedFile {}
// SAFETY: as above; `&MappedFile` only hands out the address.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps `len` bytes of `fd` at `offset`, MAP_SHARED, readable and/or writable.
    pub fn map(
        fd: BorrowedFd,
        offset: u64,
        len: usize,
        readable: bool,
        writable: bool,
    ) -> io::Result<MappedFile> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut prot = 0;
        if readable {
            prot |= libc::PROT_READ;
        }
        if writable {
            prot |= libc::PROT_WRITE;
        }
        // SAFETY: a new mapping chosen by the kernel (addr NULL) cannot alias Rust memory; the
        // result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedFile {
            addr: NonNull::new(addr.cast()).expect("mmap returned NULL without MAP_FIXED"),
            len,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: addr/len are exactly the mapping created in `map`, unmapped once here.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

// SIGBUS on client memory, turned into an error for the access and a dropped client.
mod guest_fault;
pub use guest_fault::FaultAlarm;
pub use guest_fault::FaultGuard;
pub use guest_fault::MAX_GUARDED_RANGES;

/// What a DMA map needs to know about the file behind a client's fd before mapping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    /// (device, inode), as [`file_identity`].
    pub identity: (u64, u64),
    pub size: u64,
    /// What the file is, for messages: "a regular file", "a directory", ...
    pub kind: &'static str,
    /// A regular file (memfds, tmpfs, hugetlbfs and disk files are): only those have a size
    /// that bounds what a mapping may touch.
    pub regular: bool,
    /// The fd was opened for reading / for writing (an `O_PATH` fd is neither).
    pub readable: bool,
    pub writable: bool,
    /// Sealed with F_SEAL_SHRINK: the file cannot lose pages under a mapping.
    pub sealed_against_shrinking: bool,
    /// Sealed with F_SEAL_WRITE or F_SEAL_FUTURE_WRITE: no new writable shared mapping.
    pub sealed_against_writing: bool,
}

/// Gathers [`FileFacts`] with fstat, F_GETFL and F_GET_SEALS; nothing is changed.
pub fn file_facts(fd: BorrowedFd) -> io::Result<FileFacts> {
    // SAFETY: zeroed stat is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat is a live, writable struct of the right type.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: no pointers; the result is checked.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: no pointers. Files that cannot be sealed answer EINVAL: no seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) }.max(0);
    let kind = match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFIFO => "a pipe",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "an unknown kind of file",
    };
    let path_only = flags & libc::O_PATH != 0;
    let mode = flags & libc::O_ACCMODE;
    Ok(FileFacts {
        identity: (stat.st_dev, stat.st_ino),
        size: stat.st_size.max(0) as u64,
        kind,
        regular: stat.st_mode & libc::S_IFMT == libc::S_IFREG,
        readable: !path_only && (mode == libc::O_RDONLY || mode == libc::O_RDWR),
        writable: !path_only && (mode == libc::O_WRONLY || mode == libc::O_RDWR),
        sealed_against_shrinking: seals & libc::F_SEAL_SHRINK != 0,
        sealed_against_writing: seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0,
    })
}

/// Copies `len` bytes between raw pointers, one of which is guest memory that the client may
/// change concurrently.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and the ranges must not
/// overlap.
pub unsafe fn copy_guest(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

/// The (device, inode) pair that identifies the file behind `fd`.
pub fn file_identity(fd: BorrowedFd) -> io::Result<(u64, u64)> {
    // SAFETY: zeroed stat is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat is a live, writable struct of the right type.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.st_dev, stat.st_ino))
}

/// Adds 1 to an eventfd's counter.
pub fn eventfd_signal(fd: BorrowedFd) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    loop {
        // SAFETY: writes 8 bytes from a live local buffer.
        let ret = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if ret == 8 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            // The counter is saturated: the reader has not caught up, the event is pending anyway.
            Some(libc::EAGAIN) => return Ok(()),
            _ => return Err(err),
        }
    }
}

/// Reads and clears an eventfd's counter; Ok(0) when a non-blocking eventfd was not signalled.
pub fn eventfd_read(fd: BorrowedFd) -> io::Result<u64> {
    let mut value = [0u8; 8];
    loop {
        // SAFETY: reads 8 bytes into a live local buffer.
        let ret = unsafe { libc::read(fd.as_raw_fd(), value.as_mut_ptr().cast(), value.len()) };
        if ret == 8 {
            return Ok(u64::from_ne_bytes(value));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(0),
            _ => return Err(err),
        }
    }
}

/// A new eventfd, close-on-exec, optionally non-blocking.
pub fn eventfd(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::EFD_CLOEXEC;
    if nonblocking {
        flags |= libc::EFD_NONBLOCK;
    }
    // SAFETY: no pointers; the result is checked.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An anonymous memory file of `size` bytes, for regions the client may mmap.
pub fn memfd(name: &CStr, size: u64) -> io::Result<File> {
    // SAFETY: name is a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

/// Waits until `fd` is readable or `timeout_ms` passes (negative: forever). Returns readability.
pub fn wait_readable(fd: BorrowedFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(ret > 0);
    }
}

/// Frees the pages of `len` bytes of `fd` at `offset`, which read as zeros afterwards; the size
/// of the file stays.
pub fn punch_hole(fd: BorrowedFd, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: no pointers; the result is checked.
    let ret = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The size in bytes of the file behind `fd`.
pub fn file_size(fd: BorrowedFd) -> io::Result<u64> {
    // SAFETY: zeroed stat is a valid value for fstat to overwrite.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: stat is a live, writable struct of the right type.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.st_size as u64)
}

/// Forbids shrinking a memfd created with sealing allowed, so that a mapping of it can never
/// fault past its end. Returns whether the seal is in place; other files cannot be sealed.
pub fn seal_against_shrinking(fd: BorrowedFd) -> bool {
    // SAFETY: no pointers; the result is checked.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
    ret == 0
}

/// A memory file of `size` bytes sealed at that size (F_SEAL_SHRINK, F_SEAL_GROW, then
/// F_SEAL_SEAL): whoever else gets an fd of it (a client mapping a region) can neither make a
/// mapping of it fault by shrinking it nor grow it.
pub fn sealed_memfd(name: &CStr, size: u64) -> io::Result<File> {
    // SAFETY: name is a valid NUL-terminated string; the result is checked.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: no pointers; the result is checked.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Waits until one of `fds` is readable (or hung up) or `timeout_ms` passes (negative: forever).
/// Returns which are.
pub fn wait_any_readable(fds: &[BorrowedFd], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: pfds is a live array of pfds.len() pollfds.
        let ret = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(pfds.iter().map(|p| p.revents != 0).collect());
    }
}

/// The system page size.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn fds_ride_with_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let event = eventfd(true).unwrap();
        let sent = send_with_fds(a.as_fd(), &[IoSlice::new(b"hello")], &[event.as_fd()]).unwrap();
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let got = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..got.len], b"hello");
        assert_eq!(got.fds.len(), 1);
        assert!(!got.fds_truncated);
        eventfd_signal(got.fds[0].as_fd()).unwrap();
        assert_eq!(eventfd_read(event.as_fd()).unwrap(), 1);
    }

    #[test]
    fn mapping_shares_file_pages() {
        let file = memfd(c"test", 8192).unwrap();
        let map = MappedFile::map(file.as_fd(), 4096, 4096, true, true).unwrap();
        // SAFETY: the mapping is 4096 bytes long and owned by this test.
        unsafe { copy_guest(b"abc".as_ptr(), map.as_ptr(), 3) };
        let mut back = [0u8; 3];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut back, 4096).unwrap();
        assert_eq!(&back, b"abc");
    }
}
