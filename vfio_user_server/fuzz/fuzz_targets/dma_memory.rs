// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Feeds the input as a client's byte stream to a [`Connection`], with real memfds riding on
//! its DMA_MAPs, to a device that reads and writes the mapped memory and truncates the memfds
//! under the maps, as a hostile client would.
//!
//! Input layout: 8 bytes describe four memfds, two bytes each: the size in pages (0-255) and
//! seals (bit 0: F_SEAL_SHRINK, bit 1: F_SEAL_GROW, bit 2: F_SEAL_WRITE); the rest is the
//! stream. Every DMA_MAP in the stream carries memfd `msg_id % 5` (4: no fd), sent with the
//! message as a client's sendmsg would.
//!
//! The device's BAR0 (0x1000 bytes): 0x00 address (u64), 0x08 length (u32, at most 64 KiB);
//! a byte written to 0x10 runs an access of that range (0: read, 1: write, 2: a slice's
//! `read_at`, 3: a slice's `write_at`); a u32 written to 0x18 truncates memfd `v & 3` to
//! `(v >> 8) & 0xff` pages.

#![no_main]

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use vfio_user_server::protocol::read_struct;
use vfio_user_server::protocol::Header;
use vfio_user_server::protocol::PCI_CONFIG_REGION_INDEX;
use vfio_user_server::protocol::HEADER_SIZE;
use vfio_user_server::BarType;
use vfio_user_server::Connection;
use vfio_user_server::Device;
use vfio_user_server::DeviceContext;
use vfio_user_server::DeviceDescription;
use vfio_user_server::GuestMemory;
use vfio_user_server::Interrupts;
use vfio_user_server::IrqCounts;
use vfio_user_server::MemoryTransport;
use vfio_user_server::RegionDescription;
use vfio_user_server::ServerCapabilities;
use vfio_user_server::Status;

const PAGE: u64 = 4096;
const FILES: usize = 4;
const REG_ADDRESS: usize = 0x00;
const REG_LEN: usize = 0x08;
const REG_GO: u64 = 0x10;
const REG_TRUNCATE: u64 = 0x18;
const MAX_ACCESS: usize = 64 << 10;

struct MemoryDevice {
    bar0: [u8; 0x1000],
    files: Vec<File>,
    memory: GuestMemory,
}

impl MemoryDevice {
    fn register(&self, offset: usize, len: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&self.bar0[offset..offset + len]);
        u64::from_le_bytes(bytes)
    }

    /// Runs access `op` on the programmed range. Errors (outside the maps, a fault) are the
    /// expected outcome of most inputs; the fuzzer looks for crashes.
    fn access(&self, op: u8) {
        let address = self.register(REG_ADDRESS, 8);
        let len = (self.register(REG_LEN, 4) as usize).min(MAX_ACCESS);
        let mut buf = vec![0x5a; len];
        let _ = match op % 4 {
            0 => self.memory.read(address, &mut buf),
            1 => self.memory.write(address, &buf),
            2 => self
                .memory
                .with_slice(address, len, |slice| slice.read_at(0, &mut buf))
                .and_then(|result| result),
            _ => self
                .memory
                .with_slice(address, len, |slice| slice.write_at(0, &buf))
                .and_then(|result| result),
        };
    }
}

impl Device for MemoryDevice {
    fn description(&self) -> DeviceDescription {
        let mut regions = vec![RegionDescription::default(); 9];
        regions[0] = RegionDescription::bar(
            0x1000,
            BarType::Memory32 {
                prefetchable: false,
            },
        );
        regions[PCI_CONFIG_REGION_INDEX as usize] = RegionDescription::plain(256);
        DeviceDescription {
            regions,
            irqs: IrqCounts::default(),
            resettable: true,
            emulate_bars: true,
        }
    }

    fn connected(&mut self, memory: GuestMemory, _interrupts: Interrupts) {
        self.memory = memory;
    }

    fn region_read(
        &mut self,
        _ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &mut [u8],
    ) -> io::Result<()> {
        match index {
            0 => data.copy_from_slice(&self.bar0[offset as usize..offset as usize + data.len()]),
            _ => data.fill(0),
        }
        Ok(())
    }

    fn region_write(
        &mut self,
        _ctx: &mut DeviceContext,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        if index != 0 {
            return Ok(());
        }
        self.bar0[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        match offset {
            REG_GO => self.access(data.first().copied().unwrap_or(0)),
            REG_TRUNCATE => {
                let value = self.register(REG_TRUNCATE as usize, 4);
                let file = &self.files[(value & 3) as usize];
                // A sealed file refuses: that is what seals are for.
                let _ = file.set_len(((value >> 8) & 0xff) * PAGE);
            }
            _ => {}
        }
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        self.bar0.fill(0);
        Ok(())
    }
}

/// A memfd of `pages` pages with `seals` (see the module comment) applied.
fn memfd(pages: u8, seals: u8) -> File {
    // SAFETY: a valid NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"fuzz-ram".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.set_len(u64::from(pages) * PAGE).expect("set_len");
    let mut flags = 0;
    if seals & 1 != 0 {
        flags |= libc::F_SEAL_SHRINK;
    }
    if seals & 2 != 0 {
        flags |= libc::F_SEAL_GROW;
    }
    if seals & 4 != 0 {
        flags |= libc::F_SEAL_WRITE;
    }
    // SAFETY: no pointers; a refusal leaves the file unsealed, which is fine for fuzzing.
    unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, flags) };
    file
}

/// The fds to send with the stream: memfd `msg_id % 5` with each DMA_MAP (4: none).
fn fds_for(stream: &[u8], files: &[File]) -> Vec<(Range<usize>, OwnedFd)> {
    let mut fds = Vec::new();
    let mut offset = 0;
    while let Some(header) = stream.get(offset..).and_then(read_struct::<Header>) {
        let size = header.msg_size as usize;
        let index = usize::from(header.msg_id % 5);
        if header.command == 2 && index < FILES {
            let fd = files[index].try_clone().expect("dup").into();
            fds.push((offset..offset + size.max(1), fd));
        }
        if size < HEADER_SIZE {
            break;
        }
        offset += size;
    }
    fds
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 * FILES {
        return;
    }
    let (layout, stream) = data.split_at(2 * FILES);
    let files: Vec<File> = layout
        .chunks(2)
        .map(|spec| memfd(spec[0], spec[1]))
        .collect();
    let transport = MemoryTransport::new(stream.to_vec()).with_fds(fds_for(stream, &files));
    let mut device = MemoryDevice {
        bar0: [0; 0x1000],
        files,
        memory: GuestMemory::default(),
    };
    let mut connection = Connection::new(transport, &mut device, ServerCapabilities::default())
        .expect("valid description");
    while connection.handle_message() == Status::Open {}
});
