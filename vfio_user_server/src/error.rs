// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The crate's one error type, and what each error does to the connection.

use std::io;

use remain::sorted;
use thiserror::Error;

#[sorted]
#[derive(Error, Debug)]
pub enum Error {
    #[error("argsz {argsz} is smaller than the {needed} bytes the reply's fixed part needs")]
    ArgszTooSmall { argsz: u32, needed: usize },
    #[error("body of {actual} bytes is shorter than the {needed} bytes command {command} needs")]
    BodyTooShort {
        command: u16,
        actual: usize,
        needed: usize,
    },
    #[error("capabilities JSON is invalid: {0}")]
    Capabilities(String),
    #[error("device: {0}")]
    Device(#[source] io::Error),
    #[error("the client closed the connection")]
    Disconnected,
    #[error(
        "DMA access to {address:#x} faulted: the client's file no longer backs that memory (it \
         shrank under the map?), so the client is dropped"
    )]
    DmaAccessFaulted { address: u64 },
    #[error("DMA access to {address:#x}+{len:#x} is not inside the DMA maps")]
    DmaAccessOutOfRange { address: u64, len: u64 },
    #[error("DMA access to {address:#x} was refused by the client (errno {errno})")]
    DmaAccessRefused { address: u64, errno: u32 },
    #[error("DMA access to {address:#x} needs the client, which only the message loop can ask")]
    DmaAccessRequiresClient { address: u64 },
    #[error(
        "DMA map {address:#x}+{size:#x} at offset {offset:#x} of its file runs past the file's \
         end ({file_size:#x} bytes)"
    )]
    DmaMapBeyondFile {
        address: u64,
        size: u64,
        offset: u64,
        file_size: u64,
    },
    #[error("the fd of DMA map {address:#x} cannot be mapped {access}: {why}")]
    DmaMapFdAccess {
        address: u64,
        access: &'static str,
        why: &'static str,
    },
    #[error("the fd of DMA map {address:#x} is {kind}, not a regular file")]
    DmaMapFdNotAFile { address: u64, kind: &'static str },
    #[error("DMA map {address:#x}+{size:#x} is empty, wraps or is misaligned")]
    DmaMapInvalid { address: u64, size: u64 },
    #[error("DMA map {address:#x}+{size:#x} overlaps an existing map")]
    DmaMapOverlaps { address: u64, size: u64 },
    #[error("more than {0} DMA maps")]
    DmaMapTooMany(usize),
    #[error("DMA maps of more than {0} distinct files")]
    DmaMapTooManyFiles(usize),
    #[error("DMA map {address:#x} cannot be guarded against faults: {source}")]
    DmaMapUnguarded {
        address: u64,
        #[source]
        source: io::Error,
    },
    #[error("releasing guest memory at {address:#x} failed: {source}")]
    DmaReleaseFailed {
        address: u64,
        #[source]
        source: io::Error,
    },
    #[error("fds were truncated: the client sent more than max_msg_fds")]
    FdsTruncated,
    #[error("command {command} carried {count} fds, more than it accepts")]
    FdsUnexpected { command: u16, count: usize },
    #[error("version {major}.{minor} is not supported")]
    IncompatibleVersion { major: u16, minor: u16 },
    #[error("invalid flags {flags:#x} for command {command}")]
    InvalidFlags { command: u16, flags: u32 },
    #[error("IRQ index {0} does not exist")]
    IrqIndexOutOfRange(u32),
    #[error("IRQ range {start}+{count} is outside the {len} interrupts of index {index}")]
    IrqRangeOutOfRange {
        index: u32,
        start: u32,
        count: u32,
        len: u32,
    },
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    MessageTooLarge { size: u64, max: u64 },
    #[error(
        "message of {size} bytes is too large: it exceeds the maximum of {max} and is not even \
         read to be discarded beyond {discard_limit}, so the stream is lost"
    )]
    MessageTooLargeToDiscard {
        size: u64,
        max: u64,
        discard_limit: u64,
    },
    #[error("message size {0} is smaller than the 16-byte header")]
    MessageTooShort(u32),
    #[error("the client sent no fd where one is required")]
    MissingFd,
    #[error("mmap of a DMA map failed: {0}")]
    Mmap(#[source] io::Error),
    #[error("command {0} is not supported")]
    NotSupported(u16),
    #[error("out of memory for {0} bytes")]
    OutOfMemory(usize),
    #[error("region {index} access at {offset:#x}+{count:#x} is out of range")]
    RegionAccessOutOfRange { index: u32, offset: u64, count: u64 },
    #[error("region {0} does not exist")]
    RegionIndexOutOfRange(u32),
    #[error("region {0} does not allow this access")]
    RegionNotAccessible(u32),
    #[error("socket: {0}")]
    Socket(#[source] io::Error),
    #[error("transfer of {count} bytes exceeds max_data_xfer_size {max}")]
    TransferTooLarge { count: u64, max: u64 },
    #[error("a reply (command {0}) arrived that answers nothing the server sent")]
    UnexpectedReply(u16),
    #[error("command {0} is unknown")]
    UnknownCommand(u16),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a failed command does to the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Send an error reply carrying this errno and keep serving.
    Reply(i32),
    /// Send an error reply carrying this errno, then close the connection.
    ReplyAndClose(i32),
    /// The stream is unusable: close it without a reply.
    Close,
}

impl Error {
    /// Decides, per error, whether the connection survives. No wildcard arm: a new error has to
    /// make this decision explicitly.
    pub fn disposition(&self) -> Disposition {
        use Disposition::*;
        match self {
            Error::ArgszTooSmall { .. } => Reply(libc::EINVAL),
            Error::BodyTooShort { .. } => Reply(libc::EINVAL),
            Error::Capabilities(_) => ReplyAndClose(libc::EINVAL),
            Error::Device(e) => Reply(e.raw_os_error().unwrap_or(libc::EIO)),
            Error::Disconnected => Close,
            // The client's memory is gone under the server: the client changed its file.
            Error::DmaAccessFaulted { .. } => ReplyAndClose(libc::EFAULT),
            Error::DmaAccessOutOfRange { .. } => Reply(libc::EFAULT),
            Error::DmaAccessRefused { .. } => Reply(libc::EFAULT),
            Error::DmaAccessRequiresClient { .. } => Reply(libc::EFAULT),
            Error::DmaMapBeyondFile { .. } => Reply(libc::EINVAL),
            Error::DmaMapFdAccess { .. } => Reply(libc::EACCES),
            Error::DmaMapFdNotAFile { .. } => Reply(libc::EINVAL),
            Error::DmaMapInvalid { .. } => Reply(libc::EINVAL),
            Error::DmaMapOverlaps { .. } => Reply(libc::EEXIST),
            Error::DmaMapTooMany(_) => Reply(libc::ENOSPC),
            Error::DmaMapTooManyFiles(_) => Reply(libc::ENOSPC),
            // The process guards a bounded number of ranges (`sys::MAX_GUARDED_RANGES`).
            Error::DmaMapUnguarded { .. } => Reply(libc::ENOSPC),
            Error::DmaReleaseFailed { source, .. } => {
                Reply(source.raw_os_error().unwrap_or(libc::EIO))
            }
            Error::FdsTruncated => Reply(libc::E2BIG),
            Error::FdsUnexpected { .. } => Reply(libc::EINVAL),
            Error::IncompatibleVersion { .. } => ReplyAndClose(libc::ENOTSUP),
            Error::InvalidFlags { .. } => Reply(libc::EINVAL),
            Error::IrqIndexOutOfRange(_) => Reply(libc::EINVAL),
            Error::IrqRangeOutOfRange { .. } => Reply(libc::EINVAL),
            Error::MessageTooLarge { .. } => Reply(libc::E2BIG),
            // The body is not read, so what follows the header is not a message boundary.
            Error::MessageTooLargeToDiscard { .. } => ReplyAndClose(libc::E2BIG),
            // The size field cannot be trusted, so the stream cannot be resynchronized.
            Error::MessageTooShort(_) => ReplyAndClose(libc::EINVAL),
            Error::MissingFd => Reply(libc::EINVAL),
            Error::Mmap(e) => Reply(e.raw_os_error().unwrap_or(libc::ENOMEM)),
            Error::NotSupported(_) => Reply(libc::ENOTSUP),
            Error::OutOfMemory(_) => Reply(libc::ENOMEM),
            Error::RegionAccessOutOfRange { .. } => Reply(libc::EINVAL),
            Error::RegionIndexOutOfRange(_) => Reply(libc::EINVAL),
            Error::RegionNotAccessible(_) => Reply(libc::EACCES),
            Error::Socket(_) => Close,
            Error::TransferTooLarge { .. } => Reply(libc::E2BIG),
            Error::UnexpectedReply(_) => Reply(libc::EINVAL),
            Error::UnknownCommand(_) => Reply(libc::ENOSYS),
        }
    }
}
