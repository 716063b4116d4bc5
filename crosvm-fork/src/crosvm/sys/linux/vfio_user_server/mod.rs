// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! `crosvm device vfio-user-server DEVICE`: serves one of crosvm's devices to another VMM over
//! vfio-user (QEMU's `vfio-user-pci`, cloud-hypervisor's `--user-device`).
//!
//! One file per device: its options, as `crosvm run` and the vhost-user backends spell them,
//! and how its device is built for each client.

#[cfg(feature = "balloon")]
mod balloon;
mod block;
mod console;
mod fs;
#[cfg(feature = "gpu")]
mod gpu;
mod input;
#[cfg(feature = "net")]
mod net;
mod p9;
mod pmem;
mod rng;
mod sandbox;
mod scsi;
#[cfg(feature = "audio")]
mod snd;
mod vsock;
#[cfg(any(feature = "gpu", feature = "virtio_wl"))]
mod wayland_relays;
#[cfg(feature = "virtio_wl")]
mod wl;

use std::time::Duration;

use anyhow::bail;
use argh::FromArgs;

#[derive(FromArgs)]
#[argh(subcommand, name = "vfio-user-server")]
/// Serve a crosvm device over vfio-user, to QEMU (vfio-user-pci) or cloud-hypervisor
/// (--user-device); every client gets a freshly built device
pub struct Options {
    #[argh(option, arg_name = "MICROSECONDS", default = "0")]
    /// after each message, spin on the client's socket for up to this long before sleeping
    /// (adaptive: less while the client is idle; 0, the default, never spins). For clients that
    /// wait for each reply, as cloud-hypervisor does for BAR writes; costs server CPU
    poll_us: u64,
    #[argh(subcommand)]
    device: DeviceOptions,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum DeviceOptions {
    Rng(rng::RngOptions),
    Block(block::BlockOptions),
    Console(console::ConsoleOptions),
    #[cfg(feature = "net")]
    Net(net::NetOptions),
    #[cfg(feature = "gpu")]
    Gpu(gpu::GpuOptions),
    #[cfg(feature = "audio")]
    Snd(snd::SndOptions),
    Input(input::InputOptions),
    Fs(fs::FsOptions),
    Vsock(vsock::VsockOptions),
    Scsi(scsi::ScsiOptions),
    P9(p9::P9Options),
    Pmem(pmem::PmemOptions),
    #[cfg(feature = "balloon")]
    Balloon(balloon::BalloonOptions),
    #[cfg(feature = "virtio_wl")]
    Wl(wl::WlOptions),
}

/// `--socket` is a synonym of `--socket-path`, as for crosvm's vhost-user backends.
fn socket_path(
    socket: Option<String>,
    socket_path: Option<String>,
) -> anyhow::Result<Option<String>> {
    match (socket, socket_path) {
        (Some(_), Some(_)) => bail!("--socket and --socket-path cannot both be given"),
        (socket, socket_path) => Ok(socket_path.or(socket)),
    }
}

pub fn run_vfio_user_server(options: Options) -> anyhow::Result<()> {
    let poll = Duration::from_micros(options.poll_us);
    match options.device {
        DeviceOptions::Rng(options) => rng::run(options, poll),
        DeviceOptions::Block(options) => block::run(options, poll),
        DeviceOptions::Console(options) => console::run(options, poll),
        #[cfg(feature = "net")]
        DeviceOptions::Net(options) => net::run(options, poll),
        #[cfg(feature = "gpu")]
        DeviceOptions::Gpu(options) => gpu::run(options, poll),
        #[cfg(feature = "audio")]
        DeviceOptions::Snd(options) => snd::run(options, poll),
        DeviceOptions::Input(options) => input::run(options, poll),
        DeviceOptions::Fs(options) => fs::run(options, poll),
        DeviceOptions::Vsock(options) => vsock::run(options, poll),
        DeviceOptions::Scsi(options) => scsi::run(options, poll),
        DeviceOptions::P9(options) => p9::run(options, poll),
        DeviceOptions::Pmem(options) => pmem::run(options, poll),
        #[cfg(feature = "balloon")]
        DeviceOptions::Balloon(options) => balloon::run(options, poll),
        #[cfg(feature = "virtio_wl")]
        DeviceOptions::Wl(options) => wl::run(options, poll),
    }
}
