// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! One client connection: the message loop, replies, server-to-client requests and the cleanup
//! after a disconnect. Command handlers live in `commands.rs`.

use std::collections::VecDeque;
use std::io;
use std::mem::size_of;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use log::debug;
use log::warn;
use zerocopy::IntoBytes;

use crate::capabilities::ClientCapabilities;
use crate::capabilities::ServerCapabilities;
use crate::device::ClientDma;
use crate::device::Device;
use crate::device::DeviceContext;
use crate::device::DeviceDescription;
use crate::error::Disposition;
use crate::error::Error;
use crate::error::Result;
use crate::guest_memory::GuestMemory;
use crate::irq::Interrupts;
use crate::message::send_message;
use crate::message::Incoming;
use crate::message::Message;
use crate::message::MessageReader;
use crate::message::Transport;
use crate::pci::BarRegisters;
use crate::poll::AdaptivePoll;
use crate::protocol::*;
use crate::region::validate;
use crate::region::InvalidDescription;
use crate::region_map::RegionMapOutcome;
use crate::region_map::RegionMapQueue;
use crate::region_map::RegionMapRequest;
use crate::sys;

/// Client commands that arrive while the server waits for a reply to its own request are kept
/// here; a client that floods them is cut off.
const MAX_BACKLOG: usize = 4096;
/// The backlog's bound in bytes: 4096 commands of the largest size would be 4 GiB.
const MAX_BACKLOG_BYTES: usize = 16 << 20;
/// How long the server waits for the client to answer a DMA_READ/DMA_WRITE.
const CLIENT_REPLY_TIMEOUT_MS: i32 = 5000;

/// A transport the connection can wait on.
pub trait Pollable {
    /// Waits until data can be read or `timeout_ms` passes; true if readable.
    fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool>;

    /// The socket to shut down when the client's memory faults under the server, so that
    /// whoever waits on the connection wakes up to a disconnect; `None` if there is none.
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

impl Pollable for UnixStream {
    fn wait_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        sys::wait_readable(self.as_fd(), timeout_ms)
    }

    fn socket(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Pollable for crate::message::MemoryTransport {
    fn wait_readable(&self, _timeout_ms: i32) -> io::Result<bool> {
        Ok(true)
    }
}

/// Whether the connection is still up after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Open,
    Closed,
}

/// The socket side of a connection: framing, replies and requests to the client.
pub(crate) struct Channel<T> {
    pub(crate) transport: T,
    pub(crate) ours: ServerCapabilities,
    /// Set by VERSION.
    pub(crate) client: Option<ClientCapabilities>,
    reader: MessageReader,
    backlog: VecDeque<Message>,
    /// Body bytes in `backlog`.
    backlog_bytes: usize,
    next_request_id: u16,
    /// Why the stream is unusable after a request to the client failed (it never answered, or
    /// flooded the server meanwhile): the connection closes after the message being handled,
    /// whatever the device made of the error.
    broken: Option<String>,
}

impl<T: Transport + Pollable> Channel<T> {
    /// The largest message the server accepts: a full data transfer plus the largest fixed part.
    pub(crate) fn max_message_size(&self) -> u64 {
        (HEADER_SIZE + 64) as u64 + u64::from(self.ours.max_data_xfer_size)
    }

    fn next_message(&mut self) -> Result<Incoming> {
        if let Some(message) = self.backlog.pop_front() {
            self.backlog_bytes -= message.body.len();
            return Ok(Incoming::Message(message));
        }
        let max = self.max_message_size();
        self.reader.read_message(&mut self.transport, max)
    }

    /// Sends the successful reply to `request`, unless the client asked for none.
    pub(crate) fn reply(
        &mut self,
        request: &Header,
        body: &[&[u8]],
        fds: &[BorrowedFd],
    ) -> Result<()> {
        if request.no_reply() {
            return Ok(());
        }
        let header = Header {
            msg_id: request.msg_id,
            command: request.command,
            msg_size: 0,
            flags: header_flags::TYPE_REPLY,
            error: 0,
        };
        send_message(&mut self.transport, header, body, fds)
    }

    /// Sends an error reply. `shape` is the body a client that ignores the ERROR flag reads
    /// (cloud-hypervisor reads fixed-size replies and would hang on a bare header).
    pub(crate) fn reply_error(&mut self, request: &Header, errno: i32, shape: &[u8]) -> Result<()> {
        let header = Header {
            msg_id: request.msg_id,
            command: request.command,
            msg_size: 0,
            flags: header_flags::TYPE_REPLY | header_flags::ERROR,
            error: errno as u32,
        };
        send_message(&mut self.transport, header, &[shape], &[])
    }

    /// Sends a request to the client and waits for its reply, queueing the client's own commands
    /// that arrive meanwhile. A failure that leaves the stream unusable marks the channel broken.
    fn request(&mut self, command: u16, body: &[&[u8]], fds: &[BorrowedFd]) -> Result<Message> {
        let result = self.exchange(command, body, fds);
        if let Err(error) = &result {
            if !matches!(error.disposition(), Disposition::Reply(_)) {
                self.broken = Some(error.to_string());
            }
        }
        result
    }

    fn exchange(&mut self, command: u16, body: &[&[u8]], fds: &[BorrowedFd]) -> Result<Message> {
        let msg_id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let header = Header {
            msg_id,
            command,
            msg_size: 0,
            flags: header_flags::TYPE_COMMAND,
            error: 0,
        };
        send_message(&mut self.transport, header, body, fds)?;
        loop {
            if self.reader.buffered() == 0
                && !self
                    .transport
                    .wait_readable(CLIENT_REPLY_TIMEOUT_MS)
                    .map_err(Error::Socket)?
            {
                return Err(Error::Socket(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not answer a request",
                )));
            }
            let max = self.max_message_size();
            let message = self
                .reader
                .read_message(&mut self.transport, max)?
                .into_message(max)
                .map_err(|(_, error)| error)?;
            let header = message.header;
            if header.message_type() == header_flags::TYPE_REPLY
                && header.msg_id == msg_id
                && header.command == command
            {
                return Ok(message);
            }
            if self.backlog.len() >= MAX_BACKLOG
                || self.backlog_bytes + message.body.len() > MAX_BACKLOG_BYTES
            {
                return Err(Error::Socket(io::Error::other(
                    "too many client commands while waiting for a reply",
                )));
            }
            self.backlog_bytes += message.body.len();
            self.backlog.push_back(message);
        }
    }

    fn max_transfer(&self) -> usize {
        let theirs = self.client.unwrap_or_default().max_data_xfer_size;
        theirs.min(self.ours.max_data_xfer_size).max(1) as usize
    }
}

impl<T: Transport + Pollable> ClientDma for Channel<T> {
    fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> Result<()> {
        let chunk_size = self.max_transfer();
        for (i, chunk) in buf.chunks_mut(chunk_size).enumerate() {
            let chunk_address = address + (i * chunk_size) as u64;
            let request = DmaAccess {
                address: chunk_address,
                count: chunk.len() as u64,
            };
            let reply = self.request(command::DMA_READ, &[request.as_bytes()], &[])?;
            if reply.header.is_error() {
                return Err(Error::DmaAccessRefused {
                    address: chunk_address,
                    errno: reply.header.error,
                });
            }
            let data = reply
                .body
                .get(size_of::<DmaAccess>()..size_of::<DmaAccess>() + chunk.len())
                .ok_or(Error::BodyTooShort {
                    command: command::DMA_READ,
                    actual: reply.body.len(),
                    needed: size_of::<DmaAccess>() + chunk.len(),
                })?;
            chunk.copy_from_slice(data);
        }
        Ok(())
    }

    fn dma_write(&mut self, address: u64, data: &[u8]) -> Result<()> {
        let chunk_size = self.max_transfer();
        for (i, chunk) in data.chunks(chunk_size).enumerate() {
            let chunk_address = address + (i * chunk_size) as u64;
            let request = DmaAccess {
                address: chunk_address,
                count: chunk.len() as u64,
            };
            let reply = self.request(command::DMA_WRITE, &[request.as_bytes(), chunk], &[])?;
            if reply.header.is_error() {
                return Err(Error::DmaAccessRefused {
                    address: chunk_address,
                    errno: reply.header.error,
                });
            }
        }
        Ok(())
    }
}

/// A connected client and the device it drives.
///
/// The owner polls [`Connection::as_raw_fd`] (or just calls [`Connection::run`]) and calls
/// [`Connection::handle_message`] when it is readable. Dropping the connection does what a
/// disconnect does: closes the client's eventfds, unmaps its memory and resets the device.
pub struct Connection<'d, T: Transport + Pollable> {
    pub(crate) channel: Channel<T>,
    pub(crate) device: &'d mut dyn Device,
    pub(crate) description: DeviceDescription,
    pub(crate) bars: BarRegisters,
    pub(crate) memory: GuestMemory,
    pub(crate) interrupts: Interrupts,
    pub(crate) region_maps: Arc<RegionMapQueue>,
    poll: AdaptivePoll,
    torn_down: bool,
}

impl<'d, T: Transport + Pollable> Connection<'d, T> {
    pub fn new(
        transport: T,
        device: &'d mut dyn Device,
        capabilities: ServerCapabilities,
    ) -> std::result::Result<Connection<'d, T>, InvalidDescription> {
        let description = validate(device.description())?;
        let memory = GuestMemory::new(capabilities.max_dma_maps as usize);
        match transport.socket().map(|socket| socket.try_clone_to_owned()) {
            Some(Ok(socket)) => memory.lock().set_fault_socket(socket),
            Some(Err(e)) => warn!("faults on the client's memory will not wake the loop: {e}"),
            None => {}
        }
        let interrupts = Interrupts::new(description.irqs);
        let region_maps =
            Arc::new(RegionMapQueue::new().map_err(|e| {
                InvalidDescription(format!("cannot create the region map queue: {e}"))
            })?);
        device.connected(memory.clone(), interrupts.clone());
        device.region_maps(region_maps.clone());
        Ok(Connection {
            channel: Channel {
                transport,
                ours: capabilities,
                client: None,
                reader: MessageReader::default(),
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                broken: None,
                next_request_id: 0,
            },
            bars: BarRegisters::new(&description.regions),
            description,
            device,
            memory,
            interrupts,
            region_maps,
            poll: AdaptivePoll::off(),
            torn_down: false,
        })
    }

    /// Spins on the client's socket for up to `max` after each message before sleeping
    /// ([`AdaptivePoll`]); zero, the default, turns polling off.
    pub fn set_polling(&mut self, max: Duration) {
        self.poll = AdaptivePoll::new(max);
    }

    /// For owners with their own event loop, before they sleep on the socket: spins while the
    /// polling budget lasts, and returns whether a message is there to handle (one already read
    /// counts). False at once when polling is off.
    pub fn spin_for_message(&mut self) -> io::Result<bool> {
        if self.has_backlog() {
            return Ok(true);
        }
        let transport = &self.channel.transport;
        self.poll.spin(|| transport.wait_readable(0))
    }

    /// For owners with their own event loop: how long they slept on the socket, after
    /// [`Connection::spin_for_message`] gave up, until the client's next message. The polling
    /// budget adapts to it.
    pub fn slept(&mut self, slept: Duration) {
        self.poll.slept(slept);
    }

    /// Readable while the device has REGION_MAP/REGION_UNMAP requests for the client: poll it
    /// with the socket and call [`Connection::handle_region_maps`].
    pub fn region_map_fd(&self) -> BorrowedFd<'_> {
        self.region_maps.wake_fd()
    }

    /// Sends the device's pending REGION_MAP/REGION_UNMAP requests, each answered before the
    /// next; the client's own commands that arrive meanwhile are handled afterwards.
    pub fn handle_region_maps(&mut self) -> Status {
        if self.torn_down {
            return Status::Closed;
        }
        while let Some((id, request)) = self.region_maps.take() {
            let outcome = match self.send_region_map(request) {
                Ok(outcome) => outcome,
                Err(e) => {
                    self.region_maps
                        .finish(id, RegionMapOutcome::Failed(libc::EIO));
                    return self.close(&format!("region map request failed: {e}"));
                }
            };
            self.region_maps.finish(id, outcome);
        }
        Status::Open
    }

    fn send_region_map(&mut self, request: RegionMapRequest) -> Result<RegionMapOutcome> {
        let (command, body, fd) = match request {
            RegionMapRequest::Map {
                region,
                offset,
                size,
                fd,
                fd_offset,
                writable,
            } => {
                let flags = REGION_MAP_READ | if writable { REGION_MAP_WRITE } else { 0 };
                let body = RegionMap {
                    argsz: size_of::<RegionMap>() as u32,
                    flags,
                    region,
                    pad: 0,
                    offset,
                    size,
                    fd_offset,
                };
                (command::REGION_MAP, body, Some(fd))
            }
            RegionMapRequest::Unmap {
                region,
                offset,
                size,
            } => {
                let body = RegionMap {
                    argsz: size_of::<RegionMap>() as u32,
                    flags: 0,
                    region,
                    pad: 0,
                    offset,
                    size,
                    fd_offset: 0,
                };
                (command::REGION_UNMAP, body, None)
            }
        };
        let fds: Vec<BorrowedFd> = fd.iter().map(|fd| fd.as_fd()).collect();
        let reply = self.channel.request(command, &[body.as_bytes()], &fds)?;
        Ok(if reply.header.is_error() {
            RegionMapOutcome::Failed(reply.header.error as i32)
        } else {
            RegionMapOutcome::Done
        })
    }

    /// The client's memory, as the device sees it.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    pub fn interrupts(&self) -> &Interrupts {
        &self.interrupts
    }

    pub fn transport(&self) -> &T {
        &self.channel.transport
    }

    /// Whether received bytes wait in the connection, so the owner must call
    /// [`Connection::handle_message`] again before it sleeps on the fd.
    pub fn has_backlog(&self) -> bool {
        !self.channel.backlog.is_empty() || self.channel.reader.buffered() > 0
    }

    /// Reads and handles one message. Errors caused by the client are answered with error
    /// replies; `Closed` means the client went away or broke the framing.
    pub fn handle_message(&mut self) -> Status {
        if self.torn_down {
            return Status::Closed;
        }
        let incoming = match self.channel.next_message() {
            Ok(incoming) => incoming,
            Err(Error::Disconnected) => return self.close("client disconnected"),
            Err(e) => return self.close(&format!("receive failed: {e}")),
        };
        let max = self.channel.max_message_size();
        let (header, result) = match incoming.into_message(max) {
            Ok(mut message) => {
                let result = self.dispatch(&mut message);
                // Shaped only on failure: the success path stays allocation-light.
                (
                    message.header,
                    result.map_err(|e| (e, self.error_shape(&message))),
                )
            }
            Err((header, error)) => (header, Err((error, Vec::new()))),
        };
        if let Some(why) = self.channel.broken.take() {
            warn!(
                "command {} (id {}): dropping the client: {why}",
                header.command, header.msg_id
            );
            return self.close(&why);
        }
        let Err((error, shape)) = result else {
            // Requests the device posted while handling the message (a reset unmapping what it
            // had mapped in the client) go out before the next message.
            if self.region_maps.has_pending() {
                return self.handle_region_maps();
            }
            return Status::Open;
        };
        let disposition = error.disposition();
        warn!(
            "command {} (id {}) failed: {error}",
            header.command, header.msg_id
        );
        let errno = match disposition {
            Disposition::Close => return self.close(&error.to_string()),
            Disposition::Reply(errno) | Disposition::ReplyAndClose(errno) => errno,
        };
        // A command that asked for no reply gets none, even for an error: the client is not
        // waiting for one.
        let is_command = header.message_type() == header_flags::TYPE_COMMAND;
        if !header.no_reply() || !is_command {
            if let Err(e) = self.channel.reply_error(&header, errno, &shape) {
                return self.close(&format!("error reply failed: {e}"));
            }
        }
        if disposition == Disposition::Reply(errno) {
            Status::Open
        } else {
            self.close(&error.to_string())
        }
    }

    /// Handles messages until the client disconnects, polling between them if set.
    pub fn run(&mut self) {
        loop {
            if self.poll.is_enabled() && !self.spin_for_message().unwrap_or(true) {
                let start = Instant::now();
                // The receive would block the same way; this one is timed for the policy. An
                // error is left for the receive to report.
                if self.channel.transport.wait_readable(-1).is_ok() {
                    self.poll.slept(start.elapsed());
                }
            }
            if self.handle_message() != Status::Open {
                break;
            }
        }
    }

    fn close(&mut self, why: &str) -> Status {
        match self.memory.first_fault() {
            Some(address) => warn!(
                "guest memory fault at {address:#x}: the client's file no longer backs its DMA \
                 map (it shrank?); dropping the client"
            ),
            None => debug!("closing connection: {why}"),
        }
        self.teardown();
        Status::Closed
    }

    /// What a disconnect does: the client's eventfds are closed, its memory unmapped (after the
    /// device has let go of it), and the device reset, ready for the next client.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.region_maps.set_enabled(false);
        self.interrupts.clear();
        self.memory.lock().hang_up();
        // One map at a time: a client that holds the most maps it may can have left the
        // process with little to allocate (address space, mappings), and this needs nothing.
        loop {
            let first = self
                .memory
                .lock()
                .regions()
                .next()
                .map(|region| (region.address, region.size));
            let Some((address, size)) = first else {
                break;
            };
            self.device.dma_unmapping(address, size);
            drop(self.memory.lock().remove_first());
        }
        self.device.disconnected();
        if let Err(e) = self.device.reset() {
            warn!("device reset after disconnect failed: {e}");
        }
        self.bars.reset();
    }

    /// Runs `f` with a device context for this connection.
    pub(crate) fn with_device<R>(
        &mut self,
        f: impl FnOnce(&mut dyn Device, &mut DeviceContext) -> R,
    ) -> R {
        let mut ctx = DeviceContext {
            memory: &self.memory,
            interrupts: &self.interrupts,
            client: &mut self.channel,
            bars: &self.bars,
        };
        f(&mut *self.device, &mut ctx)
    }
}

impl<T: Transport + Pollable + AsRawFd> AsRawFd for Connection<'_, T> {
    fn as_raw_fd(&self) -> RawFd {
        self.channel.transport.as_raw_fd()
    }
}

impl<T: Transport + Pollable> Drop for Connection<'_, T> {
    fn drop(&mut self) {
        self.teardown();
    }
}
