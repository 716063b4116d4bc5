// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Follows `wl_shm` on the byte stream a Wayland client (crosvm's cross-domain context, for the
//! guest) sends its compositor, and points the pools of blobs placed in a shared-memory region
//! (virtio-gpu's host-visible BAR) at the region's own file, so that the compositor reads the
//! guest's pixels where the guest draws them and nobody copies them.
//!
//! A `wl_shm.create_pool` whose fd is a blob placed at offset B of the region gets a dup of the
//! region's file instead and the size B + size; that pool's `create_buffer` offsets and `resize`
//! sizes are shifted by B. Everything else passes unchanged, bytes and fds. A pool is rewritten
//! only when all of this holds, and otherwise keeps the blob's own fd (its pixels then reach the
//! compositor as before, by copy):
//! - its fd can be told apart: fds travel out of band, in order, one per `fd` argument, and only
//!   `wl_shm` is followed here, so a chunk's fds are matched to its `create_pool`s only when
//!   there are exactly as many of each (no other request in the chunk carries one);
//! - the whole message arrived in the chunk that brought the fds;
//! - the pool fits in its blob (size <= the blob's length), and B + size fits the protocol's
//!   int32;
//! - the region's file could be duplicated.
//!
//! A rewritten pool's `resize` is clamped to its blob, so the compositor never maps past it: it
//! cannot see another resource's pixels through a pool, whatever the client asks.
//!
//! The stream is followed message by message; a message split across chunks waits for its end
//! (its fds, already received, go on at once, which a Wayland peer accepts). A header that
//! cannot be right (a size below 8 or not a multiple of 4) ends the following: from then on
//! everything passes unchanged.

mod wire;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;

use wire::Args;
use wire::Header;
pub use wire::WireError;

/// Where a blob lies in the shared-memory region's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub offset: u64,
    pub len: u64,
}

/// The shared-memory region, as the rewriter sees it.
pub trait SharedRegion {
    /// Where the file behind `fd` is placed in the region, if it is a placed blob.
    fn placement(&self, fd: BorrowedFd) -> Option<Placement>;
    /// A new fd of the region's own file, for the compositor.
    fn region_fd(&self) -> io::Result<OwnedFd>;
}

const WL_DISPLAY: u32 = 1;
const DISPLAY_GET_REGISTRY: u16 = 1;
const REGISTRY_BIND: u16 = 0;
const SHM_CREATE_POOL: u16 = 0;
const SHM_RELEASE: u16 = 1;
const POOL_CREATE_BUFFER: u16 = 0;
const POOL_DESTROY: u16 = 1;
const POOL_RESIZE: u16 = 2;

/// A rewritten pool: the blob's place in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shift {
    offset: u32,
    len: u64,
}

/// The objects followed: everything needed to recognise `wl_shm` and its pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    Registry,
    Shm,
    Pool(Option<Shift>),
}

/// What to send on for one chunk received.
#[derive(Debug)]
pub struct Chunk {
    /// Whole messages, rewritten where they could be; a message still incomplete is held back.
    pub bytes: Vec<u8>,
    /// The chunk's fds, in order, a rewritten pool's replaced by the region's file.
    pub fds: Vec<OwnedFd>,
    /// Pools rewritten in this chunk.
    pub pools_rewritten: usize,
}

/// Follows one client connection, client to compositor.
#[derive(Debug, Default)]
pub struct Rewriter {
    objects: HashMap<u32, Object>,
    /// The start of a message whose end has not arrived.
    partial: Vec<u8>,
    /// Why the stream stopped being followed, if it did.
    lost: Option<WireError>,
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter::default()
    }

    /// Why the stream is no longer followed, if it is not.
    pub fn lost(&self) -> Option<WireError> {
        self.lost
    }

    /// Takes one chunk of the stream (a receive: its bytes and the fds that came with them) and
    /// returns what to send on.
    pub fn process(
        &mut self,
        bytes: &[u8],
        mut fds: Vec<OwnedFd>,
        region: &dyn SharedRegion,
    ) -> Chunk {
        let mut data = std::mem::take(&mut self.partial);
        data.extend_from_slice(bytes);
        if self.lost.is_some() {
            return Chunk {
                bytes: data,
                fds,
                pools_rewritten: 0,
            };
        }
        let messages = match split(&data) {
            Ok(messages) => messages,
            Err(error) => {
                self.lost = Some(error);
                return Chunk {
                    bytes: data,
                    fds,
                    pools_rewritten: 0,
                };
            }
        };
        let complete = messages.last().map_or(0, |(at, header)| at + header.size);
        // fds go to create_pools only if no other message of the chunk can have taken one.
        let pools = self.count_create_pools(&data, &messages);
        let attributable = pools == fds.len();
        let mut next_pool = 0;
        let mut pools_rewritten = 0;
        for &(at, header) in &messages {
            let message = &mut data[at..at + header.size];
            let fd_index = match self.objects.get(&header.object) {
                Some(Object::Shm) if header.opcode == SHM_CREATE_POOL => {
                    next_pool += 1;
                    attributable.then_some(next_pool - 1)
                }
                _ => None,
            };
            match self.follow(message, header, fd_index.map(|i| &mut fds[i]), region) {
                Ok(true) => pools_rewritten += 1,
                Ok(false) => {}
                Err(error) => {
                    // An argument runs past its message: the rest cannot be followed.
                    self.lost = Some(error);
                    break;
                }
            }
        }
        self.partial = data.split_off(complete);
        Chunk {
            bytes: data,
            fds,
            pools_rewritten,
        }
    }

    /// How many of `messages` are `wl_shm.create_pool`, following the objects they create
    /// without changing what is followed.
    fn count_create_pools(&self, data: &[u8], messages: &[(usize, Header)]) -> usize {
        let mut objects = self.objects.clone();
        let mut pools = 0;
        for &(at, header) in messages {
            let message = &data[at..at + header.size];
            if matches!(objects.get(&header.object), Some(Object::Shm))
                && header.opcode == SHM_CREATE_POOL
            {
                pools += 1;
            }
            let _ = track(&mut objects, message, header);
        }
        pools
    }

    /// Follows one whole message, rewriting it (and `fd`, the create_pool's, when known) where
    /// it should be. Returns whether a pool was rewritten.
    fn follow(
        &mut self,
        message: &mut [u8],
        header: Header,
        fd: Option<&mut OwnedFd>,
        region: &dyn SharedRegion,
    ) -> Result<bool, WireError> {
        let object = self.objects.get(&header.object).copied();
        match (object, header.opcode) {
            (Some(Object::Shm), SHM_CREATE_POOL) => {
                let mut args = Args::new(message, header);
                let id = args.word()?;
                let size_at = args.position();
                let size = args.word()? as i32;
                let shift = fd.and_then(|fd| rewrite_pool(fd, size, region));
                if let Some(shift) = shift {
                    let new_size = shift.offset as i64 + i64::from(size);
                    wire::set_word(message, size_at, new_size as u32);
                }
                self.objects.insert(id, Object::Pool(shift));
                Ok(shift.is_some())
            }
            (Some(Object::Pool(Some(shift))), POOL_CREATE_BUFFER) => {
                let mut args = Args::new(message, header);
                args.word()?; // id
                let offset_at = args.position();
                let offset = args.word()? as i32;
                track(&mut self.objects, message, header)?;
                if offset >= 0 {
                    let shifted =
                        (i64::from(offset) + i64::from(shift.offset)).min(i32::MAX as i64);
                    wire::set_word(message, offset_at, shifted as u32);
                }
                Ok(false)
            }
            (Some(Object::Pool(Some(shift))), POOL_RESIZE) => {
                let mut args = Args::new(message, header);
                let size_at = args.position();
                let size = args.word()? as i32;
                if size >= 0 {
                    // Never past the blob: beyond it lie other resources.
                    let clamped = (size as u64).min(shift.len);
                    let shifted = (clamped + u64::from(shift.offset)).min(i32::MAX as u64);
                    wire::set_word(message, size_at, shifted as u32);
                }
                Ok(false)
            }
            _ => track(&mut self.objects, message, header).map(|_| false),
        }
    }
}

/// The whole messages at the start of `data`, with their offsets; an incomplete one at the end
/// is left out.
fn split(data: &[u8]) -> Result<Vec<(usize, Header)>, WireError> {
    let mut messages = Vec::new();
    let mut at = 0;
    while let Some(header) = wire::header(&data[at..])? {
        if data.len() - at < header.size {
            break;
        }
        messages.push((at, header));
        at += header.size;
    }
    Ok(messages)
}

/// Updates `objects` for the objects `message` creates or destroys (a pool as not rewritten).
fn track(
    objects: &mut HashMap<u32, Object>,
    message: &[u8],
    header: Header,
) -> Result<(), WireError> {
    let object = if header.object == WL_DISPLAY {
        None
    } else {
        match objects.get(&header.object) {
            Some(object) => Some(*object),
            None => return Ok(()),
        }
    };
    let mut args = Args::new(message, header);
    match (header.object, object, header.opcode) {
        (WL_DISPLAY, _, DISPLAY_GET_REGISTRY) => {
            objects.insert(args.word()?, Object::Registry);
        }
        (_, Some(Object::Registry), REGISTRY_BIND) => {
            args.word()?; // name
            let interface = args.string()?;
            args.word()?; // version
            let id = args.word()?;
            if interface == Some(b"wl_shm") {
                objects.insert(id, Object::Shm);
            } else {
                // An id this object reuses is no longer what was followed there.
                objects.remove(&id);
            }
        }
        (_, Some(Object::Shm), SHM_CREATE_POOL) => {
            objects.insert(args.word()?, Object::Pool(None));
        }
        (_, Some(Object::Shm), SHM_RELEASE) | (_, Some(Object::Pool(_)), POOL_DESTROY) => {
            objects.remove(&header.object);
        }
        (_, Some(Object::Pool(_)), POOL_CREATE_BUFFER) => {
            // A buffer is not followed; its id may have been a followed object's before.
            objects.remove(&args.word()?);
        }
        _ => {}
    }
    Ok(())
}

/// The pool's shift if `fd` is a placed blob the pool fits in, after replacing `fd` with the
/// region's file.
fn rewrite_pool(fd: &mut OwnedFd, size: i32, region: &dyn SharedRegion) -> Option<Shift> {
    let placement = region.placement(fd.as_fd())?;
    let offset = u32::try_from(placement.offset).ok()?;
    if size < 0 || size as u64 > placement.len || u64::from(offset) + size as u64 > i32::MAX as u64
    {
        return None;
    }
    *fd = region.region_fd().ok()?;
    Some(Shift {
        offset,
        len: placement.len,
    })
}

#[cfg(test)]
mod tests;
