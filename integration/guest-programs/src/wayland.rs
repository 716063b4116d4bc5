// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The few Wayland requests a fullscreen wl_shm client needs, written by hand, over any byte
//! transport that can pass files: virtio-gpu's cross-domain channel in the guest, a unix socket
//! on the host.

use std::time::Duration;
use std::time::Instant;

pub type Result<T> = std::result::Result<T, String>;

/// How long to wait for the compositor.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// wl_shm's XRGB8888.
pub const WL_SHM_FORMAT_XRGB8888: u32 = 1;

// Object ids, in the order this client creates the objects: libwayland refuses a new id that
// is not the next one.
const DISPLAY: u32 = 1;
const REGISTRY: u32 = 2;
const GLOBALS_DONE: u32 = 3;
const COMPOSITOR: u32 = 4;
const SHM: u32 = 5;
const WM_BASE: u32 = 6;
const SURFACE: u32 = 7;
const XDG_SURFACE: u32 = 8;
const TOPLEVEL: u32 = 9;
const POOL: u32 = 10;
const BUFFER: u32 = 11;
const FIRST_CALLBACK: u32 = 12;

/// Carries Wayland bytes, and files with them, to a compositor and back.
pub trait Transport {
    /// How the transport names a file it passes: a blob's resource handle, an fd.
    type File: Copy;

    fn send(&mut self, data: &[u8], files: &[Self::File]) -> Result<()>;

    /// Appends the next bytes from the compositor to `into`, waiting until `deadline`.
    fn receive(&mut self, into: &mut Vec<u8>, deadline: Instant) -> Result<()>;
}

pub struct Event {
    pub object: u32,
    pub opcode: u16,
    args: Vec<u8>,
}

impl Event {
    fn parse(message: &[u8]) -> Event {
        let header = u32::from_le_bytes(message[4..8].try_into().unwrap());
        Event {
            object: u32::from_le_bytes(message[0..4].try_into().unwrap()),
            opcode: (header & 0xffff) as u16,
            args: message[8..].to_vec(),
        }
    }

    pub fn uint(&self, index: usize) -> u32 {
        self.args
            .get(index * 4..index * 4 + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    /// A string argument starting at word `index`, and the word after it.
    pub fn string(&self, index: usize) -> (String, usize) {
        let len = self.uint(index) as usize;
        let start = (index + 1) * 4;
        let bytes = self.args.get(start..start + len).unwrap_or(&[]);
        let text = String::from_utf8_lossy(bytes.strip_suffix(&[0]).unwrap_or(bytes)).into_owned();
        (text, index + 1 + len.div_ceil(4))
    }
}

/// A Wayland request.
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn new(object: u32, opcode: u16) -> Request {
        let mut bytes = object.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 4]);
        bytes[4..6].copy_from_slice(&opcode.to_le_bytes());
        Request { bytes }
    }

    pub fn uint(mut self, value: u32) -> Request {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn string(mut self, text: &str) -> Request {
        self.bytes
            .extend_from_slice(&(text.len() as u32 + 1).to_le_bytes());
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.push(0);
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        let size = self.bytes.len() as u16;
        self.bytes[6..8].copy_from_slice(&size.to_le_bytes());
        self.bytes
    }
}

/// A client with one fullscreen toplevel showing one wl_shm buffer.
pub struct Client<T: Transport> {
    pub transport: T,
    incoming: Vec<u8>,
    next_callback: u32,
    configured: Option<u32>,
    /// The size the compositor configured (or the default given to `new`).
    pub size: (u32, u32),
}

impl<T: Transport> Client<T> {
    pub fn new(transport: T, default_size: (u32, u32)) -> Client<T> {
        Client {
            transport,
            incoming: Vec::new(),
            next_callback: FIRST_CALLBACK,
            configured: None,
            size: default_size,
        }
    }

    /// The next complete event, waiting for it.
    fn next_event(&mut self, deadline: Instant) -> Result<Event> {
        loop {
            if self.incoming.len() >= 8 {
                let size =
                    (u32::from_le_bytes(self.incoming[4..8].try_into().unwrap()) >> 16) as usize;
                if size < 8 {
                    return Err(format!("bad Wayland message size {size}"));
                }
                if self.incoming.len() >= size {
                    let message: Vec<u8> = self.incoming.drain(..size).collect();
                    return Ok(Event::parse(&message));
                }
            }
            self.transport.receive(&mut self.incoming, deadline)?;
        }
    }

    /// Handles events until the compositor has handled every request sent before.
    pub fn roundtrip(&mut self) -> Result<()> {
        let callback = self.next_callback;
        self.next_callback += 1;
        let sync = Request::new(DISPLAY, 0).uint(callback).finish();
        self.transport.send(&sync, &[])?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let event = self.next_event(deadline)?;
            if event.object == callback {
                return Ok(());
            }
            self.handle(event)?;
        }
    }

    fn handle(&mut self, event: Event) -> Result<()> {
        match (event.object, event.opcode) {
            (DISPLAY, 0) => {
                let (message, _) = event.string(2);
                return Err(format!(
                    "Wayland error on object {} code {}: {message}",
                    event.uint(0),
                    event.uint(1)
                ));
            }
            (WM_BASE, 0) => {
                let pong = Request::new(WM_BASE, 3).uint(event.uint(0)).finish();
                self.transport.send(&pong, &[])?;
            }
            (XDG_SURFACE, 0) => self.configured = Some(event.uint(0)),
            (TOPLEVEL, 0) => {
                let (width, height) = (event.uint(0), event.uint(1));
                if width > 0 && height > 0 {
                    self.size = (width, height);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Binds wl_compositor, wl_shm and xdg_wm_base, makes a fullscreen toplevel titled `title`
    /// and acknowledges its first configure. Returns how many globals the compositor offered.
    pub fn fullscreen_surface(&mut self, title: &str) -> Result<usize> {
        let mut start = Request::new(DISPLAY, 1).uint(REGISTRY).finish();
        start.extend(Request::new(DISPLAY, 0).uint(GLOBALS_DONE).finish());
        self.transport.send(&start, &[])?;
        let mut globals = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let event = self.next_event(deadline)?;
            if event.object == GLOBALS_DONE {
                break;
            }
            if (event.object, event.opcode) == (REGISTRY, 0) {
                let (interface, next) = event.string(1);
                globals.push((event.uint(0), interface, event.uint(next)));
            } else {
                self.handle(event)?;
            }
        }
        let mut requests = Vec::new();
        for (interface, id, version) in [
            ("wl_compositor", COMPOSITOR, 4),
            ("wl_shm", SHM, 1),
            ("xdg_wm_base", WM_BASE, 1),
        ] {
            let (name, _, offered) = globals
                .iter()
                .find(|(_, i, _)| i == interface)
                .ok_or(format!("the compositor offers no {interface}"))?;
            requests.extend(
                Request::new(REGISTRY, 0)
                    .uint(*name)
                    .string(interface)
                    .uint(version.min(*offered))
                    .uint(id)
                    .finish(),
            );
        }
        // Committed without a buffer to get the first configure.
        requests.extend(Request::new(COMPOSITOR, 0).uint(SURFACE).finish());
        requests.extend(
            Request::new(WM_BASE, 2)
                .uint(XDG_SURFACE)
                .uint(SURFACE)
                .finish(),
        );
        requests.extend(Request::new(XDG_SURFACE, 1).uint(TOPLEVEL).finish());
        requests.extend(Request::new(TOPLEVEL, 2).string(title).finish());
        requests.extend(Request::new(TOPLEVEL, 11).uint(0).finish());
        requests.extend(Request::new(SURFACE, 6).finish());
        self.transport.send(&requests, &[])?;
        let deadline = Instant::now() + TIMEOUT;
        while self.configured.is_none() {
            let event = self.next_event(deadline)?;
            self.handle(event)?;
        }
        let serial = self.configured.take().expect("checked");
        let ack = Request::new(XDG_SURFACE, 4).uint(serial).finish();
        self.transport.send(&ack, &[])?;
        Ok(globals.len())
    }

    /// Makes `file` (`pool_size` bytes) a wl_shm pool and the surface's XRGB8888 buffer in it.
    pub fn create_buffer(
        &mut self,
        file: T::File,
        pool_size: u32,
        offset: u32,
        stride: u32,
    ) -> Result<()> {
        let (width, height) = self.size;
        let mut requests = Request::new(SHM, 0).uint(POOL).uint(pool_size).finish();
        requests.extend(
            Request::new(POOL, 0)
                .uint(BUFFER)
                .uint(offset)
                .uint(width)
                .uint(height)
                .uint(stride)
                .uint(WL_SHM_FORMAT_XRGB8888)
                .finish(),
        );
        self.transport.send(&requests, &[file])
    }

    /// Attaches the buffer, damages the whole surface and commits.
    pub fn commit(&mut self) -> Result<()> {
        let (width, height) = self.size;
        let mut requests = Request::new(SURFACE, 1)
            .uint(BUFFER)
            .uint(0)
            .uint(0)
            .finish();
        requests.extend(
            Request::new(SURFACE, 2)
                .uint(0)
                .uint(0)
                .uint(width)
                .uint(height)
                .finish(),
        );
        requests.extend(Request::new(SURFACE, 6).finish());
        self.transport.send(&requests, &[])
    }
}
