// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A minimal modern virtio-pci driver over the rust-vmm vfio-user client (cloud-hypervisor's),
//! for checks without a guest. It finds the common and notify structures from the vendor
//! capabilities in config space, so it drives any virtio-pci device, crosvm's included. One
//! split queue of 16 entries lives in a 4 MiB memfd the client shares with DMA_MAP.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use vfio_user::Client;
use vfio_user_server::protocol::IRQ_SET_ACTION_TRIGGER;
use vfio_user_server::protocol::IRQ_SET_DATA_EVENTFD;
use vfio_user_server::protocol::PCI_CONFIG_REGION_INDEX;
use vfio_user_server::protocol::PCI_MSIX_IRQ_INDEX;
use vfio_user_server::sys;

pub const RAM_SIZE: u64 = 4 << 20;
pub const DESC: u64 = 0x1000;
pub const AVAIL: u64 = 0x2000;
pub const USED: u64 = 0x3000;
pub const BUFFERS: u64 = 0x10000;
const QUEUE_SIZE: u16 = 16;
const DESC_F_WRITE: u16 = 2;
/// The vector queue 0 interrupts on.
const QUEUE_VECTOR: usize = 1;

/// Where a virtio structure lives: a BAR (region index) and an offset in it.
#[derive(Clone, Copy, Debug)]
struct Structure {
    bar: u32,
    offset: u64,
}

pub struct Driver {
    pub client: Client,
    /// The driver's memory, shared with the device.
    pub ram: File,
    vectors: Vec<OwnedFd>,
    common: Structure,
    notify: Structure,
    notify_multiplier: u32,
    next_avail: u16,
}

impl Driver {
    /// Connects, shares its memory, and brings the device to DRIVER_OK with queue 0 on MSI-X
    /// vector 1.
    pub fn start(socket: &Path) -> Result<Driver> {
        let mut client = Client::new(socket).map_err(|e| anyhow::anyhow!("connecting: {e:?}"))?;
        let mut config = [0u8; 256];
        client
            .region_read(PCI_CONFIG_REGION_INDEX, 0, &mut config)
            .map_err(|e| anyhow::anyhow!("reading config space: {e:?}"))?;
        let (common, notify, notify_multiplier) = find_structures(&config)?;
        let ram = sys::memfd(c"driver-ram", RAM_SIZE)?;
        client
            .dma_map(0, 0, RAM_SIZE, ram.as_raw_fd())
            .map_err(|e| anyhow::anyhow!("DMA_MAP: {e:?}"))?;
        let vectors: Vec<OwnedFd> = (0..2)
            .map(|_| sys::eventfd(true))
            .collect::<std::io::Result<_>>()?;
        let raw: Vec<i32> = vectors.iter().map(|fd| fd.as_raw_fd()).collect();
        client
            .set_irqs(
                PCI_MSIX_IRQ_INDEX,
                IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
                0,
                2,
                &raw,
            )
            .map_err(|e| anyhow::anyhow!("SET_IRQS: {e:?}"))?;
        let mut driver = Driver {
            client,
            ram,
            vectors,
            common,
            notify,
            notify_multiplier,
            next_avail: 0,
        };
        driver.set_up_queue()?;
        Ok(driver)
    }

    fn set_up_queue(&mut self) -> Result<()> {
        self.set_status(0)?;
        self.set_status(1 | 2)?; // ACKNOWLEDGE | DRIVER
        self.common_write(0x00, &1u32.to_le_bytes())?; // device_feature_select: bits 32-63
        if self.common_read32(0x04)? & 1 == 0 {
            bail!("the device does not offer VIRTIO_F_VERSION_1");
        }
        self.common_write(0x08, &1u32.to_le_bytes())?;
        self.common_write(0x0c, &1u32.to_le_bytes())?; // VERSION_1
        self.common_write(0x08, &0u32.to_le_bytes())?;
        self.common_write(0x0c, &0u32.to_le_bytes())?;
        self.set_status(1 | 2 | 8)?;
        if self.status()? & 8 == 0 {
            bail!("the device refused FEATURES_OK");
        }
        self.common_write(0x10, &0u16.to_le_bytes())?; // config vector
        self.common_write(0x16, &0u16.to_le_bytes())?; // queue_select
        self.common_write(0x18, &QUEUE_SIZE.to_le_bytes())?;
        self.common_write(0x1a, &(QUEUE_VECTOR as u16).to_le_bytes())?;
        for (offset, address) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
            self.common_write(offset, &address.to_le_bytes())?;
        }
        self.common_write(0x1c, &1u16.to_le_bytes())?; // queue_enable
        self.set_status(1 | 2 | 8 | 4)?; // DRIVER_OK
        Ok(())
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let Structure { bar, offset: base } = self.common;
        self.client
            .region_write(bar, base + offset, data)
            .map_err(|e| anyhow::anyhow!("common config write at {offset:#x}: {e:?}"))
    }

    fn common_read(&mut self, offset: u64, data: &mut [u8]) -> Result<()> {
        let Structure { bar, offset: base } = self.common;
        self.client
            .region_read(bar, base + offset, data)
            .map_err(|e| anyhow::anyhow!("common config read at {offset:#x}: {e:?}"))
    }

    fn common_read32(&mut self, offset: u64) -> Result<u32> {
        let mut data = [0u8; 4];
        self.common_read(offset, &mut data)?;
        Ok(u32::from_le_bytes(data))
    }

    pub fn status(&mut self) -> Result<u8> {
        let mut data = [0u8; 1];
        self.common_read(0x14, &mut data)?;
        Ok(data[0])
    }

    fn set_status(&mut self, status: u8) -> Result<()> {
        self.common_write(0x14, &[status])
    }

    /// Offers one device-writable buffer of `len` bytes at [`BUFFERS`] on queue 0, without
    /// notifying.
    pub fn offer_writable(&mut self, len: u32) -> Result<()> {
        let mut desc = Vec::with_capacity(16);
        desc.extend_from_slice(&BUFFERS.to_le_bytes());
        desc.extend_from_slice(&len.to_le_bytes());
        desc.extend_from_slice(&DESC_F_WRITE.to_le_bytes());
        desc.extend_from_slice(&0u16.to_le_bytes());
        self.ram.write_all_at(&desc, DESC)?;
        let slot = u64::from(self.next_avail % QUEUE_SIZE);
        self.ram
            .write_all_at(&0u16.to_le_bytes(), AVAIL + 4 + slot * 2)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.ram
            .write_all_at(&self.next_avail.to_le_bytes(), AVAIL + 2)?;
        Ok(())
    }

    /// Notifies queue 0.
    pub fn notify(&mut self) -> Result<()> {
        let mut data = [0u8; 2];
        self.common_read(0x1e, &mut data)?; // queue_notify_off
        let offset = u64::from(u16::from_le_bytes(data)) * u64::from(self.notify_multiplier);
        self.client
            .region_write(
                self.notify.bar,
                self.notify.offset + offset,
                &0u16.to_le_bytes(),
            )
            .map_err(|e| anyhow::anyhow!("notify: {e:?}"))
    }

    /// Waits up to 5 s for queue 0's interrupt; true if it came.
    pub fn wait_for_queue_interrupt(&self) -> Result<bool> {
        let vector = self.vectors[QUEUE_VECTOR].as_fd();
        Ok(sys::wait_readable(vector, 5000)? && sys::eventfd_read(vector)? > 0)
    }

    /// The used ring's index.
    pub fn used_index(&self) -> Result<u16> {
        let mut data = [0u8; 2];
        self.ram.read_exact_at(&mut data, USED + 2)?;
        Ok(u16::from_le_bytes(data))
    }
}

/// The common and notify structures (and the notify offset multiplier) from config space.
fn find_structures(config: &[u8; 256]) -> Result<(Structure, Structure, u32)> {
    let mut common = None;
    let mut notify = None;
    let mut position = usize::from(config[0x34]);
    let mut hops = 0;
    while position != 0 && position + 20 <= config.len() && hops < 48 {
        // Vendor-specific capability: cfg_type at +3, bar at +4, offset at +8.
        if config[position] == 0x09 {
            let structure = Structure {
                bar: u32::from(config[position + 4]),
                offset: u64::from(u32::from_le_bytes(
                    config[position + 8..position + 12]
                        .try_into()
                        .context("offset")?,
                )),
            };
            match config[position + 3] {
                1 => common = Some(structure),
                2 => {
                    let multiplier = u32::from_le_bytes(
                        config[position + 16..position + 20]
                            .try_into()
                            .context("multiplier")?,
                    );
                    notify = Some((structure, multiplier));
                }
                _ => {}
            }
        }
        position = usize::from(config[position + 1]);
        hops += 1;
    }
    match (common, notify) {
        (Some(common), Some((notify, multiplier))) => Ok((common, notify, multiplier)),
        _ => bail!("no virtio common or notify capability in config space"),
    }
}
