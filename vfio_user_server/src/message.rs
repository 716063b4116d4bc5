// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Message framing over a byte stream that carries fds: header first (with its fds), then the
//! body, each read to completion across short reads.

use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

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
    pub output: Vec<u8>,
}

impl MemoryTransport {
    pub fn new(input: Vec<u8>) -> MemoryTransport {
        MemoryTransport {
            input,
            position: 0,
            chunk: usize::MAX,
            output: Vec::new(),
        }
    }

    /// Returns at most `chunk` bytes per read.
    pub fn with_short_reads(mut self, chunk: usize) -> MemoryTransport {
        self.chunk = chunk.max(1);
        self
    }
}

impl Transport for MemoryTransport {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let remaining = &self.input[self.position..];
        let len = remaining.len().min(buf.len()).min(self.chunk);
        buf[..len].copy_from_slice(&remaining[..len]);
        self.position += len;
        Ok(Received {
            len,
            fds: Vec::new(),
            fds_truncated: false,
        })
    }

    fn send(&mut self, bufs: &[IoSlice], _fds: &[BorrowedFd]) -> io::Result<usize> {
        let mut sent = 0;
        for buf in bufs {
            self.output.extend_from_slice(buf);
            sent += buf.len();
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
    /// `msg_size` was absurd (smaller than the header, or too large to discard); the stream
    /// cannot be trusted any more.
    Unframed(Header),
}

/// Beyond this a message is not even read to be discarded.
const DISCARD_LIMIT: u64 = 256 << 20;

/// Reads exactly `buf.len()` bytes, collecting fds. `Disconnected` if the stream ends first.
fn read_exact(
    transport: &mut dyn Transport,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    fds_truncated: &mut bool,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let received = match transport.recv(&mut buf[done..]) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Error::Disconnected)
            }
            Err(e) => return Err(Error::Socket(e)),
        };
        fds.extend(received.fds);
        *fds_truncated |= received.fds_truncated;
        if received.len == 0 {
            return Err(Error::Disconnected);
        }
        done += received.len;
    }
    Ok(())
}

/// Reads one message whose total size is at most `max_size`.
pub fn read_message(transport: &mut dyn Transport, max_size: u64) -> Result<Incoming> {
    let mut header_bytes = [0u8; HEADER_SIZE];
    let mut fds = Vec::new();
    let mut fds_truncated = false;
    read_exact(transport, &mut header_bytes, &mut fds, &mut fds_truncated)?;
    let header: Header = read_struct(&header_bytes).expect("buffer is header-sized");
    let size = u64::from(header.msg_size);
    if size < HEADER_SIZE as u64 {
        return Ok(Incoming::Unframed(header));
    }
    let body_len = size - HEADER_SIZE as u64;
    if size > max_size {
        if size > DISCARD_LIMIT {
            return Ok(Incoming::Unframed(header));
        }
        // Read the body in small pieces and drop it, fds included, to stay in step.
        let mut left = body_len;
        let mut scratch = [0u8; 4096];
        while left > 0 {
            let n = left.min(scratch.len() as u64) as usize;
            read_exact(transport, &mut scratch[..n], &mut fds, &mut fds_truncated)?;
            left -= n as u64;
        }
        return Ok(Incoming::Oversized(header));
    }
    let mut body = vec![0u8; body_len as usize];
    read_exact(transport, &mut body, &mut fds, &mut fds_truncated)?;
    Ok(Incoming::Message(Message {
        header,
        body,
        fds,
        fds_truncated,
    }))
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
    let mut rest: Vec<u8> = Vec::with_capacity(total as usize);
    rest.extend_from_slice(header_bytes);
    for part in body {
        rest.extend_from_slice(part);
    }
    let mut done = sent;
    while done < rest.len() {
        let n = transport
            .send(&[IoSlice::new(&rest[done..])], &[])
            .map_err(Error::Socket)?;
        if n == 0 {
            return Err(Error::Disconnected);
        }
        done += n;
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
    fn short_reads_are_reassembled() {
        let header = Header {
            msg_id: 7,
            command: command::REGION_READ,
            msg_size: 32,
            ..Default::default()
        };
        let mut transport = MemoryTransport::new(encode(header, &[5u8; 16])).with_short_reads(3);
        match read_message(&mut transport, 1024).unwrap() {
            Incoming::Message(message) => {
                assert_eq!(message.header.msg_id, 7);
                assert_eq!(message.body, vec![5u8; 16]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            read_message(&mut transport, 1024),
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
        assert!(matches!(
            read_message(&mut transport, 1024).unwrap(),
            Incoming::Unframed(_)
        ));

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
        assert!(matches!(
            read_message(&mut transport, 1024).unwrap(),
            Incoming::Oversized(_)
        ));
        match read_message(&mut transport, 1024).unwrap() {
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
            read_message(&mut transport, 1024),
            Err(Error::Disconnected)
        ));
    }
}
