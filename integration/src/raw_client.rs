// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A byte-level vfio-user client for tests: it sends whatever it is given, well-formed or not,
//! and reads replies with a timeout so that a server that fails to answer fails the test instead
//! of hanging it.

use std::io;
use std::io::IoSlice;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vfio_user_server::protocol::command;
use vfio_user_server::protocol::read_struct;
use vfio_user_server::protocol::DeviceInfo;
use vfio_user_server::protocol::Header;
use vfio_user_server::protocol::Version;
use vfio_user_server::protocol::HEADER_SIZE;
use vfio_user_server::sys;
use zerocopy::IntoBytes;

/// A reply (or a server-to-client request) as received.
#[derive(Debug)]
pub struct Received {
    pub header: Header,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

pub struct RawClient {
    pub stream: UnixStream,
    next_id: u16,
}

pub const QEMU_CAPABILITIES: &str = r#"{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576,"pgsizes":4096,"max_dma_maps":65535,"write_multiple":true}}"#;

impl RawClient {
    pub fn connect(path: &Path) -> io::Result<RawClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(RawClient { stream, next_id: 1 })
    }

    /// Wraps a connected stream (e.g. a clone used by a second thread).
    pub fn from_stream(stream: UnixStream) -> RawClient {
        RawClient {
            stream,
            next_id: 0x8000,
        }
    }

    /// Sends bytes as they are, with fds on the first byte.
    pub fn send_raw(&mut self, bytes: &[u8], fds: &[BorrowedFd]) -> io::Result<()> {
        let mut done = sys::send_with_fds(self.stream.as_fd(), &[IoSlice::new(bytes)], fds)?;
        while done < bytes.len() {
            done += sys::send_with_fds(self.stream.as_fd(), &[IoSlice::new(&bytes[done..])], &[])?;
        }
        Ok(())
    }

    /// Sends a command with a correct header; returns its message id.
    pub fn send(
        &mut self,
        command: u16,
        flags: u32,
        body: &[u8],
        fds: &[BorrowedFd],
    ) -> io::Result<u16> {
        let msg_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let header = Header {
            msg_id,
            command,
            msg_size: (HEADER_SIZE + body.len()) as u32,
            flags,
            error: 0,
        };
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes, fds)?;
        Ok(msg_id)
    }

    fn read_exact(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            if !sys::wait_readable(self.stream.as_fd(), 5000)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply"));
            }
            let got = sys::recv_with_fds(self.stream.as_fd(), &mut buf[done..])?;
            fds.extend(got.fds);
            if got.len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ));
            }
            done += got.len;
        }
        Ok(())
    }

    /// Receives one message.
    pub fn recv(&mut self) -> io::Result<Received> {
        let mut header_bytes = [0u8; HEADER_SIZE];
        let mut fds = Vec::new();
        self.read_exact(&mut header_bytes, &mut fds)?;
        let header: Header = read_struct(&header_bytes).unwrap();
        let body_len = (header.msg_size as usize)
            .checked_sub(HEADER_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short msg_size"))?;
        let mut body = vec![0u8; body_len];
        self.read_exact(&mut body, &mut fds)?;
        Ok(Received { header, body, fds })
    }

    /// Sends a command and waits for its reply.
    pub fn call(&mut self, command: u16, body: &[u8], fds: &[BorrowedFd]) -> io::Result<Received> {
        let msg_id = self.send(command, 0, body, fds)?;
        let reply = self.recv()?;
        if reply.header.msg_id != msg_id || reply.header.command != command {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("reply {:?} does not answer id {msg_id}", reply.header),
            ));
        }
        Ok(reply)
    }

    /// VERSION 0.0 with QEMU's capabilities.
    pub fn negotiate(&mut self) -> io::Result<Received> {
        let mut body = Version { major: 0, minor: 0 }.as_bytes().to_vec();
        body.extend_from_slice(QEMU_CAPABILITIES.as_bytes());
        body.push(0);
        self.call(command::VERSION, &body, &[])
    }

    /// DEVICE_GET_INFO with the 16-byte argsz of the version-0.0 structure.
    pub fn device_info(&mut self) -> io::Result<Received> {
        let info = DeviceInfo {
            argsz: 16,
            ..Default::default()
        };
        self.call(command::DEVICE_GET_INFO, info.as_bytes(), &[])
    }

    /// Whether the server closed the connection (reads end of stream within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
            || matches!(self.stream.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
    }
}
