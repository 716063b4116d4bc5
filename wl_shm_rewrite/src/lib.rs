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
//!   `wl_shm` is followed here, so a chunk's fds are matched to its `create_pool`s only when there
//!   are exactly as many of each (no other request in the chunk carries one);
//! - the whole message arrived in the chunk that brought the fds;
//! - the pool fits in its blob (size <= the blob's length), and B + size fits the protocol's int32;
//! - the region's file could be duplicated.
//!
//! A rewritten pool's `resize` is clamped to its blob, so the compositor never maps past it: it
//! cannot see another resource's pixels through a pool, whatever the client asks.
//!
//! The compositor reads the region where the blob was placed for as long as it uses the pool's
//! buffers, even after the guest frees the blob and places another resource there. So the
//! rewriter also follows the lifetimes that decide what it may still read ([`Rewriter::lent`]):
//! a rewritten pool until the client destroys it; its buffers until the client destroys them;
//! and a buffer the client destroys while a surface still shows it (attached, not yet released
//! by the compositor's `wl_buffer.release`) until that surface is destroyed, the compositor
//! releases it, or it releases a buffer attached to that surface later. The relay
//! ([`vfio_user_server::SocketRelay`]) ends a connection whose compositor may still read a range
//! the guest frees.
//!
//! The stream is followed message by message; a message split across chunks waits for its end
//! (its fds, already received, go on at once, which a Wayland peer accepts). A header that
//! cannot be right (a size below 8 or not a multiple of 4), in either direction, ends the
//! following: from then on everything passes unchanged, and what was lent stays lent until the
//! connection ends.

mod wire;

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::OwnedFd;

pub use vfio_user_server::Filtered;
pub use vfio_user_server::Placement;
pub use vfio_user_server::SharedRegion;
use vfio_user_server::StreamFilter;
use wire::Args;
use wire::Header;
pub use wire::WireError;

const WL_DISPLAY: u32 = 1;
const DISPLAY_GET_REGISTRY: u16 = 1;
const DISPLAY_EVENT_DELETE_ID: u16 = 1;
const REGISTRY_BIND: u16 = 0;
const COMPOSITOR_CREATE_SURFACE: u16 = 0;
const SURFACE_DESTROY: u16 = 0;
const SURFACE_ATTACH: u16 = 1;
const SHM_CREATE_POOL: u16 = 0;
const SHM_RELEASE: u16 = 1;
const POOL_CREATE_BUFFER: u16 = 0;
const POOL_DESTROY: u16 = 1;
const POOL_RESIZE: u16 = 2;
const BUFFER_DESTROY: u16 = 0;
const BUFFER_EVENT_RELEASE: u16 = 0;

/// A rewritten pool: the blob's place in the region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shift {
    offset: u32,
    len: u64,
}

impl Shift {
    fn range(&self) -> Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + self.len
    }
}

/// A surface showing a buffer: attached there by the `attach`th attach of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shown {
    surface: u32,
    attach: u64,
}

/// The objects followed: everything needed to recognise `wl_shm`'s pools and what the
/// compositor may read through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    Registry,
    Compositor,
    Surface,
    Shm,
    Pool(Option<Shift>),
    /// A buffer of a rewritten pool, and where it was last attached until the compositor
    /// releases it.
    Buffer {
        shift: Shift,
        shown: Option<Shown>,
    },
}

/// A buffer the client destroyed while a surface showed it: the compositor may go on reading
/// it, and sends no release for it once it has seen the destroy.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Orphan {
    range: Range<u64>,
    shown: Shown,
    /// Its id, until the compositor says it is free (`wl_display.delete_id`): a release for that
    /// id until then is this buffer's.
    id: Option<u32>,
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

/// Follows one client connection: requests to the compositor, rewritten, and the compositor's
/// events, read only.
#[derive(Debug, Default)]
pub struct Rewriter {
    objects: HashMap<u32, Object>,
    orphans: Vec<Orphan>,
    /// Attaches of rewritten buffers so far.
    attaches: u64,
    /// The start of a request whose end has not arrived.
    partial: Vec<u8>,
    /// The start of an event whose end has not arrived.
    partial_event: Vec<u8>,
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

    /// How many bytes of an incomplete request are held back, waiting for its end.
    pub fn held_back(&self) -> usize {
        self.partial.len()
    }

    /// The ranges of the region the compositor may read through rewritten pools, given what
    /// was followed so far.
    pub fn lent(&self) -> Vec<Range<u64>> {
        let objects = self.objects.values().filter_map(|object| match object {
            Object::Pool(Some(shift)) | Object::Buffer { shift, .. } => Some(shift.range()),
            _ => None,
        });
        objects
            .chain(self.orphans.iter().map(|orphan| orphan.range.clone()))
            .collect()
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
            let fd_index = match followed(&self.objects, header.object) {
                Some(Object::Shm) if header.opcode == SHM_CREATE_POOL => {
                    next_pool += 1;
                    attributable.then_some(next_pool - 1)
                }
                _ => None,
            };
            // `get_mut`: were the count ever to differ from this pass, a pool gets no fd, and
            // nothing is rewritten, rather than the chunk's end being read.
            let fd = fd_index.and_then(|i| fds.get_mut(i));
            match self.follow(message, header, fd, region) {
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

    /// Follows what the compositor sends the client (which passes unchanged): the releases of
    /// rewritten buffers and the ids it frees.
    pub fn process_events(&mut self, bytes: &[u8]) {
        if self.lost.is_some() {
            return;
        }
        let mut data = std::mem::take(&mut self.partial_event);
        data.extend_from_slice(bytes);
        let messages = match split(&data) {
            Ok(messages) => messages,
            Err(error) => {
                self.lost = Some(error);
                return;
            }
        };
        let complete = messages.last().map_or(0, |(at, header)| at + header.size);
        for &(at, header) in &messages {
            if let Err(error) = self.follow_event(&data[at..at + header.size], header) {
                self.lost = Some(error);
                return;
            }
        }
        self.partial_event = data.split_off(complete);
    }

    fn follow_event(&mut self, message: &[u8], header: Header) -> Result<(), WireError> {
        if header.object == WL_DISPLAY && header.opcode == DISPLAY_EVENT_DELETE_ID {
            let id = Args::new(message, header).word()?;
            for orphan in &mut self.orphans {
                if orphan.id == Some(id) {
                    orphan.id = None;
                }
            }
            return Ok(());
        }
        if header.opcode != BUFFER_EVENT_RELEASE {
            return Ok(());
        }
        let id = header.object;
        match self.objects.get_mut(&id) {
            Some(Object::Buffer { shown, .. }) => {
                if let Some(released) = shown.take() {
                    // Done with this buffer, the compositor is done with what that surface
                    // showed before it.
                    self.orphans.retain(|orphan| {
                        orphan.shown.surface != released.surface
                            || orphan.shown.attach >= released.attach
                    });
                }
            }
            _ => self.orphans.retain(|orphan| orphan.id != Some(id)),
        }
        Ok(())
    }

    /// How many of `messages` are `wl_shm.create_pool`, following the objects they create
    /// without changing what is followed.
    fn count_create_pools(&self, data: &[u8], messages: &[(usize, Header)]) -> usize {
        let mut objects = self.objects.clone();
        let mut pools = 0;
        for &(at, header) in messages {
            let message = &data[at..at + header.size];
            if matches!(followed(&objects, header.object), Some(Object::Shm))
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
        let object = followed(&self.objects, header.object);
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
                let id = args.word()?;
                let offset_at = args.position();
                let offset = args.word()? as i32;
                if offset >= 0 {
                    let shifted =
                        (i64::from(offset) + i64::from(shift.offset)).min(i32::MAX as i64);
                    wire::set_word(message, offset_at, shifted as u32);
                }
                self.objects
                    .insert(id, Object::Buffer { shift, shown: None });
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
            (Some(Object::Surface), SURFACE_ATTACH) => {
                let buffer = Args::new(message, header).word()?;
                if let Some(Object::Buffer { shown, .. }) = self.objects.get_mut(&buffer) {
                    self.attaches += 1;
                    *shown = Some(Shown {
                        surface: header.object,
                        attach: self.attaches,
                    });
                }
                Ok(false)
            }
            (Some(Object::Surface), SURFACE_DESTROY) => {
                // The compositor stops showing the surface, and what it showed.
                let surface = header.object;
                self.orphans
                    .retain(|orphan| orphan.shown.surface != surface);
                for object in self.objects.values_mut() {
                    if let Object::Buffer { shown, .. } = object {
                        if shown.is_some_and(|shown| shown.surface == surface) {
                            *shown = None;
                        }
                    }
                }
                self.objects.remove(&surface);
                Ok(false)
            }
            (
                Some(Object::Buffer {
                    shift,
                    shown: Some(shown),
                }),
                BUFFER_DESTROY,
            ) => {
                self.orphans.push(Orphan {
                    range: shift.range(),
                    shown,
                    id: Some(header.object),
                });
                self.objects.remove(&header.object);
                Ok(false)
            }
            _ => track(&mut self.objects, message, header).map(|_| false),
        }
    }
}

impl StreamFilter for Rewriter {
    fn to_peer(&mut self, bytes: &[u8], fds: Vec<OwnedFd>, region: &dyn SharedRegion) -> Filtered {
        let chunk = self.process(bytes, fds, region);
        Filtered {
            bytes: chunk.bytes,
            fds: chunk.fds,
            lent_files: chunk.pools_rewritten,
        }
    }

    fn seen_from_peer(&mut self, bytes: &[u8]) {
        self.process_events(bytes);
    }

    fn lent(&self) -> Vec<Range<u64>> {
        Rewriter::lent(self)
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

/// Updates `objects` for the objects `message` creates or destroys, where nothing else about
/// them is followed (a pool as not rewritten, a buffer as not of a rewritten pool).
fn track(
    objects: &mut HashMap<u32, Object>,
    message: &[u8],
    header: Header,
) -> Result<(), WireError> {
    let object = followed(objects, header.object);
    if object.is_none() && header.object != WL_DISPLAY {
        return Ok(());
    }
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
            match interface {
                Some(b"wl_shm") => objects.insert(id, Object::Shm),
                Some(b"wl_compositor") => objects.insert(id, Object::Compositor),
                // An id this object reuses is no longer what was followed there.
                _ => objects.remove(&id),
            };
        }
        (_, Some(Object::Compositor), COMPOSITOR_CREATE_SURFACE) => {
            objects.insert(args.word()?, Object::Surface);
        }
        (_, Some(Object::Shm), SHM_CREATE_POOL) => {
            objects.insert(args.word()?, Object::Pool(None));
        }
        (_, Some(Object::Shm), SHM_RELEASE)
        | (_, Some(Object::Pool(_)), POOL_DESTROY)
        | (_, Some(Object::Buffer { .. }), BUFFER_DESTROY)
        | (_, Some(Object::Surface), SURFACE_DESTROY) => {
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

/// What the object `id` is followed as. The display's id is always the display's, whatever a
/// client created with it: the count of pools and the rewrite must read every message alike.
fn followed(objects: &HashMap<u32, Object>, id: u32) -> Option<Object> {
    if id == WL_DISPLAY {
        return None;
    }
    objects.get(&id).copied()
}

/// The pool's shift if `fd` is a placed blob the pool fits in, after replacing `fd` with the
/// region's file.
fn rewrite_pool(fd: &mut OwnedFd, size: i32, region: &dyn SharedRegion) -> Option<Shift> {
    use std::os::fd::AsFd;
    let placement = region.lend(fd.as_fd())?;
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
