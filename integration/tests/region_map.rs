// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Host-visible memory in a region, end to end over a socket with a client of ours: a region
//! backed by `ShadowMemory`, mapped whole by the client, and files placed in it by the device
//! from another thread, as virtio-gpu places blobs:
//! - a client that proposes the `x-region-map` extension gets REGION_MAP with the file and maps
//!   it over its own mapping of the region (MAP_FIXED): its writes land in the file, no copy;
//!   REGION_UNMAP puts the region's file back;
//! - a client that does not propose it gets no message, and the shadow copies instead.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;

use integration::raw_client::RawClient;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;
use vfio_user_server::BarType;
use vfio_user_server::Connection;
use vfio_user_server::Device;
use vfio_user_server::DeviceContext;
use vfio_user_server::DeviceDescription;
use vfio_user_server::RegionDescription;
use vfio_user_server::RegionMapQueue;
use vfio_user_server::ServerCapabilities;
use vfio_user_server::ShadowMemory;
use vfio_user_server::Status;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

const REGION: u32 = 2;
const REGION_SIZE: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// A device whose BAR2 is host-visible memory, as virtio-gpu's.
struct HostVisibleDevice {
    shadow: Arc<ShadowMemory>,
}

impl Device for HostVisibleDevice {
    fn description(&self) -> DeviceDescription {
        let mut regions = vec![RegionDescription::default(); 9];
        regions[REGION as usize] = RegionDescription {
            mmap: Some(self.shadow.region_mmap("bar2", REGION_SIZE).unwrap()),
            ..RegionDescription::bar(REGION_SIZE, BarType::Memory64 { prefetchable: true })
        };
        regions[PCI_CONFIG_REGION_INDEX as usize] = RegionDescription::plain(256);
        DeviceDescription {
            regions,
            ..Default::default()
        }
    }

    fn region_maps(&mut self, queue: Arc<RegionMapQueue>) {
        self.shadow.set_region_maps(Some(queue), REGION);
    }

    fn region_read(
        &mut self,
        _: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> io::Result<()> {
        match index {
            REGION => self.shadow.read(offset, data).map_err(io::Error::other),
            _ => {
                data.fill(0);
                Ok(())
            }
        }
    }

    fn region_write(
        &mut self,
        _: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        match index {
            REGION => self.shadow.write(offset, data).map_err(io::Error::other),
            _ => Ok(()),
        }
    }

    fn reset(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Serves one client, polling the socket and the device's REGION_MAP queue as an owner must.
fn serve(stream: UnixStream, shadow: Arc<ShadowMemory>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut device = HostVisibleDevice { shadow };
        let mut connection =
            Connection::new(stream, &mut device, ServerCapabilities::default()).unwrap();
        loop {
            let client = borrow_socket(connection.transport().as_raw_fd());
            let ready = sys::wait_any_readable(&[client, connection.region_map_fd()], -1).unwrap();
            let status = if ready[1] {
                connection.handle_region_maps()
            } else {
                connection.handle_message()
            };
            if status == Status::Closed {
                return;
            }
        }
    })
}

fn borrow_socket(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: the connection owns the socket for as long as the serving loop runs, and the
    // borrow is used only within one iteration of it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// The client's mapping of the region.
struct ClientRegion {
    base: *mut u8,
    fd: OwnedFd,
}

impl ClientRegion {
    fn open(client: &mut RawClient) -> ClientRegion {
        let request = RegionInfo {
            argsz: 32,
            index: REGION,
            ..Default::default()
        };
        let mut reply = client
            .call(command::DEVICE_GET_REGION_INFO, request.as_bytes(), &[])
            .unwrap();
        let (info, _) = RegionInfo::read_from_prefix(&reply.body).unwrap();
        assert_ne!(info.flags & REGION_INFO_FLAG_MMAP, 0);
        let fd = reply.fds.pop().expect("the region's fd");
        // SAFETY: a new shared mapping chosen by the kernel; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                REGION_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                info.offset as libc::off_t,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        ClientRegion {
            base: base.cast(),
            fd,
        }
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        // SAFETY: the tests stay inside the region's mapping.
        unsafe { sys::copy_guest(self.base.add(offset as usize), out.as_mut_ptr(), len) };
        out
    }

    fn write(&self, offset: u64, data: &[u8]) {
        // SAFETY: the tests stay inside the region's mapping.
        unsafe { sys::copy_guest(data.as_ptr(), self.base.add(offset as usize), data.len()) };
    }

    /// What a client does with REGION_MAP and REGION_UNMAP: replace the pages in place.
    fn apply(&self, request: &vfio_user_server::protocol::RegionMap, fd: Option<BorrowedFd>) {
        assert_eq!(request.region, REGION);
        assert!(request.offset + request.size <= REGION_SIZE);
        let (fd, offset) = match fd {
            Some(fd) => (fd.as_raw_fd(), request.fd_offset),
            None => (self.fd.as_raw_fd(), request.offset),
        };
        let mut prot = libc::PROT_READ;
        if fd == self.fd.as_raw_fd() || request.flags & REGION_MAP_WRITE != 0 {
            prot |= libc::PROT_WRITE;
        }
        // SAFETY: the target range lies inside this client's own mapping of the region
        // (checked above), which nothing else in the test holds references into.
        let at = unsafe {
            libc::mmap(
                self.base.add(request.offset as usize).cast(),
                request.size as usize,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                offset as libc::off_t,
            )
        };
        assert_ne!(at, libc::MAP_FAILED, "{}", io::Error::last_os_error());
    }
}

fn version(client: &mut RawClient, capabilities: &str) -> String {
    let mut body = Version { major: 0, minor: 0 }.as_bytes().to_vec();
    body.extend_from_slice(capabilities.as_bytes());
    body.push(0);
    let reply = client.call(command::VERSION, &body, &[]).unwrap();
    String::from_utf8_lossy(&reply.body[4..])
        .trim_end_matches('\0')
        .to_string()
}

/// A client connected to a served HostVisibleDevice, after VERSION with `capabilities`; returns
/// the client, VERSION's reply JSON, the device's shadow and the serving thread.
fn connect(capabilities: &str) -> (RawClient, String, Arc<ShadowMemory>, thread::JoinHandle<()>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let shadow = ShadowMemory::new();
    let server = serve(theirs, shadow.clone());
    let mut client = RawClient::from_stream(ours);
    let reply = version(&mut client, capabilities);
    (client, reply, shadow, server)
}

/// Places `file` at `offset` from a thread of its own, as a device worker does; the call
/// returns once the client answered any REGION_MAP it causes.
fn place_in_background(
    shadow: &Arc<ShadowMemory>,
    file: &File,
    offset: u64,
    len: u64,
) -> thread::JoinHandle<Result<(), vfio_user_server::shadow::ShadowError>> {
    let (shadow, file) = (shadow.clone(), file.try_clone().unwrap());
    thread::spawn(move || shadow.map(offset, file.as_fd(), 0, len, true))
}

fn blob(bytes: &[u8]) -> File {
    let file = sys::memfd(c"blob", 2 * PAGE).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    file
}

#[test]
fn a_client_that_opts_in_maps_placed_files_itself() {
    let (mut client, reply, shadow, server) = connect(r#"{"capabilities":{"x-region-map":true}}"#);
    assert_eq!(reply, r#"{"capabilities":{"x-region-map":true}}"#);
    let region = ClientRegion::open(&mut client);

    // The device places a file from its own thread; the call returns once the client mapped it.
    let file = blob(b"blob contents");
    let placing = place_in_background(&shadow, &file, 0x10000, 2 * PAGE);
    let mut request = client.recv().unwrap();
    assert_eq!(request.header.command, command::REGION_MAP);
    let (map, _) = vfio_user_server::protocol::RegionMap::read_from_prefix(&request.body).unwrap();
    assert_eq!(
        (map.region, map.offset, map.size, map.fd_offset),
        (REGION, 0x10000, 2 * PAGE, 0)
    );
    assert_eq!(map.flags, REGION_MAP_READ | REGION_MAP_WRITE);
    let fd = request.fds.pop().expect("the file");
    region.apply(&map, Some(fd.as_fd()));
    reply_to(&mut client, &request.header);
    let placed = placing.join().unwrap();
    assert!(placed.is_ok(), "{placed:?}");

    // Shared, not copied: the guest's writes are in the file at once, and nothing is copied
    // out for a peer.
    assert_eq!(region.read(0x10000, 13), b"blob contents");
    region.write(0x10000, b"GUEST");
    let mut seen = [0u8; 13];
    file.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"GUESTcontents");
    shadow.note_exported(file.as_fd());
    assert_eq!(shadow.copy_out_exported(), 0);
    // Trapped accesses reach the same bytes.
    let mut trapped = [0u8; 5];
    shadow.read(0x10000, &mut trapped).unwrap();
    assert_eq!(&trapped, b"GUEST");

    // Removal: the region's own file comes back over the range, zeros there.
    shadow.unmap(0x10000).unwrap();
    let request = client.recv().unwrap();
    assert_eq!(request.header.command, command::REGION_UNMAP);
    assert!(request.fds.is_empty());
    let (unmap, _) =
        vfio_user_server::protocol::RegionMap::read_from_prefix(&request.body).unwrap();
    assert_eq!((unmap.offset, unmap.size), (0x10000, 2 * PAGE));
    region.apply(&unmap, None);
    reply_to(&mut client, &request.header);
    assert_eq!(region.read(0x10000, 13), vec![0u8; 13]);
    file.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"GUESTcontents", "the file keeps the guest's bytes");

    drop(client);
    server.join().unwrap();
}

/// A reply carries the request's id.
fn reply_to(client: &mut RawClient, request: &Header) {
    let header = Header {
        msg_id: request.msg_id,
        command: request.command,
        msg_size: HEADER_SIZE as u32,
        flags: header_flags::TYPE_REPLY,
        error: 0,
    };
    client.send_raw(header.as_bytes(), &[]).unwrap();
}

#[test]
fn a_client_that_does_not_opt_in_gets_copies_and_no_message() {
    let (mut client, reply, shadow, server) = connect(r#"{"capabilities":{"max_msg_fds":8}}"#);
    assert!(!reply.contains("x-region-map"));
    let region = ClientRegion::open(&mut client);

    let file = blob(b"blob contents");
    shadow
        .map(0x10000, file.as_fd(), 0, 2 * PAGE, true)
        .unwrap();
    assert!(
        !sys::wait_readable(client.stream.as_fd(), 200).unwrap(),
        "no request"
    );
    assert_eq!(region.read(0x10000, 13), b"blob contents");
    region.write(0x10000, b"GUEST");
    shadow.note_exported(file.as_fd());
    assert_eq!(shadow.copy_out_exported(), 2 * PAGE);
    let mut seen = [0u8; 13];
    file.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"GUESTcontents");
    shadow.unmap(0x10000).unwrap();
    assert!(
        !sys::wait_readable(client.stream.as_fd(), 200).unwrap(),
        "no request"
    );

    drop(client);
    server.join().unwrap();
}

/// A client that refuses REGION_MAP (an error reply) still sees the file: the shadow copies it.
#[test]
fn a_refused_region_map_falls_back_to_copying() {
    let (mut client, _, shadow, server) = connect(r#"{"capabilities":{"x-region-map":true}}"#);
    let region = ClientRegion::open(&mut client);

    let file = blob(b"blob contents");
    let placing = place_in_background(&shadow, &file, 0x20000, PAGE);
    let request = client.recv().unwrap();
    assert_eq!(request.header.command, command::REGION_MAP);
    let refusal = Header {
        msg_id: request.header.msg_id,
        command: request.header.command,
        msg_size: HEADER_SIZE as u32,
        flags: header_flags::TYPE_REPLY | header_flags::ERROR,
        error: libc::ENOMEM as u32,
    };
    client.send_raw(refusal.as_bytes(), &[]).unwrap();
    placing.join().unwrap().unwrap();
    assert_eq!(region.read(0x20000, 13), b"blob contents");
    region.write(0x20000, b"GUEST");
    shadow.unmap(0x20000).unwrap();
    // Not mapped by the client: no REGION_UNMAP, and the guest's bytes were copied back.
    assert!(!sys::wait_readable(client.stream.as_fd(), 200).unwrap());
    let mut seen = [0u8; 13];
    file.read_exact_at(&mut seen, 0).unwrap();
    assert_eq!(&seen, b"GUESTcontents");

    drop(client);
    server.join().unwrap();
}

/// A client that goes away instead of answering: the connection closes, and the placement
/// still succeeds by copying.
#[test]
fn a_client_that_vanishes_mid_request_leaves_a_copied_placement() {
    let (mut client, _, shadow, server) = connect(r#"{"capabilities":{"x-region-map":true}}"#);
    let file = blob(b"blob contents");
    let placing = place_in_background(&shadow, &file, 0x20000, PAGE);
    let request = client.recv().unwrap();
    assert_eq!(request.header.command, command::REGION_MAP);
    drop(client);
    placing.join().unwrap().unwrap();
    server.join().unwrap();
    let mut seen = [0u8; 13];
    shadow.read(0x20000, &mut seen).unwrap();
    assert_eq!(&seen, b"blob contents");
}
