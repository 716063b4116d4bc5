// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Message framing over a byte stream that carries fds: header first (with its fds), then the
//! body, each read to completion across short reads.

use std::collections::VecDeque;
use std::io;
use std::io::IoSlice;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use log::warn;
use zerocopy::IntoBytes;

use crate::error::Error;
use crate::error::Result;
use crate::protocol::read_struct;
use crate::protocol::Header;
use crate::protocol::HEADER_SIZE;
use crate::sys;
use crate::sys::Received;

/// A byte stream with fd passing. The server uses a unix socket; tests and the fuzzer use
/// [`MemoryTransport`].
pub trait Transport {
    /// Receives up to `buf.len()` bytes and the fds that came with them; 0 bytes means the peer
    /// closed.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received>;
    /// Sends some prefix of `bufs`, with `fds` attached to its first byte.
    fn send(&mut self, bufs: &[IoSlice], fds: &[BorrowedFd]) -> io::Result<usize>;
}

impl Transport for UnixStream {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        sys::recv_with_fds(self.as_fd(), buf)
    }

    fn send(&mut self, bufs: &[IoSlice], fds: &[BorrowedFd]) -> io::Result<usize> {
        sys::send_with_fds(self.as_fd(), bufs, fds)
    }
}

/// An in-memory transport: reads come from a fixed input, which then reports end of stream;
/// writes collect in `output`. It never blocks, so a fuzzer can drive the whole server with it.
#[derive(Debug, Default)]
pub struct MemoryTransport {
    input: Vec<u8>,
    position: usize,
    /// Largest read returned at once, to exercise short reads.
    chunk: usize,
    /// Input ranges sent with fds (one sendmsg each), in order, with their fds.
    fds: VecDeque<(Range<usize>, Vec<OwnedFd>)>,
    pub output: Vec<u8>,
}

impl MemoryTransport {
    pub fn new(input: Vec<u8>) -> MemoryTransport {
        MemoryTransport {
            input,
            position: 0,
            chunk: usize::MAX,
            fds: VecDeque::new(),
            output: Vec::new(),
        }
    }

    /// Hands out fds as a unix socket hands out those of a sendmsg: each range of the input
    /// stands for one sendmsg that carried fds, which a read neither enters from before nor
    /// leaves, and the read that starts at it gets the fds. Ranges must not overlap.
    pub fn with_fds(mut self, fds: Vec<(Range<usize>, OwnedFd)>) -> MemoryTransport {
        for (range, fd) in fds {
            match self.fds.iter_mut().find(|(sent, _)| *sent == range) {
                Some((_, group)) => group.push(fd),
                None => self.fds.push_back((range, vec![fd])),
            }
        }
        self.fds
            .make_contiguous()
            .sort_by_key(|(range, _)| range.start);
        self
    }

    /// Returns at most `chunk` bytes per read and takes at most as many per send.
    pub fn with_short_reads(mut self, chunk: usize) -> MemoryTransport {
        self.chunk = chunk.max(1);
        self
    }
}

impl Transport for MemoryTransport {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let remaining = &self.input[self.position..];
        let mut len = remaining.len().min(buf.len()).min(self.chunk);
        // fds of bytes already passed can no longer be delivered.
        while self
            .fds
            .front()
            .is_some_and(|(range, _)| range.start < self.position)
        {
            self.fds.pop_front();
        }
        let fds = match self.fds.front() {
            Some((range, _)) if range.start == self.position && len > 0 => {
                len = len.min(range.end.saturating_sub(range.start).max(1));
                self.fds.pop_front().map(|(_, fds)| fds).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        if let Some((next, _)) = self.fds.front() {
            len = len.min(next.start - self.position);
        }
        buf[..len].copy_from_slice(&remaining[..len]);
        self.position += len;
        Ok(Received {
            len,
            fds,
            fds_truncated: false,
        })
    }

    fn send(&mut self, bufs: &[IoSlice], _fds: &[BorrowedFd]) -> io::Result<usize> {
        let mut sent = 0;
        for buf in bufs {
            let take = buf.len().min(self.chunk - sent);
            self.output.extend_from_slice(&buf[..take]);
            sent += take;
        }
        Ok(sent)
    }
}

/// One received message.
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// The kernel dropped fds beyond what the server can receive at once.
    pub fds_truncated: bool,
}

/// What came off the stream.
#[derive(Debug)]
pub enum Incoming {
    Message(Message),
    /// `msg_size` exceeded the limit; the body was read and discarded, so the stream is still in
    /// step.
    Oversized(Header),
    /// `msg_size` is smaller than the header: the size field cannot be trusted, and with it the
    /// stream.
    TooShort(Header),
    /// `msg_size` is beyond even what is read to be discarded ([`DISCARD_LIMIT`]): the stream
    /// cannot be brought back in step.
    TooLargeToDiscard(Header),
    /// There was no memory for the body; it was read and discarded, so the stream is still in
    /// step.
    NoMemory(Header),
}

impl Incoming {
    /// The message, or the header of what could not be read with the error it stands for.
    /// `max_size` is the limit `read_message` was given.
    pub fn into_message(self, max_size: u64) -> std::result::Result<Message, (Header, Error)> {
        match self {
            Incoming::Message(message) => Ok(message),
            Incoming::Oversized(header) => Err((
                header,
                Error::MessageTooLarge {
                    size: u64::from(header.msg_size),
                    max: max_size,
                },
            )),
            Incoming::TooShort(header) => Err((header, Error::MessageTooShort(header.msg_size))),
            Incoming::NoMemory(header) => {
                Err((header, Error::OutOfMemory(header.msg_size as usize)))
            }
            Incoming::TooLargeToDiscard(header) => Err((
                header,
                Error::MessageTooLargeToDiscard {
                    size: u64::from(header.msg_size),
                    max: max_size,
                    discard_limit: DISCARD_LIMIT,
                },
            )),
        }
    }
}

/// `len` zero bytes, or an error if there is no memory for them: a size a client chose must not
/// abort the process.
pub fn zeroed(len: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory(len))?;
    buf.resize(len, 0);
    Ok(buf)
}

/// A copy of `bytes`, or an error if there is no memory for it.
fn copied(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(bytes.len())
        .map_err(|_| Error::OutOfMemory(bytes.len()))?;
    buf.extend_from_slice(bytes);
    Ok(buf)
}

/// Beyond this a message is not even read to be discarded.
pub const DISCARD_LIMIT: u64 = 256 << 20;
/// Messages up to this size are read through the buffer; larger ones (bulk transfers) go
/// straight into their own allocation.
const BUFFER_SIZE: usize = 64 << 10;

fn recv(transport: &mut dyn Transport, buf: &mut [u8]) -> Result<Received> {
    match transport.recv(buf) {
        Ok(received) if received.len == 0 => Err(Error::Disconnected),
        Ok(received) => Ok(received),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Error::Disconnected),
        Err(e) => Err(Error::Socket(e)),
    }
}

/// fds received for the message that starts at a given offset of the stream.
struct PendingFds {
    offset: u64,
    fds: Vec<OwnedFd>,
    truncated: bool,
}

/// Reads messages through a buffer, so that a small message costs one receive instead of two
/// (header, then body); with pipelining clients, one receive may bring several messages.
///
/// fds need care once reads may span messages. A unix stream socket passes a sendmsg's fds
/// with its first byte, and a receive stops right after the chunk that carries fds, so the fds
/// of a receive belong to the last message that starts within the bytes it returned. They are
/// kept with that message's stream offset until the message is parsed. fds that start at no
/// message boundary (a client that sends them mid-message) are closed.
pub struct MessageReader {
    buf: Box<[u8]>,
    /// Unparsed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    pending: VecDeque<PendingFds>,
}

impl Default for MessageReader {
    fn default() -> Self {
        MessageReader {
            buf: vec![0u8; BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            base: 0,
            pending: VecDeque::new(),
        }
    }
}

impl MessageReader {
    /// Bytes received but not yet handed out as messages.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Receives until at least `len` (<= the buffer's size) unparsed bytes are buffered.
    fn fill(&mut self, transport: &mut dyn Transport, len: usize) -> Result<()> {
        while self.buffered() < len {
            if self.buf.len() - self.start < len {
                self.buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.start = 0;
            }
            let received = recv(transport, &mut self.buf[self.end..])?;
            let old_end = self.end;
            self.end += received.len;
            if !received.fds.is_empty() || received.fds_truncated {
                self.attribute(old_end, received.fds, received.fds_truncated);
            }
        }
        Ok(())
    }

    /// Files fds that came with `buf[old_end..end]` under the last message starting there.
    fn attribute(&mut self, old_end: usize, fds: Vec<OwnedFd>, truncated: bool) {
        let mut position = self.start;
        let mut last = None;
        while position < self.end {
            if position >= old_end {
                last = Some(position);
            }
            let Some(size) = self
                .buf
                .get(position + 4..position + 8)
                .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")) as usize)
            else {
                break;
            };
            if size < HEADER_SIZE || position + HEADER_SIZE > self.end {
                break;
            }
            position += size;
        }
        match last {
            Some(position) => self.pending.push_back(PendingFds {
                offset: self.base + position as u64,
                fds,
                truncated,
            }),
            None => warn!("closing {} fds sent in the middle of a message", fds.len()),
        }
    }

    /// The fds filed for the message at stream `offset`; older ones were never claimed and are
    /// closed.
    fn take_fds(&mut self, offset: u64) -> (Vec<OwnedFd>, bool) {
        while let Some(pending) = self.pending.front() {
            if pending.offset > offset {
                break;
            }
            let pending = self.pending.pop_front().expect("front exists");
            if pending.offset == offset {
                return (pending.fds, pending.truncated);
            }
        }
        (Vec::new(), false)
    }

    /// Drops the `size`-byte message at stream `offset` (buffered from its header on), fds
    /// included, to stay in step.
    fn discard(&mut self, transport: &mut dyn Transport, size: u64, offset: u64) -> Result<()> {
        let mut left = size;
        while left > 0 {
            if self.buffered() == 0 {
                self.fill(transport, 1)?;
            }
            let n = (self.buffered() as u64).min(left);
            self.start += n as usize;
            left -= n;
        }
        drop(self.take_fds(offset));
        Ok(())
    }

    /// Reads one message whose total size is at most `max_size`.
    pub fn read_message(
        &mut self,
        transport: &mut dyn Transport,
        max_size: u64,
    ) -> Result<Incoming> {
        self.fill(transport, HEADER_SIZE)?;
        let offset = self.base + self.start as u64;
        let header: Header =
            read_struct(&self.buf[self.start..self.end]).expect("a header is buffered");
        let size = u64::from(header.msg_size);
        if size < HEADER_SIZE as u64 || (size > max_size && size > DISCARD_LIMIT) {
            self.start += HEADER_SIZE;
            drop(self.take_fds(offset));
            return Ok(if size < HEADER_SIZE as u64 {
                Incoming::TooShort(header)
            } else {
                Incoming::TooLargeToDiscard(header)
            });
        }
        if size > max_size {
            self.discard(transport, size, offset)?;
            return Ok(Incoming::Oversized(header));
        }
        let size = size as usize;
        let body = if size <= self.buf.len() {
            self.fill(transport, size)?;
            let Ok(body) = copied(&self.buf[self.start + HEADER_SIZE..self.start + size]) else {
                self.discard(transport, size as u64, offset)?;
                return Ok(Incoming::NoMemory(header));
            };
            self.start += size;
            body
        } else {
            // A bulk transfer: what is buffered, then the rest straight into the body.
            let Ok(mut body) = zeroed(size - HEADER_SIZE) else {
                self.discard(transport, size as u64, offset)?;
                return Ok(Incoming::NoMemory(header));
            };
            let buffered = self.buffered() - HEADER_SIZE;
            body[..buffered].copy_from_slice(&self.buf[self.start + HEADER_SIZE..self.end]);
            self.start = self.end;
            let mut done = buffered;
            while done < body.len() {
                let received = recv(transport, &mut body[done..])?;
                done += received.len;
                if !received.fds.is_empty() {
                    warn!(
                        "closing {} fds sent in the middle of a message",
                        received.fds.len()
                    );
                }
            }
            self.base += (self.end as u64) + (size - HEADER_SIZE - buffered) as u64;
            self.start = 0;
            self.end = 0;
            body
        };
        let (fds, fds_truncated) = self.take_fds(offset);
        Ok(Incoming::Message(Message {
            header,
            body,
            fds,
            fds_truncated,
        }))
    }
}

/// Sends `header` (its `msg_size` filled in here) and `body`, with `fds` attached.
pub fn send_message(
    transport: &mut dyn Transport,
    mut header: Header,
    body: &[&[u8]],
    fds: &[BorrowedFd],
) -> Result<()> {
    let total = body
        .iter()
        .try_fold(HEADER_SIZE, |sum, part| sum.checked_add(part.len()))
        .and_then(|total| u32::try_from(total).ok())
        .ok_or(Error::MessageTooLarge {
            size: u64::MAX,
            max: u64::from(u32::MAX),
        })?;
    header.msg_size = total;
    let header_bytes = header.as_bytes();
    let mut slices = Vec::with_capacity(body.len() + 1);
    slices.push(IoSlice::new(header_bytes));
    slices.extend(body.iter().map(|part| IoSlice::new(part)));
    let sent = transport.send(&slices, fds).map_err(Error::Socket)?;
    if sent == total as usize {
        return Ok(());
    }
    // A short send: the fds went with the first byte, the rest follows without them.
    let mut rest = &mut slices[..];
    IoSlice::advance_slices(&mut rest, sent);
    while !rest.is_empty() {
        let n = transport.send(rest, &[]).map_err(Error::Socket)?;
        if n == 0 {
            return Err(Error::Disconnected);
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command;

    fn encode(header: Header, body: &[u8]) -> Vec<u8> {
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn memory_transport_hands_out_fds_with_their_byte() {
        let mut transport = MemoryTransport::new((0u8..12).collect()).with_fds(vec![
            (4..6, sys::eventfd(false).unwrap()),
            (4..6, sys::eventfd(false).unwrap()),
            (7..9, sys::eventfd(false).unwrap()),
        ]);
        let mut buf = [0u8; 16];
        let reads: Vec<(usize, usize)> = std::iter::from_fn(|| {
            let received = transport.recv(&mut buf).unwrap();
            (received.len > 0).then_some((received.len, received.fds.len()))
        })
        .collect();
        assert_eq!(reads, vec![(4, 0), (2, 2), (1, 0), (2, 1), (3, 0)]);
    }

    #[test]
    fn short_sends_are_completed() {
        let mut transport = MemoryTransport::new(Vec::new()).with_short_reads(5);
        let header = Header {
            msg_id: 7,
            command: command::REGION_READ,
            msg_size: 0,
            flags: 0,
            error: 0,
        };
        send_message(&mut transport, header, &[b"abc", b"", b"defghijkl"], &[]).unwrap();
        assert_eq!(transport.output.len(), HEADER_SIZE + 12);
        assert_eq!(&transport.output[HEADER_SIZE..], b"abcdefghijkl");
    }

    #[test]
    fn allocations_a_client_sizes_fail_without_aborting() {
        assert!(matches!(
            zeroed(usize::MAX / 2),
            Err(Error::OutOfMemory(size)) if size == usize::MAX / 2
        ));
        assert_eq!(zeroed(3).unwrap(), vec![0, 0, 0]);
    }

    #[test]
    fn short_reads_are_reassembled() {
        let header = Header {
            msg_id: 7,
            command: command::REGION_READ,
            msg_size: 32,
            ..Default::default()
        };
        let mut transport = MemoryTransport::new(encode(header, &[5u8; 16])).with_short_reads(3);
        let mut reader = MessageReader::default();
        match reader.read_message(&mut transport, 1024).unwrap() {
            Incoming::Message(message) => {
                assert_eq!(message.header.msg_id, 7);
                assert_eq!(message.body, vec![5u8; 16]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            reader.read_message(&mut transport, 1024),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn sizes_out_of_bounds() {
        let small = Header {
            msg_size: 8,
            ..Default::default()
        };
        let mut transport = MemoryTransport::new(encode(small, &[]));
        let incoming = MessageReader::default()
            .read_message(&mut transport, 1024)
            .unwrap();
        assert!(matches!(incoming, Incoming::TooShort(_)), "{incoming:?}");
        assert!(matches!(
            incoming.into_message(1024),
            Err((_, Error::MessageTooShort(8)))
        ));

        // Too large even to be read and discarded: the size is reported as too large, not as
        // too short, and the stream is given up.
        let huge = Header {
            msg_size: 0x7fff_ffff,
            ..Default::default()
        };
        let mut transport = MemoryTransport::new(encode(huge, &[]));
        let incoming = MessageReader::default()
            .read_message(&mut transport, 1024)
            .unwrap();
        assert!(
            matches!(incoming, Incoming::TooLargeToDiscard(_)),
            "{incoming:?}"
        );
        let (_, error) = incoming.into_message(1024).unwrap_err();
        assert!(
            matches!(
                error,
                Error::MessageTooLargeToDiscard {
                    size: 0x7fff_ffff,
                    max: 1024,
                    discard_limit: DISCARD_LIMIT,
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "message of 2147483647 bytes is too large: it exceeds the maximum of 1024 and is not \
             even read to be discarded beyond 268435456, so the stream is lost"
        );
        assert_eq!(
            error.disposition(),
            crate::error::Disposition::ReplyAndClose(libc::E2BIG)
        );

        let big = Header {
            msg_size: 16 + 2000,
            ..Default::default()
        };
        let next = Header {
            msg_id: 9,
            msg_size: 16,
            ..Default::default()
        };
        let mut input = encode(big, &[0u8; 2000]);
        input.extend(encode(next, &[]));
        let mut transport = MemoryTransport::new(input);
        let mut reader = MessageReader::default();
        let incoming = reader.read_message(&mut transport, 1024).unwrap();
        assert!(matches!(incoming, Incoming::Oversized(_)), "{incoming:?}");
        assert!(matches!(
            incoming.into_message(1024),
            Err((
                _,
                Error::MessageTooLarge {
                    size: 2016,
                    max: 1024
                }
            ))
        ));
        match reader.read_message(&mut transport, 1024).unwrap() {
            Incoming::Message(message) => assert_eq!(message.header.msg_id, 9),
            other => panic!("stream lost step: {other:?}"),
        }
    }

    #[test]
    fn disconnect_mid_body() {
        let header = Header {
            msg_size: 64,
            ..Default::default()
        };
        let mut transport = MemoryTransport::new(encode(header, &[1u8; 10]));
        assert!(matches!(
            MessageReader::default().read_message(&mut transport, 1024),
            Err(Error::Disconnected)
        ));
    }

    #[test]
    fn bulk_messages_bypass_the_buffer() {
        let size = BUFFER_SIZE * 3 + 5;
        let header = Header {
            msg_id: 1,
            msg_size: (HEADER_SIZE + size) as u32,
            ..Default::default()
        };
        let body: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut input = encode(header, &body);
        input.extend(encode(
            Header {
                msg_id: 2,
                msg_size: 16,
                ..Default::default()
            },
            &[],
        ));
        let mut transport = MemoryTransport::new(input).with_short_reads(5000);
        let mut reader = MessageReader::default();
        match reader.read_message(&mut transport, 1 << 20).unwrap() {
            Incoming::Message(message) => assert_eq!(message.body, body),
            other => panic!("unexpected {other:?}"),
        }
        match reader.read_message(&mut transport, 1 << 20).unwrap() {
            Incoming::Message(message) => assert_eq!(message.header.msg_id, 2),
            other => panic!("stream lost step: {other:?}"),
        }
    }

    /// Two messages in the socket at once, the second with an fd: one receive brings both, and
    /// the fd goes to the second.
    #[test]
    fn fds_go_to_the_message_they_came_with() {
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;

        let (mut client, mut server) = UnixStream::pair().unwrap();
        let first = encode(
            Header {
                msg_id: 1,
                msg_size: 20,
                ..Default::default()
            },
            &[0xaa; 4],
        );
        let second = encode(
            Header {
                msg_id: 2,
                msg_size: 24,
                ..Default::default()
            },
            &[0xbb; 8],
        );
        let third = encode(
            Header {
                msg_id: 3,
                msg_size: 16,
                ..Default::default()
            },
            &[],
        );
        let event = crate::sys::eventfd(true).unwrap();
        client.send(&[IoSlice::new(&first)], &[]).unwrap();
        client
            .send(&[IoSlice::new(&second)], &[event.as_fd()])
            .unwrap();
        client.send(&[IoSlice::new(&third)], &[]).unwrap();
        let mut reader = MessageReader::default();
        let mut fds_by_id = Vec::new();
        for _ in 0..3 {
            match reader.read_message(&mut server, 1024).unwrap() {
                Incoming::Message(message) => {
                    fds_by_id.push((message.header.msg_id, message.fds.len()))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(fds_by_id, vec![(1, 0), (2, 1), (3, 0)]);
    }
}
