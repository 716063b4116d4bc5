// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! virtio-rng that produces a known stream, so that a guest can check what it reads.
//!
//! Byte `n` of the stream (counted across all requests since reset) is `n mod 251`: consecutive
//! bytes step by one and wrap at 251, a prime, so the pattern cannot be confused with a buffer
//! of 256-byte counters or with zeroes.

use std::io;
use std::io::Write;

use virtio_queue::Queue;
use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;

use super::VirtioDevice;

pub const VIRTIO_ID_RNG: u16 = 4;
pub const PATTERN_MODULUS: u64 = 251;
const QUEUE_SIZES: [u16; 1] = [256];

#[derive(Default)]
pub struct Rng {
    /// Bytes produced since reset.
    position: u64,
}

impl Rng {
    pub fn new() -> Rng {
        Rng::default()
    }

    /// The next `len` bytes of the stream.
    fn next_bytes(&mut self, len: usize) -> Vec<u8> {
        let start = self.position;
        self.position += len as u64;
        (start..start + len as u64)
            .map(|n| (n % PATTERN_MODULUS) as u8)
            .collect()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_RNG
    }

    fn class_code(&self) -> u32 {
        0xff0000
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
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
            let mut writer = chain.writer(memory).map_err(io::Error::other)?;
            let bytes = self.next_bytes(writer.available_bytes());
            writer.write_all(&bytes)?;
            queue
                .add_used(memory, head, bytes.len() as u32)
                .map_err(io::Error::other)?;
            used = true;
        }
        Ok(used)
    }

    fn reset(&mut self) {
        self.position = 0;
    }
}
