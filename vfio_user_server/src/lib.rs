// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The server side of the vfio-user protocol (QEMU `docs/interop/vfio-user.rst`): a PCI device
//! lives in this process and a VMM (QEMU's `vfio-user-pci`, cloud-hypervisor's `--user-device`)
//! drives it over a unix socket.
//!
//! A device implements [`Device`]; a [`Server`] accepts clients on a [`Listener`] and runs a
//! [`Connection`] per client. The crate handles framing and fd passing, version negotiation,
//! the DMA table with bounded guest-memory access ([`GuestMemory`]), the IRQ table
//! ([`Interrupts`]), region info with sparse mmaps, ioeventfds, and BAR sizing in config space.
//! For host-visible memory whose files come and go while the guest runs (virtio-gpu blobs),
//! [`ShadowMemory`] backs a whole region with one mappable file kept coherent by copies, and
//! [`SocketRelay`] brings the files a peer holds up to date before each message it gets, or,
//! with a [`StreamFilter`] that understands the peer's protocol, lends the peer the region's own
//! file so that nothing needs copying. A region that is one file for its whole life (a
//! virtio-pmem image) is a [`FileRegion`], mapped by the client from that file.

#![deny(clippy::undocumented_unsafe_blocks)]

mod capabilities;
mod commands;
mod connection;
mod device;
mod dma;
mod error;
pub mod file_region;
mod guest_memory;
mod irq;
pub mod lease;
mod message;
pub mod pci;
pub mod poll;
pub mod protocol;
mod region;
pub mod region_map;
mod relay;
mod server;
pub mod shadow;
pub mod sys;

pub use capabilities::ClientCapabilities;
pub use capabilities::ServerCapabilities;
pub use connection::Connection;
pub use connection::Pollable;
pub use connection::Status;
pub use device::BarType;
pub use device::Device;
pub use device::DeviceContext;
pub use device::DeviceDescription;
pub use device::IoEventFd;
pub use device::RegionDescription;
pub use device::RegionMmap;
pub use dma::DmaMapInfo;
pub use error::Disposition;
pub use error::Error;
pub use error::Result;
pub use file_region::FileRegion;
pub use guest_memory::GuestMemory;
pub use guest_memory::GuestSlice;
pub use irq::EventfdId;
pub use irq::Interrupts;
pub use irq::IrqCounts;
pub use irq::IrqSetRequest;
pub use lease::Placement;
pub use lease::SharedRegion;
pub use message::MemoryTransport;
pub use message::Transport;
pub use poll::AdaptivePoll;
pub use region::InvalidDescription;
pub use region_map::RegionMapOutcome;
pub use region_map::RegionMapQueue;
pub use region_map::RegionMapRequest;
pub use relay::FilterFactory;
pub use relay::Filtered;
pub use relay::SocketRelay;
pub use relay::StreamFilter;
pub use server::Listener;
pub use server::Server;
pub use shadow::ShadowMemory;
