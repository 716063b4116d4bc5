// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! virtio-blk backed by a host file: read, write, flush and get-id requests.

use std::fs::File;
use std::io;
use std::io::Read;
use std::io::Write;
use std::os::unix::fs::FileExt;

use virtio_queue::Queue;
use virtio_queue::QueueT;
use vm_memory::ByteValued;
use vm_memory::GuestMemoryMmap;

use super::VirtioDevice;

pub const VIRTIO_ID_BLOCK: u16 = 2;
pub const SECTOR_SIZE: u64 = 512;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// virtio-queue follows indirect tables itself; without them a request of `SEG_MAX` segments
/// fills the whole ring and big requests go one at a time.
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// QEMU's virtio-blk defaults: 256 descriptors, 254 data segments per request.
const SEG_MAX: u32 = 254;
const QUEUE_SIZES: [u16; 1] = [256];

const REQ_IN: u32 = 0;
const REQ_OUT: u32 = 1;
const REQ_FLUSH: u32 = 4;
const REQ_GET_ID: u32 = 8;
const STATUS_OK: u8 = 0;
const STATUS_IOERR: u8 = 1;
const STATUS_UNSUPP: u8 = 2;
/// The ID the guest reads from /sys/block/vdX/serial.
pub const SERIAL: &[u8] = b"vfio-user-blk";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RequestHeader {
    request_type: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: plain integers, no padding, any bit pattern is valid.
unsafe impl ByteValued for RequestHeader {}

pub struct Block {
    file: File,
    capacity_sectors: u64,
}

impl Block {
    pub fn new(file: File) -> io::Result<Block> {
        let len = file.metadata()?.len();
        Ok(Block {
            file,
            capacity_sectors: len / SECTOR_SIZE,
        })
    }

    /// Carries out one request; returns the virtio status and the bytes written to the driver.
    fn execute(
        &mut self,
        header: RequestHeader,
        reader: &mut impl Read,
        readable: usize,
        writer: &mut impl Write,
        writable: usize,
    ) -> (u8, usize) {
        let offset = header.sector.checked_mul(SECTOR_SIZE);
        let in_bounds = |len: usize| {
            offset
                .and_then(|start| start.checked_add(len as u64))
                .is_some_and(|end| end <= self.capacity_sectors * SECTOR_SIZE)
        };
        match header.request_type {
            REQ_IN => {
                // The last writable byte is the status.
                let len = writable.saturating_sub(1);
                if !in_bounds(len) {
                    return (STATUS_IOERR, 0);
                }
                let mut buf = vec![0u8; len];
                match self
                    .file
                    .read_exact_at(&mut buf, offset.unwrap_or(0))
                    .and_then(|()| writer.write_all(&buf))
                {
                    Ok(()) => (STATUS_OK, len),
                    Err(_) => (STATUS_IOERR, 0),
                }
            }
            REQ_OUT => {
                if !in_bounds(readable) {
                    return (STATUS_IOERR, 0);
                }
                let mut buf = vec![0u8; readable];
                match reader
                    .read_exact(&mut buf)
                    .and_then(|()| self.file.write_all_at(&buf, offset.unwrap_or(0)))
                {
                    Ok(()) => (STATUS_OK, 0),
                    Err(_) => (STATUS_IOERR, 0),
                }
            }
            REQ_FLUSH => match self.file.sync_all() {
                Ok(()) => (STATUS_OK, 0),
                Err(_) => (STATUS_IOERR, 0),
            },
            REQ_GET_ID => {
                let mut id = [0u8; 20];
                id[..SERIAL.len()].copy_from_slice(SERIAL);
                let len = writable.saturating_sub(1).min(id.len());
                match writer.write_all(&id[..len]) {
                    Ok(()) => (STATUS_OK, len),
                    Err(_) => (STATUS_IOERR, 0),
                }
            }
            _ => (STATUS_UNSUPP, 0),
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn class_code(&self) -> u32 {
        // Mass storage, other.
        0x018000
    }

    fn features(&self) -> u64 {
        VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SEG_MAX | VIRTIO_RING_F_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // capacity (u64) at 0, size_max (u32) at 8, seg_max (u32) at 12.
        let mut config = [0u8; 16];
        config[0..8].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        data.fill(0);
        let start = offset as usize;
        if start < config.len() {
            let n = data.len().min(config.len() - start);
            data[..n].copy_from_slice(&config[start..start + n]);
        }
    }

    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
    ) -> io::Result<bool> {
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let mut reader = chain.clone().reader(memory).map_err(io::Error::other)?;
            let mut writer = chain.writer(memory).map_err(io::Error::other)?;
            let header: RequestHeader = reader.read_obj()?;
            let readable = reader.available_bytes();
            let writable = writer.available_bytes();
            // The status byte is the last writable byte: split it off.
            let mut status_writer = writer
                .split_at(writable.saturating_sub(1))
                .map_err(io::Error::other)?;
            let (status, written) =
                self.execute(header, &mut reader, readable, &mut writer, writable);
            status_writer.write_all(&[status])?;
            queue
                .add_used(memory, head, (written + 1) as u32)
                .map_err(io::Error::other)?;
            used = true;
        }
        Ok(used)
    }
}
