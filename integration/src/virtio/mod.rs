// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Test-only virtio devices served over vfio-user: the virtio-pci modern transport and the
//! devices behind it. Rings are handled by rust-vmm's `virtio-queue` over a `vm-memory` view of
//! the client's DMA maps.

pub mod blk;
pub mod pci;
pub mod rng;

use std::io;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// One virtio device behind the transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (1.x, section 5).
    fn device_type(&self) -> u16;
    /// The PCI class code of the function.
    fn class_code(&self) -> u32;
    /// Device-specific feature bits (the transport adds VIRTIO_F_VERSION_1).
    fn features(&self) -> u64;
    /// Maximum size of each queue; the number of queues is the slice's length.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Handles the available buffers of queue `index`; returns whether any was used, so that
    /// the transport interrupts the driver.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        memory: &GuestMemoryMmap,
    ) -> io::Result<bool>;
    /// The driver reset the device.
    fn reset(&mut self) {}
}
