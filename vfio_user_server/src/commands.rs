// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The handler of each client command: validate, act, reply.

use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::os::fd::BorrowedFd;

use log::debug;
use zerocopy::FromBytes;
use zerocopy::IntoBytes;

use crate::capabilities;
use crate::connection::Connection;
use crate::connection::Pollable;
use crate::error::Error;
use crate::error::Result;
use crate::irq::irq_info_flags;
use crate::irq::IrqSetRequest;
use crate::message::zeroed;
use crate::message::Message;
use crate::message::Transport;
use crate::pci::split_config_access;
use crate::protocol::*;
use crate::region::region_info_reply;

/// Per-command properties.
struct CommandSpec {
    command: u16,
    /// Most fds the command may carry (beyond that: an error, fds closed).
    max_fds: usize,
    /// Size of the reply body a client that ignores the ERROR flag reads; `None` for a bare
    /// header. REGION_READ adds its data length.
    error_shape: Option<usize>,
    /// The command carries `argsz` as its first field, which also bounds the reply.
    has_argsz: bool,
}

const fn spec(
    command: u16,
    max_fds: usize,
    error_shape: Option<usize>,
    has_argsz: bool,
) -> CommandSpec {
    CommandSpec {
        command,
        max_fds,
        error_shape,
        has_argsz,
    }
}

/// `usize::MAX` fds: bounded by `max_msg_fds` instead.
const COMMANDS: &[CommandSpec] = &[
    spec(command::VERSION, 0, None, false),
    spec(command::DMA_MAP, 1, None, true),
    spec(command::DMA_UNMAP, 0, Some(size_of::<DmaUnmap>()), true),
    spec(
        command::DEVICE_GET_INFO,
        0,
        Some(size_of::<DeviceInfo>()),
        true,
    ),
    spec(
        command::DEVICE_GET_REGION_INFO,
        0,
        Some(size_of::<RegionInfo>()),
        true,
    ),
    spec(
        command::DEVICE_GET_REGION_IO_FDS,
        0,
        Some(size_of::<RegionIoFds>()),
        true,
    ),
    spec(
        command::DEVICE_GET_IRQ_INFO,
        0,
        Some(size_of::<IrqInfo>()),
        true,
    ),
    spec(command::DEVICE_SET_IRQS, usize::MAX, None, true),
    spec(
        command::REGION_READ,
        0,
        Some(size_of::<RegionAccess>()),
        false,
    ),
    spec(
        command::REGION_WRITE,
        0,
        Some(size_of::<RegionAccess>()),
        false,
    ),
    spec(command::DEVICE_RESET, 0, None, false),
    spec(
        command::REGION_WRITE_MULTI,
        0,
        Some(size_of::<WriteMultiHeader>()),
        false,
    ),
    spec(
        command::DEVICE_FEATURE,
        0,
        Some(size_of::<DeviceFeature>()),
        true,
    ),
    spec(
        command::MIG_DATA_READ,
        0,
        Some(size_of::<MigDataAccess>()),
        true,
    ),
    spec(
        command::MIG_DATA_WRITE,
        0,
        Some(size_of::<MigDataAccess>()),
        true,
    ),
];

fn find_spec(command: u16) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|spec| spec.command == command)
}

/// Reads the fixed part `T` of a command body.
fn fixed<T: FromBytes>(message: &Message) -> Result<T> {
    read_struct(&message.body).ok_or(Error::BodyTooShort {
        command: message.header.command,
        actual: message.body.len(),
        needed: size_of::<T>(),
    })
}

/// Checks that `argsz` leaves room for a reply's fixed part.
fn check_argsz(argsz: u32, needed: usize) -> Result<()> {
    if (argsz as usize) < needed {
        return Err(Error::ArgszTooSmall { argsz, needed });
    }
    Ok(())
}

impl<T: Transport + Pollable> Connection<'_, T> {
    /// The body an error reply to `message` carries: the request's fixed part echoed (so a
    /// client reading fixed-size replies stays in step) and, for REGION_READ, all-ones data.
    pub(crate) fn error_shape(&self, message: &Message) -> Vec<u8> {
        let Some(size) = find_spec(message.header.command).and_then(|spec| spec.error_shape) else {
            return Vec::new();
        };
        if message.header.message_type() != header_flags::TYPE_COMMAND {
            return Vec::new();
        }
        let mut shape = vec![0u8; size];
        let echo = size.min(message.body.len());
        shape[..echo].copy_from_slice(&message.body[..echo]);
        if message.header.command == command::REGION_READ {
            if let Some(access) = read_struct::<RegionAccess>(&message.body) {
                // Without memory for the data the reply is short; the connection lives on.
                if access.count <= self.channel.ours.max_data_xfer_size
                    && shape.try_reserve_exact(access.count as usize).is_ok()
                {
                    shape.resize(size + access.count as usize, 0xff);
                }
            }
        }
        let has_argsz = find_spec(message.header.command).is_some_and(|spec| spec.has_argsz);
        if has_argsz {
            if let Some(argsz) = read_struct::<u32>(&message.body) {
                shape.truncate(argsz as usize);
            }
        }
        shape
    }

    /// Validates the envelope of a message and runs its handler.
    pub(crate) fn dispatch(&mut self, message: &mut Message) -> Result<()> {
        let header = message.header;
        match header.message_type() {
            header_flags::TYPE_COMMAND => {}
            header_flags::TYPE_REPLY => return Err(Error::UnexpectedReply(header.command)),
            _ => {
                return Err(Error::InvalidFlags {
                    command: header.command,
                    flags: header.flags,
                })
            }
        }
        let spec = find_spec(header.command).ok_or(match header.command {
            command::DMA_READ | command::DMA_WRITE => Error::NotSupported(header.command),
            other => Error::UnknownCommand(other),
        })?;
        // Rule: the kernel dropped fds we had no room for; the command cannot be carried out.
        if message.fds_truncated {
            return Err(Error::FdsTruncated);
        }
        // Rule: fds only on commands that take them, and no more than advertised.
        let max_fds = spec.max_fds.min(self.channel.ours.max_msg_fds as usize);
        if message.fds.len() > max_fds {
            return Err(Error::FdsUnexpected {
                command: header.command,
                count: message.fds.len(),
            });
        }
        // Rule: VERSION comes first.
        if self.channel.client.is_none() && header.command != command::VERSION {
            return Err(Error::NotSupported(header.command));
        }
        debug!(
            "command {} id {} size {}",
            header.command, header.msg_id, header.msg_size
        );
        match header.command {
            command::VERSION => self.version(message),
            command::DMA_MAP => self.dma_map(message),
            command::DMA_UNMAP => self.dma_unmap(message),
            command::DEVICE_GET_INFO => self.device_get_info(message),
            command::DEVICE_GET_REGION_INFO => self.get_region_info(message),
            command::DEVICE_GET_REGION_IO_FDS => self.get_region_io_fds(message),
            command::DEVICE_GET_IRQ_INFO => self.get_irq_info(message),
            command::DEVICE_SET_IRQS => self.set_irqs(message),
            command::REGION_READ => self.region_read(message),
            command::REGION_WRITE => self.region_write(message),
            command::DEVICE_RESET => self.device_reset(message),
            command::REGION_WRITE_MULTI => self.region_write_multi(message),
            command::DEVICE_FEATURE => self.device_feature(message),
            command::MIG_DATA_READ => self.mig_data_read(message),
            command::MIG_DATA_WRITE => self.mig_data_write(message),
            other => Err(Error::UnknownCommand(other)),
        }
    }

    fn version(&mut self, message: &mut Message) -> Result<()> {
        let version: Version = fixed(message)?;
        // Rule: same major; any minor is answered with ours (0), which is <= the client's.
        if version.major != capabilities::MAJOR {
            return Err(Error::IncompatibleVersion {
                major: version.major,
                minor: version.minor,
            });
        }
        let data = &message.body[size_of::<Version>()..];
        let (client, json) = capabilities::negotiate(data, &self.channel.ours)?;
        self.channel.client = Some(client);
        self.region_maps.set_enabled(client.region_map);
        let reply = Version {
            major: capabilities::MAJOR,
            minor: capabilities::MINOR,
        };
        let mut json = json.into_bytes();
        json.push(0);
        self.channel
            .reply(&message.header, &[reply.as_bytes(), &json], &[])
    }

    fn dma_map(&mut self, message: &mut Message) -> Result<()> {
        let map: DmaMap = fixed(message)?;
        let fd = message.fds.pop();
        self.memory.lock().add(&map, fd)?;
        self.channel.reply(&message.header, &[], &[])
    }

    fn dma_unmap(&mut self, message: &mut Message) -> Result<()> {
        let unmap: DmaUnmap = fixed(message)?;
        let (address, size) = if unmap.flags & DMA_UNMAP_FLAG_ALL != 0 {
            // Rule: UNMAP_ALL names no range and comes with no other flag.
            if unmap.flags != DMA_UNMAP_FLAG_ALL || unmap.address != 0 || unmap.size != 0 {
                return Err(Error::InvalidFlags {
                    command: command::DMA_UNMAP,
                    flags: unmap.flags,
                });
            }
            (0, u64::MAX)
        } else {
            // Rule: dirty-page logging needs migration support, which is not offered.
            if unmap.flags != 0 {
                return Err(Error::InvalidFlags {
                    command: command::DMA_UNMAP,
                    flags: unmap.flags,
                });
            }
            (unmap.address, unmap.size)
        };
        // Let the device finish with the maps before they go; the write lock then waits for
        // accesses still in flight on other threads.
        let doomed = self.memory.lock().maps_inside(address, size)?;
        for &(address, size) in &doomed {
            self.device.dma_unmapping(address, size);
        }
        let removed = self.memory.lock().remove(address, size)?;
        drop(removed);
        let reply = &unmap.as_bytes()[..(unmap.argsz as usize).min(size_of::<DmaUnmap>())];
        self.channel.reply(&message.header, &[reply], &[])
    }

    fn device_get_info(&mut self, message: &mut Message) -> Result<()> {
        let request: DeviceInfo = fixed(message)?;
        check_argsz(request.argsz, size_of::<DeviceInfo>())?;
        let mut flags = DEVICE_FLAGS_PCI;
        if self.description.resettable {
            flags |= DEVICE_FLAGS_RESET;
        }
        let info = DeviceInfo {
            argsz: size_of::<DeviceInfo>() as u32,
            flags,
            num_regions: self.description.regions.len() as u32,
            num_irqs: PCI_NUM_IRQS,
        };
        self.channel.reply(&message.header, &[info.as_bytes()], &[])
    }

    fn get_region_info(&mut self, message: &mut Message) -> Result<()> {
        let request: RegionInfo = fixed(message)?;
        let region = self
            .description
            .regions
            .get(request.index as usize)
            .ok_or(Error::RegionIndexOutOfRange(request.index))?;
        let (reply, fd) = region_info_reply(request.index, region, request.argsz)?;
        let fds: Vec<BorrowedFd> = fd.into_iter().collect();
        self.channel.reply(&message.header, &[&reply], &fds)
    }

    fn get_region_io_fds(&mut self, message: &mut Message) -> Result<()> {
        let request: RegionIoFds = fixed(message)?;
        check_argsz(request.argsz, size_of::<RegionIoFds>())?;
        let region = self
            .description
            .regions
            .get(request.index as usize)
            .ok_or(Error::RegionIndexOutOfRange(request.index))?;
        let io_fds = self.device.region_io_fds(request.index);
        let mut fds: Vec<BorrowedFd> = Vec::new();
        let mut entries = Vec::with_capacity(io_fds.len());
        for io_fd in &io_fds {
            // The device's own table must stay inside its region.
            if io_fd
                .offset
                .checked_add(io_fd.size)
                .is_none_or(|end| end > region.size)
            {
                return Err(Error::Device(std::io::Error::other(
                    "ioeventfd outside its region",
                )));
            }
            let fd_index = match fds
                .iter()
                .position(|fd| fd.as_raw_fd() == io_fd.fd.as_raw_fd())
            {
                Some(i) => i,
                None => {
                    fds.push(io_fd.fd);
                    fds.len() - 1
                }
            };
            entries.push(SubRegionIoEventFd {
                offset: io_fd.offset,
                size: io_fd.size,
                fd_index: fd_index as u32,
                fd_type: IO_FD_TYPE_IOEVENTFD,
                flags: if io_fd.datamatch.is_some() {
                    IOEVENTFD_FLAG_DATAMATCH
                } else {
                    0
                },
                padding: 0,
                datamatch: io_fd.datamatch.unwrap_or(0),
            });
        }
        let client_max = self.channel.client.unwrap_or_default().max_msg_fds as usize;
        if fds.len() > client_max {
            return Err(Error::TransferTooLarge {
                count: fds.len() as u64,
                max: client_max as u64,
            });
        }
        let full = size_of::<RegionIoFds>() + entries.len() * size_of::<SubRegionIoEventFd>();
        let reply = RegionIoFds {
            argsz: full as u32,
            flags: 0,
            index: request.index,
            count: entries.len() as u32,
        };
        if (request.argsz as usize) < full {
            // Too small for the array: say how much is needed, send no fds.
            return self
                .channel
                .reply(&message.header, &[reply.as_bytes()], &[]);
        }
        let array = entries.as_bytes();
        self.channel
            .reply(&message.header, &[reply.as_bytes(), array], &fds)
    }

    fn get_irq_info(&mut self, message: &mut Message) -> Result<()> {
        let request: IrqInfo = fixed(message)?;
        check_argsz(request.argsz, size_of::<IrqInfo>())?;
        if request.index >= PCI_NUM_IRQS {
            return Err(Error::IrqIndexOutOfRange(request.index));
        }
        let counts = self.description.irqs;
        let count = match request.index {
            PCI_INTX_IRQ_INDEX => counts.intx.min(1),
            PCI_MSI_IRQ_INDEX => counts.msi,
            PCI_MSIX_IRQ_INDEX => counts.msix,
            PCI_ERR_IRQ_INDEX => counts.err.min(1),
            _ => counts.req.min(1),
        };
        let info = IrqInfo {
            argsz: size_of::<IrqInfo>() as u32,
            flags: irq_info_flags(request.index),
            index: request.index,
            count,
        };
        self.channel.reply(&message.header, &[info.as_bytes()], &[])
    }

    fn set_irqs(&mut self, message: &mut Message) -> Result<()> {
        let set: IrqSet = fixed(message)?;
        let data = &message.body[size_of::<IrqSet>()..];
        // Rule: DATA_BOOL carries one byte per interrupt of the range.
        if set.flags & IRQ_SET_DATA_BOOL != 0 && data.len() < set.count as usize {
            return Err(Error::BodyTooShort {
                command: command::DEVICE_SET_IRQS,
                actual: message.body.len(),
                needed: size_of::<IrqSet>() + set.count as usize,
            });
        }
        self.interrupts.set_irqs(IrqSetRequest {
            set,
            bools: data,
            fds: std::mem::take(&mut message.fds),
        })?;
        self.with_device(|device, ctx| {
            device.interrupts_changed(ctx, set.index, set.start, set.count)
        });
        self.channel.reply(&message.header, &[], &[])
    }

    /// Checks a region access and returns the region's index.
    fn check_access(&self, index: u32, offset: u64, count: u64, write: bool) -> Result<()> {
        let region = self
            .description
            .regions
            .get(index as usize)
            .ok_or(Error::RegionIndexOutOfRange(index))?;
        if (write && !region.writable) || (!write && !region.readable) {
            return Err(Error::RegionNotAccessible(index));
        }
        let max = u64::from(self.channel.ours.max_data_xfer_size);
        if count > max {
            return Err(Error::TransferTooLarge { count, max });
        }
        if offset
            .checked_add(count)
            .is_none_or(|end| end > region.size)
        {
            return Err(Error::RegionAccessOutOfRange {
                index,
                offset,
                count,
            });
        }
        Ok(())
    }

    /// Reads a checked range of a region, answering emulated config registers itself.
    fn read_region(&mut self, index: u32, offset: u64, data: &mut [u8]) -> Result<()> {
        if index == PCI_CONFIG_REGION_INDEX && self.description.emulate_bars {
            let mut done = 0usize;
            for (run_offset, len, emulated) in split_config_access(offset, data.len()) {
                let part = &mut data[done..done + len];
                if emulated {
                    for (i, byte) in part.iter_mut().enumerate() {
                        *byte = self.bars.read_byte(run_offset + i as u64);
                    }
                } else {
                    self.with_device(|device, ctx| {
                        device.region_read(ctx, index, run_offset, part)
                    })
                    .map_err(Error::Device)?;
                }
                done += len;
            }
            return Ok(());
        }
        self.with_device(|device, ctx| device.region_read(ctx, index, offset, data))
            .map_err(Error::Device)
    }

    /// Writes a checked range of a region, keeping emulated config registers itself.
    fn write_region(&mut self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        if index == PCI_CONFIG_REGION_INDEX && self.description.emulate_bars {
            let mut done = 0usize;
            for (run_offset, len, emulated) in split_config_access(offset, data.len()) {
                let part = &data[done..done + len];
                if emulated {
                    for (i, &byte) in part.iter().enumerate() {
                        self.bars.write_byte(run_offset + i as u64, byte);
                    }
                } else {
                    self.with_device(|device, ctx| {
                        device.region_write(ctx, index, run_offset, part)
                    })
                    .map_err(Error::Device)?;
                }
                done += len;
            }
            return Ok(());
        }
        self.with_device(|device, ctx| device.region_write(ctx, index, offset, data))
            .map_err(Error::Device)
    }

    fn region_read(&mut self, message: &mut Message) -> Result<()> {
        let access: RegionAccess = fixed(message)?;
        self.check_access(access.region, access.offset, u64::from(access.count), false)?;
        let mut data = zeroed(access.count as usize)?;
        self.read_region(access.region, access.offset, &mut data)?;
        self.channel
            .reply(&message.header, &[access.as_bytes(), &data], &[])
    }

    fn region_write(&mut self, message: &mut Message) -> Result<()> {
        let access: RegionAccess = fixed(message)?;
        let data = &message.body[size_of::<RegionAccess>()..];
        // Rule: count says exactly how much data follows.
        if data.len() != access.count as usize {
            return Err(Error::BodyTooShort {
                command: command::REGION_WRITE,
                actual: message.body.len(),
                needed: size_of::<RegionAccess>() + access.count as usize,
            });
        }
        self.check_access(access.region, access.offset, u64::from(access.count), true)?;
        self.write_region(access.region, access.offset, data)?;
        self.channel
            .reply(&message.header, &[access.as_bytes()], &[])
    }

    fn region_write_multi(&mut self, message: &mut Message) -> Result<()> {
        if !self.channel.ours.write_multiple {
            return Err(Error::NotSupported(command::REGION_WRITE_MULTI));
        }
        let multi: WriteMultiHeader = fixed(message)?;
        // Rule: at most QEMU's 200 entries, all present in the body.
        let entries = &message.body[size_of::<WriteMultiHeader>()..];
        let needed = size_of::<WriteMultiHeader>() as u64
            + multi.wr_cnt.min(WRITE_MULTI_MAX + 1) * size_of::<WriteMultiEntry>() as u64;
        if multi.wr_cnt > WRITE_MULTI_MAX || (message.body.len() as u64) < needed {
            return Err(Error::BodyTooShort {
                command: command::REGION_WRITE_MULTI,
                actual: message.body.len(),
                needed: needed as usize,
            });
        }
        let (entries, _) =
            <[WriteMultiEntry]>::ref_from_prefix_with_elems(entries, multi.wr_cnt as usize)
                .map_err(|_| Error::BodyTooShort {
                    command: command::REGION_WRITE_MULTI,
                    actual: message.body.len(),
                    needed: needed as usize,
                })?;
        for entry in entries {
            // Rule: an entry carries at most 8 bytes.
            if entry.count as usize > WRITE_MULTI_DATA {
                return Err(Error::TransferTooLarge {
                    count: u64::from(entry.count),
                    max: WRITE_MULTI_DATA as u64,
                });
            }
            self.check_access(entry.region, entry.offset, u64::from(entry.count), true)?;
            self.write_region(
                entry.region,
                entry.offset,
                &entry.data[..entry.count as usize],
            )?;
        }
        self.channel
            .reply(&message.header, &[multi.as_bytes()], &[])
    }

    fn device_reset(&mut self, message: &mut Message) -> Result<()> {
        self.device.reset().map_err(Error::Device)?;
        self.bars.reset();
        self.channel.reply(&message.header, &[], &[])
    }

    fn device_feature(&mut self, message: &mut Message) -> Result<()> {
        let request: DeviceFeature = fixed(message)?;
        check_argsz(request.argsz, size_of::<DeviceFeature>())?;
        let data = self
            .device
            .device_feature(request.flags, &message.body[size_of::<DeviceFeature>()..])
            .map_err(Error::Device)?;
        let reply = DeviceFeature {
            argsz: (size_of::<DeviceFeature>() + data.len()) as u32,
            flags: request.flags,
        };
        let room = request.argsz as usize - size_of::<DeviceFeature>();
        let data = &data[..data.len().min(room)];
        self.channel
            .reply(&message.header, &[reply.as_bytes(), data], &[])
    }

    fn mig_data_read(&mut self, message: &mut Message) -> Result<()> {
        let request: MigDataAccess = fixed(message)?;
        check_argsz(request.argsz, size_of::<MigDataAccess>())?;
        let max = self.channel.ours.max_data_xfer_size;
        if request.size > max {
            return Err(Error::TransferTooLarge {
                count: u64::from(request.size),
                max: u64::from(max),
            });
        }
        let mut data = self
            .device
            .migration_data_read(request.size)
            .map_err(Error::Device)?;
        let room = request.argsz as usize - size_of::<MigDataAccess>();
        data.truncate(room.min(request.size as usize));
        let reply = MigDataAccess {
            argsz: (size_of::<MigDataAccess>() + data.len()) as u32,
            size: data.len() as u32,
        };
        self.channel
            .reply(&message.header, &[reply.as_bytes(), &data], &[])
    }

    fn mig_data_write(&mut self, message: &mut Message) -> Result<()> {
        let request: MigDataAccess = fixed(message)?;
        let data = &message.body[size_of::<MigDataAccess>()..];
        if data.len() != request.size as usize {
            return Err(Error::BodyTooShort {
                command: command::MIG_DATA_WRITE,
                actual: message.body.len(),
                needed: size_of::<MigDataAccess>() + request.size as usize,
            });
        }
        self.device
            .migration_data_write(data)
            .map_err(Error::Device)?;
        let reply = MigDataAccess {
            argsz: size_of::<MigDataAccess>() as u32,
            size: request.size,
        };
        self.channel
            .reply(&message.header, &[reply.as_bytes()], &[])
    }
}
