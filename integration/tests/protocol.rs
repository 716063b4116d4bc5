// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Protocol paths the rust-vmm client does not reach, driven byte by byte: QEMU's startup
//! sequence, VERSION sizing, GET_REGION_IO_FDS, DMA through DMA_READ/DMA_WRITE messages,
//! REGION_WRITE_MULTI and unsupported features.

mod common;

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;

use common::*;
use integration::raw_client::RawClient;
use integration::raw_client::QEMU_CAPABILITIES;
use integration::reference::regs;
use integration::reference::BAR0_SIZE;
use integration::reference::MSIX_VECTORS;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;
use zerocopy::IntoBytes;

fn write_bar0(client: &mut RawClient, offset: u64, data: &[u8]) {
    let mut body = RegionAccess {
        offset,
        region: 0,
        count: data.len() as u32,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(data);
    let reply = client.call(command::REGION_WRITE, &body, &[]).unwrap();
    assert!(!reply.header.is_error(), "{reply:?}");
    assert_eq!(reply.body.len(), 16);
}

fn read_region(client: &mut RawClient, region: u32, offset: u64, count: u32) -> Vec<u8> {
    let request = RegionAccess {
        offset,
        region,
        count,
    };
    let reply = client
        .call(command::REGION_READ, request.as_bytes(), &[])
        .unwrap();
    assert!(!reply.header.is_error(), "{reply:?}");
    assert_eq!(&reply.body[..16], request.as_bytes());
    reply.body[16..].to_vec()
}

fn read_u32(client: &mut RawClient, offset: u64) -> u32 {
    u32::from_le_bytes(read_region(client, 0, offset, 4).try_into().unwrap())
}

fn set_msix(client: &mut RawClient, fds: &[OwnedFd]) {
    let set = IrqSet {
        argsz: 20,
        flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        index: PCI_MSIX_IRQ_INDEX,
        start: 0,
        count: fds.len() as u32,
    };
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &borrowed)
        .unwrap();
    assert!(!reply.header.is_error());
}

#[test]
fn version_reply_is_0_0_and_fits_the_request() {
    let server = ServerProcess::start();
    let mut client = RawClient::connect(&server.socket).unwrap();
    let reply = client.negotiate().unwrap();
    let version: Version = read_struct(&reply.body).unwrap();
    assert_eq!((version.major, version.minor), (0, 0));
    let request_size = HEADER_SIZE + 4 + QEMU_CAPABILITIES.len() + 1;
    assert!(
        reply.header.msg_size as usize <= request_size,
        "QEMU sizes its receive buffer from its request"
    );
    assert_eq!(*reply.body.last().unwrap(), 0, "NUL-terminated");
    let json = std::str::from_utf8(&reply.body[4..reply.body.len() - 1]).unwrap();
    for key in [
        "max_msg_fds",
        "max_data_xfer_size",
        "pgsizes",
        "max_dma_maps",
        "write_multiple",
    ] {
        assert!(json.contains(key), "{json}");
    }
    assert!(
        !json.contains("migration"),
        "not proposed by the client: {json}"
    );
}

/// QEMU pipelines its DMA_MAPs, then reads device and region info, the whole config space,
/// writes BAR addresses through, and enables INTx.
#[test]
fn qemu_startup_sequence() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let ram = GuestRam::new(4 << 20);
    let fd = ram.fd();
    let mut ids = Vec::new();
    for i in 0..4u64 {
        let map = DmaMap {
            argsz: 32,
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            offset: i << 20,
            address: 0x1_0000_0000 + (i << 20),
            size: 1 << 20,
        };
        ids.push(
            client
                .send(command::DMA_MAP, 0, map.as_bytes(), &[fd.as_fd()])
                .unwrap(),
        );
    }
    for id in ids {
        let reply = client.recv().unwrap();
        assert_eq!(reply.header.msg_id, id, "replies in order");
        assert!(!reply.header.is_error());
    }
    assert_eq!(read_u32(&mut client, regs::DMA_MAPS), 4);

    let reply = client.device_info().unwrap();
    let info: DeviceInfo = read_struct(&reply.body).unwrap();
    assert!(info.num_regions >= 8 && info.num_irqs >= 3);
    assert_ne!(info.flags & DEVICE_FLAGS_PCI, 0);
    assert_ne!(info.flags & DEVICE_FLAGS_RESET, 0);

    for index in [0u32, 1, 2, 3, 4, 5, 7] {
        let request = RegionInfo {
            argsz: 32,
            index,
            ..Default::default()
        };
        let reply = client
            .call(command::DEVICE_GET_REGION_INFO, request.as_bytes(), &[])
            .unwrap();
        let info: RegionInfo = read_struct(&reply.body).unwrap();
        assert!(reply.fds.len() <= 1, "at most one fd per reply");
        if index == 2 {
            assert_eq!(reply.fds.len(), 1);
            assert!(info.argsz > 32, "caps need a second request");
        }
    }

    let config = read_region(&mut client, PCI_CONFIG_REGION_INDEX, 0, 256);
    assert_eq!(u16::from_le_bytes([config[0], config[1]]), 0x1b36);
    assert_eq!(
        u32::from_le_bytes(config[0x10..0x14].try_into().unwrap()),
        0x4,
        "64-bit BAR0 type bits before any address"
    );

    // Address write-through is kept, masked to the BAR size.
    let mut body = RegionAccess {
        offset: 0x10,
        region: PCI_CONFIG_REGION_INDEX,
        count: 8,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&0x0000_0080_fe00_1234u64.to_le_bytes());
    let reply = client.call(command::REGION_WRITE, &body, &[]).unwrap();
    assert!(!reply.header.is_error());
    let bar = read_region(&mut client, PCI_CONFIG_REGION_INDEX, 0x10, 8);
    assert_eq!(
        u64::from_le_bytes(bar.try_into().unwrap()),
        (0x0000_0080_fe00_1234u64 & !(BAR0_SIZE - 1)) | 0x4
    );

    let intx = sys::eventfd(true).unwrap();
    let set = IrqSet {
        argsz: 20,
        flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        index: PCI_INTX_IRQ_INDEX,
        start: 0,
        count: 1,
    };
    let reply = client
        .call(command::DEVICE_SET_IRQS, set.as_bytes(), &[intx.as_fd()])
        .unwrap();
    assert!(!reply.header.is_error());
    for index in [PCI_ERR_IRQ_INDEX, PCI_REQ_IRQ_INDEX] {
        let request = IrqInfo {
            argsz: 16,
            index,
            ..Default::default()
        };
        let reply = client
            .call(command::DEVICE_GET_IRQ_INFO, request.as_bytes(), &[])
            .unwrap();
        let info: IrqInfo = read_struct(&reply.body).unwrap();
        assert_eq!(info.count, 1);
    }

    // Machine reset.
    let reply = client.call(command::DEVICE_RESET, &[], &[]).unwrap();
    assert!(!reply.header.is_error());
    assert!(reply.body.is_empty());
}

/// GET_REGION_IO_FDS hands out the doorbell's eventfd; signalling it (as KVM would on a guest
/// write) runs the DMA without any message.
#[test]
fn ioeventfd_doorbell_skips_the_socket() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let request = RegionIoFds {
        argsz: 16,
        index: 0,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_REGION_IO_FDS, request.as_bytes(), &[])
        .unwrap();
    let short: RegionIoFds = read_struct(&reply.body).unwrap();
    assert_eq!(short.count, 1);
    assert_eq!(short.argsz, 16 + 40);
    assert!(reply.fds.is_empty(), "no fds without room for the array");

    let request = RegionIoFds {
        argsz: short.argsz,
        index: 0,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_REGION_IO_FDS, request.as_bytes(), &[])
        .unwrap();
    assert_eq!(reply.body.len(), 56);
    let sub: SubRegionIoEventFd = read_struct(&reply.body[16..]).unwrap();
    assert_eq!((sub.offset, sub.size, sub.fd_index), (regs::DOORBELL, 4, 0));
    assert_eq!(sub.fd_type, IO_FD_TYPE_IOEVENTFD);
    assert_eq!(reply.fds.len(), 1);
    let doorbell = reply.fds.into_iter().next().unwrap();

    let ram = GuestRam::new(1 << 20);
    let map = DmaMap {
        argsz: 32,
        flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
        offset: 0,
        address: 0,
        size: 1 << 20,
    };
    let fd = ram.fd();
    client
        .call(command::DMA_MAP, map.as_bytes(), &[fd.as_fd()])
        .unwrap();
    let vectors: Vec<OwnedFd> = (0..MSIX_VECTORS)
        .map(|_| sys::eventfd(true).unwrap())
        .collect();
    set_msix(&mut client, &vectors);
    let data = pattern(4096, 11);
    ram.write(0x1000, &data);
    write_bar0(&mut client, regs::DMA_SRC, &0x1000u64.to_le_bytes());
    write_bar0(&mut client, regs::DMA_DST, &0x3000u64.to_le_bytes());
    write_bar0(&mut client, regs::DMA_LEN, &4096u32.to_le_bytes());
    write_bar0(&mut client, regs::DMA_IRQ, &1u32.to_le_bytes());

    sys::eventfd_signal(doorbell.as_fd()).unwrap();
    assert_eq!(wait_event(&vectors[1]), 1, "worker ran the DMA");
    assert_eq!(ram.read(0x3000, 4096), data);
    assert_eq!(read_u32(&mut client, regs::DMA_COUNT), 1);

    // Regions without ioeventfds report none.
    let request = RegionIoFds {
        argsz: 1024,
        index: 2,
        ..Default::default()
    };
    let reply = client
        .call(command::DEVICE_GET_REGION_IO_FDS, request.as_bytes(), &[])
        .unwrap();
    let none: RegionIoFds = read_struct(&reply.body).unwrap();
    assert_eq!(none.count, 0);
}

/// Memory mapped without an fd is reached with DMA_READ/DMA_WRITE requests to the client,
/// while the client's own command waits for its reply.
#[test]
fn dma_without_fd_goes_through_the_client() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let map = DmaMap {
        argsz: 32,
        flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
        offset: 0,
        address: 0x40000,
        size: 0x10000,
    };
    let reply = client.call(command::DMA_MAP, map.as_bytes(), &[]).unwrap();
    assert!(!reply.header.is_error());
    let mut guest = vec![0u8; 0x10000];
    let data = pattern(300, 5);
    guest[0x100..0x100 + data.len()].copy_from_slice(&data);

    write_bar0(&mut client, regs::DMA_SRC, &0x40100u64.to_le_bytes());
    write_bar0(&mut client, regs::DMA_DST, &0x48000u64.to_le_bytes());
    write_bar0(
        &mut client,
        regs::DMA_LEN,
        &(data.len() as u32).to_le_bytes(),
    );
    let mut body = RegionAccess {
        offset: regs::DOORBELL,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    body.extend_from_slice(&1u32.to_le_bytes());
    let doorbell_id = client.send(command::REGION_WRITE, 0, &body, &[]).unwrap();

    // Serve the server's requests until our write is answered.
    let mut served = Vec::new();
    loop {
        let message = client.recv().unwrap();
        if message.header.message_type() == header_flags::TYPE_REPLY {
            assert_eq!(message.header.msg_id, doorbell_id);
            assert!(!message.header.is_error());
            break;
        }
        let access: DmaAccess = read_struct(&message.body).unwrap();
        let start = (access.address - 0x40000) as usize;
        let count = access.count as usize;
        let reply_body = match message.header.command {
            command::DMA_READ => {
                let mut body = access.as_bytes().to_vec();
                body.extend_from_slice(&guest[start..start + count]);
                body
            }
            command::DMA_WRITE => {
                guest[start..start + count].copy_from_slice(&message.body[16..16 + count]);
                access.as_bytes().to_vec()
            }
            other => panic!("unexpected server request {other}"),
        };
        served.push(message.header.command);
        let header = Header {
            msg_id: message.header.msg_id,
            command: message.header.command,
            msg_size: (HEADER_SIZE + reply_body.len()) as u32,
            flags: header_flags::TYPE_REPLY,
            error: 0,
        };
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&reply_body);
        client.send_raw(&bytes, &[]).unwrap();
    }
    assert_eq!(served, vec![command::DMA_READ, command::DMA_WRITE]);
    assert_eq!(&guest[0x8000..0x8000 + data.len()], &data[..]);
    assert_eq!(read_u32(&mut client, regs::DMA_STATUS), 0);

    // A client that refuses the DMA: the device sees a failure, the connection survives.
    let doorbell_id = client.send(command::REGION_WRITE, 0, &body, &[]).unwrap();
    let request = client.recv().unwrap();
    assert_eq!(request.header.command, command::DMA_READ);
    let refusal = Header {
        msg_id: request.header.msg_id,
        command: command::DMA_READ,
        msg_size: HEADER_SIZE as u32,
        flags: header_flags::TYPE_REPLY | header_flags::ERROR,
        error: libc::EFAULT as u32,
    };
    client.send_raw(refusal.as_bytes(), &[]).unwrap();
    let reply = client.recv().unwrap();
    assert_eq!(reply.header.msg_id, doorbell_id);
    assert_eq!(read_u32(&mut client, regs::DMA_STATUS), libc::EFAULT as u32);
}

#[test]
fn posted_writes_and_write_multi() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let mut body = WriteMultiHeader { wr_cnt: 2 }.as_bytes().to_vec();
    for (offset, value) in [
        (regs::SCRATCH, 0xdead_beefu32),
        (regs::SCRATCH + 4, 0x1234_5678),
    ] {
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&value.to_le_bytes());
        body.extend_from_slice(
            WriteMultiEntry {
                offset,
                region: 0,
                count: 4,
                data,
            }
            .as_bytes(),
        );
    }
    client
        .send(
            command::REGION_WRITE_MULTI,
            header_flags::NO_REPLY,
            &body,
            &[],
        )
        .unwrap();
    // A posted REGION_WRITE, then a synchronous read that must observe both.
    let mut write = RegionAccess {
        offset: regs::DMA_LEN,
        region: 0,
        count: 4,
    }
    .as_bytes()
    .to_vec();
    write.extend_from_slice(&77u32.to_le_bytes());
    client
        .send(command::REGION_WRITE, header_flags::NO_REPLY, &write, &[])
        .unwrap();
    let scratch = read_region(&mut client, 0, regs::SCRATCH, 8);
    assert_eq!(
        u64::from_le_bytes(scratch.try_into().unwrap()),
        0x1234_5678_dead_beef
    );
    assert_eq!(read_u32(&mut client, regs::DMA_LEN), 77);

    let reply = client
        .call(command::REGION_WRITE_MULTI, &body, &[])
        .unwrap();
    let done: WriteMultiHeader = read_struct(&reply.body).unwrap();
    assert_eq!(done.wr_cnt, 2);
}

#[test]
fn msix_pending_bits_and_masking() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let vectors: Vec<OwnedFd> = (0..MSIX_VECTORS)
        .map(|_| sys::eventfd(true).unwrap())
        .collect();
    set_msix(&mut client, &vectors);
    let mask = |client: &mut RawClient, action: u32| {
        let set = IrqSet {
            argsz: 21,
            flags: IRQ_SET_DATA_BOOL | action,
            index: PCI_MSIX_IRQ_INDEX,
            start: 3,
            count: 1,
        };
        let mut body = set.as_bytes().to_vec();
        body.push(1);
        let reply = client.call(command::DEVICE_SET_IRQS, &body, &[]).unwrap();
        assert!(!reply.header.is_error());
    };
    mask(&mut client, IRQ_SET_ACTION_MASK);
    // An empty DMA raising vector 3 while it is masked.
    write_bar0(&mut client, regs::DMA_LEN, &0u32.to_le_bytes());
    write_bar0(&mut client, regs::DMA_IRQ, &3u32.to_le_bytes());
    write_bar0(&mut client, regs::DOORBELL, &1u32.to_le_bytes());
    assert_eq!(poll_event(&vectors[3]), 0);
    assert_eq!(
        read_u32(&mut client, regs::MSIX_PBA),
        1 << 3,
        "PBA reads reach the device"
    );
    mask(&mut client, IRQ_SET_ACTION_UNMASK);
    assert_eq!(poll_event(&vectors[3]), 1, "delivered on unmask");
    assert_eq!(read_u32(&mut client, regs::MSIX_PBA), 0);
}

#[test]
fn migration_features_are_not_supported() {
    let server = ServerProcess::start();
    let mut client = connect(&server);
    let feature = DeviceFeature {
        argsz: 16,
        flags: 1 | 1 << 16,
    };
    let reply = client
        .call(command::DEVICE_FEATURE, feature.as_bytes(), &[])
        .unwrap();
    assert!(reply.header.is_error());
    assert_eq!(reply.header.error, libc::ENOTSUP as u32);
    let read = MigDataAccess {
        argsz: 64,
        size: 56,
    };
    let reply = client
        .call(command::MIG_DATA_READ, read.as_bytes(), &[])
        .unwrap();
    assert_eq!(reply.header.error, libc::ENOTSUP as u32);
    let unmap = DmaUnmap {
        argsz: 24,
        flags: DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
        address: 0,
        size: 0x1000,
    };
    let reply = client
        .call(command::DMA_UNMAP, unmap.as_bytes(), &[])
        .unwrap();
    assert_eq!(reply.header.error, libc::EINVAL as u32);
}
