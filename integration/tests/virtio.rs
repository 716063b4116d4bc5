// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The virtio test devices driven without a guest: this test is the driver, through the rust-vmm
//! vfio-user client, with split rings it lays out in shared memory itself.

mod common;

use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::path::Path;

use common::*;
use integration::virtio::blk::SERIAL;
use integration::virtio::pci::*;
use integration::virtio::rng::PATTERN_MODULUS;
use vfio_user::Client;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;

const RAM_SIZE: u64 = 4 << 20;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const BUFFERS: u64 = 0x10000;
const QUEUE_SIZE: u16 = 16;
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// A virtio server process on its own socket.
fn virtio_server(args: &[&str]) -> ServerProcess {
    ServerProcess::start_with(env!("CARGO_BIN_EXE_virtio-server"), args)
}

/// The test's side of a virtio-pci device: a minimal modern driver with one split queue.
struct Driver {
    client: Client,
    ram: GuestRam,
    vectors: Vec<OwnedFd>,
    intx: OwnedFd,
    next_avail: u16,
}

impl Driver {
    fn bar_write(&mut self, offset: u64, data: &[u8]) {
        self.client.region_write(0, offset, data).unwrap();
    }

    fn bar_read32(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.client.region_read(0, offset, &mut data).unwrap();
        u32::from_le_bytes(data)
    }

    fn common_write16(&mut self, offset: u64, value: u16) {
        self.bar_write(COMMON_CFG + offset, &value.to_le_bytes());
    }

    fn common_write32(&mut self, offset: u64, value: u32) {
        self.bar_write(COMMON_CFG + offset, &value.to_le_bytes());
    }

    fn status(&mut self) -> u8 {
        let mut data = [0u8; 1];
        self.client
            .region_read(0, COMMON_CFG + 0x14, &mut data)
            .unwrap();
        data[0]
    }

    fn set_status(&mut self, status: u8) {
        self.bar_write(COMMON_CFG + 0x14, &[status]);
    }

    /// Connects and brings the device to DRIVER_OK with queue 0 using `vector` (0xffff: INTx).
    fn start(socket: &Path, device_id: u16, vector: u16) -> Driver {
        let mut client = Client::new(socket).unwrap();
        let mut ids = [0u8; 4];
        client
            .region_read(PCI_CONFIG_REGION_INDEX, 0, &mut ids)
            .unwrap();
        assert_eq!(
            ids,
            [0xf4, 0x1a, (0x40 + device_id) as u8, 0x10],
            "modern virtio-pci IDs"
        );
        let ram = GuestRam::new(RAM_SIZE);
        client
            .dma_map(0, 0, RAM_SIZE, ram.fd().as_raw_fd())
            .unwrap();
        let vectors: Vec<OwnedFd> = (0..2).map(|_| sys::eventfd(true).unwrap()).collect();
        let raw: Vec<i32> = vectors.iter().map(|fd| fd.as_raw_fd()).collect();
        client
            .set_irqs(
                PCI_MSIX_IRQ_INDEX,
                IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                0,
                2,
                &raw,
            )
            .unwrap();
        let intx = sys::eventfd(true).unwrap();
        client
            .set_irqs(
                PCI_INTX_IRQ_INDEX,
                IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                0,
                1,
                &[intx.as_raw_fd()],
            )
            .unwrap();
        let mut driver = Driver {
            client,
            ram,
            vectors,
            intx,
            next_avail: 0,
        };
        driver.set_status(0);
        driver.set_status(1 | 2); // ACKNOWLEDGE | DRIVER
        driver.common_write32(0x00, 1);
        assert_eq!(driver.bar_read32(COMMON_CFG + 0x04) & 1, 1, "VERSION_1");
        driver.common_write32(0x08, 1);
        driver.common_write32(0x0c, 1);
        driver.common_write32(0x08, 0);
        driver.common_write32(0x0c, 0);
        driver.set_status(1 | 2 | 8);
        assert_eq!(driver.status() & 8, 8, "FEATURES_OK accepted");
        driver.common_write16(0x10, 0); // config vector
        driver.common_write16(0x16, 0); // queue_select
        driver.common_write16(0x18, QUEUE_SIZE);
        driver.common_write16(0x1a, vector);
        driver.common_write32(0x20, DESC as u32);
        driver.common_write32(0x28, AVAIL as u32);
        driver.common_write32(0x30, USED as u32);
        driver.common_write16(0x1c, 1);
        driver.set_status(1 | 2 | 8 | 4);
        assert_eq!(driver.status() & 0x40, 0, "device did not need a reset");
        driver
    }

    fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&addr.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&next.to_le_bytes());
        self.ram.write(DESC + u64::from(index) * 16, &bytes);
    }

    /// Offers the chain starting at descriptor `head`, notifies, and returns the used length.
    fn submit(&mut self, head: u16, msix_vector: Option<usize>) -> u32 {
        let slot = self.next_avail % QUEUE_SIZE;
        self.ram
            .write(AVAIL + 4 + u64::from(slot) * 2, &head.to_le_bytes());
        self.next_avail = self.next_avail.wrapping_add(1);
        self.ram.write(AVAIL + 2, &self.next_avail.to_le_bytes());
        self.bar_write(NOTIFY_CFG, &0u16.to_le_bytes());
        match msix_vector {
            Some(v) => assert_eq!(wait_event(&self.vectors[v]), 1, "queue interrupt"),
            None => {
                assert_eq!(wait_event(&self.intx), 1, "INTx");
                let mut isr = [0u8; 1];
                self.client.region_read(0, ISR_CFG, &mut isr).unwrap();
                assert_eq!(isr[0], 1, "queue interrupt in the ISR");
                self.client.region_read(0, ISR_CFG, &mut isr).unwrap();
                assert_eq!(isr[0], 0, "ISR read clears it");
            }
        }
        let used_idx = u16::from_le_bytes(self.ram.read(USED + 2, 2).try_into().unwrap());
        assert_eq!(used_idx, self.next_avail);
        let elem = self.ram.read(USED + 4 + u64::from(slot) * 8, 8);
        assert_eq!(
            u32::from_le_bytes(elem[0..4].try_into().unwrap()),
            u32::from(head)
        );
        u32::from_le_bytes(elem[4..8].try_into().unwrap())
    }
}

#[test]
fn rng_fills_buffers_with_the_known_stream() {
    let server = virtio_server(&["rng"]);
    let mut driver = Driver::start(&server.socket, 4, 1);
    driver.write_desc(0, BUFFERS, 300, DESC_F_WRITE, 0);
    assert_eq!(driver.submit(0, Some(1)), 300);
    driver.write_desc(0, BUFFERS + 0x1000, 10, DESC_F_WRITE, 0);
    assert_eq!(driver.submit(0, Some(1)), 10);
    let first = driver.ram.read(BUFFERS, 300);
    let second = driver.ram.read(BUFFERS + 0x1000, 10);
    let stream: Vec<u8> = first.into_iter().chain(second).collect();
    let expected: Vec<u8> = (0..310u64).map(|n| (n % PATTERN_MODULUS) as u8).collect();
    assert_eq!(stream, expected);
}

#[test]
fn rng_works_with_intx_when_msix_is_off() {
    let server = virtio_server(&["rng"]);
    let mut driver = Driver::start(&server.socket, 4, 0xffff);
    driver.write_desc(0, BUFFERS, 16, DESC_F_WRITE, 0);
    assert_eq!(driver.submit(0, None), 16);
}

/// Writes `data` at `sector` (or reads it back when `data` is None) with one request.
fn blk_request(driver: &mut Driver, request_type: u32, sector: u64, len: u32) -> (u8, u32) {
    let mut header = Vec::new();
    header.extend_from_slice(&request_type.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&sector.to_le_bytes());
    driver.ram.write(BUFFERS, &header);
    let status_addr = BUFFERS + 0x100;
    driver.ram.write(status_addr, &[0xee]);
    let data_addr = BUFFERS + 0x1000;
    driver.write_desc(0, BUFFERS, 16, DESC_F_NEXT, 1);
    let data_flags = if request_type == 1 { 0 } else { DESC_F_WRITE };
    if len > 0 {
        driver.write_desc(1, data_addr, len, data_flags | DESC_F_NEXT, 2);
        driver.write_desc(2, status_addr, 1, DESC_F_WRITE, 0);
    } else {
        driver.write_desc(1, status_addr, 1, DESC_F_WRITE, 0);
    }
    let used = driver.submit(0, Some(1));
    (driver.ram.read(status_addr, 1)[0], used)
}

#[test]
fn blk_writes_reach_the_file_and_read_back() {
    let dir = std::env::temp_dir().join(format!("vfio-user-blk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let server = virtio_server(&["blk", "--file", disk.to_str().unwrap()]);
    let mut driver = Driver::start(&server.socket, 2, 1);

    let mut capacity = [0u8; 8];
    driver
        .client
        .region_read(0, DEVICE_CFG, &mut capacity)
        .unwrap();
    assert_eq!(u64::from_le_bytes(capacity), (1 << 20) / 512);

    let data = pattern(8192, 9);
    driver.ram.write(BUFFERS + 0x1000, &data);
    assert_eq!(blk_request(&mut driver, 1, 4, 8192), (0, 1));
    assert_eq!(blk_request(&mut driver, 4, 0, 0), (0, 1), "flush");
    let on_disk = std::fs::read(&disk).unwrap();
    assert_eq!(&on_disk[4 * 512..4 * 512 + 8192], &data[..], "nothing lost");

    driver.ram.write(BUFFERS + 0x1000, &vec![0u8; 8192]);
    assert_eq!(blk_request(&mut driver, 0, 4, 8192), (0, 8193));
    assert_eq!(driver.ram.read(BUFFERS + 0x1000, 8192), data);

    assert_eq!(blk_request(&mut driver, 8, 0, 20).0, 0, "GET_ID");
    assert_eq!(&driver.ram.read(BUFFERS + 0x1000, SERIAL.len()), SERIAL);

    // Past the end of the disk: an I/O error, not a short write.
    assert_eq!(blk_request(&mut driver, 1, (1 << 20) / 512 - 1, 1024).0, 1);
    // Unknown request type.
    assert_eq!(blk_request(&mut driver, 99, 0, 0).0, 2);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that shrinks its memory file under a running device loses its connection; the
/// server logs the fault and serves the next client.
fn shrinking_memory_drops_only_that_client(args: &[&str], device_id: u16) {
    let mut server = virtio_server(args);
    let mut driver = Driver::start(&server.socket, device_id, 1);
    // The rings live at 0x1000..0x4000; after this, every page past the first faults.
    driver.ram.file.set_len(0x1000).unwrap();
    // The device may handle the notify before the reply (the reply is then lost with the
    // connection) or on a worker thread.
    let _ = driver
        .client
        .region_write(0, NOTIFY_CFG, &0u16.to_le_bytes());
    let log = server.log_containing("guest memory fault at");
    assert!(
        log.contains("guest memory fault at 0x"),
        "the fault is logged: {log}"
    );
    // The connection is gone: the next request fails instead of hanging.
    let mut data = [0u8; 4];
    assert!(driver.client.region_read(0, ISR_CFG, &mut data).is_err());
    assert!(server.alive());
    drop(driver);
    let mut driver = Driver::start(&server.socket, device_id, 1);
    assert_eq!(driver.status() & 4, 4, "the next client drives the device");
    if device_id == 4 {
        driver.write_desc(0, BUFFERS, 16, DESC_F_WRITE, 0);
        assert_eq!(driver.submit(0, Some(1)), 16);
    }
}

#[test]
fn rng_survives_a_client_that_shrinks_its_memory() {
    shrinking_memory_drops_only_that_client(&["rng"], 4);
}

#[test]
fn blk_survives_a_client_that_shrinks_its_memory() {
    let dir = std::env::temp_dir().join(format!("virtio-blk-shrink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    shrinking_memory_drops_only_that_client(&["blk", "--file", disk.to_str().unwrap()], 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
