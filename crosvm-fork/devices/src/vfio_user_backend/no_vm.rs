// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A `Vm` that is not there, for `VirtioDeviceModule::create`, which takes one although most
//! modules (rng among them) only read the protection type. Every operation fails with ENOTSUP.

use base::AsRawDescriptor;
use base::Event;
use base::MappedRegion;
use base::Protection;
use base::Result;
use base::SafeDescriptor;
use hypervisor::BalloonEvent;
use hypervisor::ClockState;
use hypervisor::Datamatch;
use hypervisor::DeviceKind;
use hypervisor::HypervisorKind;
use hypervisor::IoEventAddress;
use hypervisor::MemCacheType;
use hypervisor::MemSlot;
use hypervisor::Vm;
use hypervisor::VmCap;
use vm_memory::GuestAddress;
use vm_memory::GuestMemory;

/// The VM a device served over vfio-user does not have: guest memory belongs to the client.
pub struct NoVm {
    memory: GuestMemory,
}

impl NoVm {
    pub fn new() -> anyhow::Result<NoVm> {
        Ok(NoVm {
            memory: GuestMemory::new(&[])?,
        })
    }
}

fn unsupported<T>() -> Result<T> {
    Err(base::Error::new(libc::ENOTSUP))
}

impl Vm for NoVm {
    fn try_clone_descriptor(&self) -> Result<SafeDescriptor> {
        unsupported()
    }

    fn hypervisor_kind(&self) -> HypervisorKind {
        HypervisorKind::Kvm
    }

    fn check_capability(&self, _c: VmCap) -> bool {
        false
    }

    fn get_guest_phys_addr_bits(&self) -> u8 {
        48
    }

    fn get_memory(&self) -> &GuestMemory {
        &self.memory
    }

    fn add_memory_region(
        &self,
        _guest_addr: GuestAddress,
        _mem_region: Box<dyn MappedRegion>,
        _read_only: bool,
        _log_dirty_pages: bool,
        _cache: MemCacheType,
    ) -> Result<MemSlot> {
        unsupported()
    }

    fn msync_memory_region(&self, _slot: MemSlot, _offset: usize, _size: usize) -> Result<()> {
        unsupported()
    }

    fn madvise_pageout_memory_region(
        &self,
        _slot: MemSlot,
        _offset: usize,
        _size: usize,
    ) -> Result<()> {
        unsupported()
    }

    fn madvise_remove_memory_region(
        &self,
        _slot: MemSlot,
        _offset: usize,
        _size: usize,
    ) -> Result<()> {
        unsupported()
    }

    fn remove_memory_region(&self, _slot: MemSlot) -> Result<Box<dyn MappedRegion>> {
        unsupported()
    }

    fn create_device(&self, _kind: DeviceKind) -> Result<SafeDescriptor> {
        unsupported()
    }

    fn get_dirty_log(&self, _slot: MemSlot, _dirty_log: &mut [u8]) -> Result<()> {
        unsupported()
    }

    fn register_ioevent(
        &self,
        _evt: Event,
        _addr: IoEventAddress,
        _datamatch: Datamatch,
    ) -> Result<()> {
        unsupported()
    }

    fn unregister_ioevent(
        &self,
        _evt: Event,
        _addr: IoEventAddress,
        _datamatch: Datamatch,
    ) -> Result<()> {
        unsupported()
    }

    fn handle_io_events(&self, _addr: IoEventAddress, _data: &[u8]) -> Result<()> {
        unsupported()
    }

    fn get_pvclock(&self) -> Result<ClockState> {
        unsupported()
    }

    fn set_pvclock(&self, _state: &ClockState) -> Result<()> {
        unsupported()
    }

    fn add_fd_mapping(
        &self,
        _slot: u32,
        _offset: usize,
        _size: usize,
        _fd: &dyn AsRawDescriptor,
        _fd_offset: u64,
        _prot: Protection,
    ) -> Result<()> {
        unsupported()
    }

    fn remove_mapping(&self, _slot: u32, _offset: usize, _size: usize) -> Result<()> {
        unsupported()
    }

    fn handle_balloon_event(&self, _event: BalloonEvent) -> Result<()> {
        unsupported()
    }

    fn enable_hypercalls(&self, _nr: u64, _count: usize) -> Result<()> {
        unsupported()
    }
}
