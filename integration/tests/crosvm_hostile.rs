// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! A hostile client against crosvm's own devices, served by `crosvm device vfio-user-server`
//! built from upstream-patches/: fds that cannot back their maps, the advertised map limit,
//! and a memory file that shrinks under the device while it works. Each case ends in an error
//! reply or a dropped client, and crosvm serves the next client. The checks need no guest; they
//! run when CROSVM_BIN names that crosvm binary and are reported as ignored otherwise:
//!
//!     CROSVM_BIN=/path/to/crosvm cargo test -p integration --test crosvm_hostile

use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::ensure;
use anyhow::Context;
use anyhow::Result;
use integration::checks;
use integration::checks::skip;
use integration::checks::Checked;
use integration::raw_client::RawClient;
use integration::raw_client::Received;
use integration::virtio_driver::Driver;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;
use zerocopy::IntoBytes;

/// What crosvm's server advertises as `max_dma_maps`.
const MAX_DMA_MAPS: u64 = 1024;

/// `crosvm device vfio-user-server ARGS --socket PATH` with its stderr in a file; killed on drop.
struct Crosvm {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Crosvm {
    fn start(args: &[&str]) -> Result<Crosvm> {
        let crosvm = std::env::var_os("CROSVM_BIN").context("CROSVM_BIN")?;
        let dir =
            std::env::temp_dir().join(format!("crosvm-hostile-{}-{}", args[0], std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("server.sock");
        let log = dir.join("server.log");
        let child = Command::new(crosvm)
            .args(["device", "vfio-user-server"])
            .args(args)
            .args(integration::sandbox::jail_args(args[0])?)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting crosvm")?;
        let server = Crosvm {
            child,
            dir,
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while RawClient::connect(&server.socket).is_err() {
            ensure!(
                Instant::now() < deadline,
                "crosvm never listened: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // That probe was a client too: let crosvm see it go.
        std::thread::sleep(Duration::from_millis(200));
        Ok(server)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 5 s for the log to contain `text`.
    fn log_containing(&mut self, text: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(text) {
                return Ok(log);
            }
            if Instant::now() > deadline {
                bail!("crosvm never logged {text:?} ({}): {log}", self.state());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// "running", or how the process ended.
    fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".to_string(),
            Ok(Some(status)) => format!("crosvm ended: {status}"),
            Err(e) => format!("crosvm's state is unknown: {e}"),
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn connect(&self) -> Result<RawClient> {
        let mut client = RawClient::connect(&self.socket)?;
        let reply = client.negotiate()?;
        ensure!(!reply.header.is_error(), "VERSION refused: {reply:?}");
        Ok(client)
    }

    /// Alive, and a new client gets DEVICE_GET_INFO answered.
    fn serving(&mut self) -> Result<()> {
        ensure!(self.alive(), "crosvm died: {}", self.log());
        let reply = self.connect()?.device_info()?;
        ensure!(!reply.header.is_error(), "{reply:?}");
        Ok(())
    }
}

impl Drop for Crosvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dma_map(
    client: &mut RawClient,
    address: u64,
    size: u64,
    offset: u64,
    fd: BorrowedFd,
) -> Result<Received> {
    let map = DmaMap {
        argsz: 32,
        flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
        offset,
        address,
        size,
    };
    Ok(client.call(command::DMA_MAP, map.as_bytes(), &[fd])?)
}

fn refused(reply: &Received, errno: i32) -> Result<()> {
    ensure!(
        reply.header.is_error() && reply.header.error == errno as u32,
        "expected errno {errno}: {reply:?}"
    );
    Ok(())
}

/// Maps past the end of their file, and fds that are not files, get EINVAL.
fn bad_maps_are_refused(server: &mut Crosvm) -> Result<()> {
    let mut client = server.connect()?;
    let small = sys::memfd(c"small", 0x1000)?;
    refused(
        &dma_map(&mut client, 0x100000, 2 << 20, 0, small.as_fd())?,
        libc::EINVAL,
    )?;
    let ram = sys::memfd(c"ram", 2 << 20)?;
    refused(
        &dma_map(&mut client, 0x100000, 0x1000, 4 << 20, ram.as_fd())?,
        libc::EINVAL,
    )?;
    let (pipe, _writer) = std::io::pipe()?;
    refused(
        &dma_map(&mut client, 0x100000, 0x1000, 0, pipe.as_fd())?,
        libc::EINVAL,
    )?;
    server.log_containing("of its file runs past the file's end (0x1000 bytes)")?;
    server.log_containing("is a pipe, not a regular file")?;
    drop(client);
    server.serving()
}

/// The advertised limit holds, and a disconnect gives it all back, twice over.
fn the_map_limit_holds_and_is_released(server: &mut Crosvm) -> Result<()> {
    let ram = sys::memfd(c"ram", (MAX_DMA_MAPS + 1) * 0x1000)?;
    for round in 0..2 {
        let mut client = server.connect()?;
        for i in 0..=MAX_DMA_MAPS {
            let reply = dma_map(
                &mut client,
                0x1000_0000 + i * 0x2000,
                0x1000,
                i * 0x1000,
                ram.as_fd(),
            )?;
            if i < MAX_DMA_MAPS {
                ensure!(
                    !reply.header.is_error(),
                    "round {round}, map {i}: {reply:?}"
                );
            } else {
                refused(&reply, libc::ENOSPC)?;
            }
        }
        ensure!(!client.device_info()?.header.is_error());
        drop(client);
        std::thread::sleep(Duration::from_millis(200));
    }
    server.log_containing("more than 1024 DMA maps")?;
    server.serving()
}

/// The driver's memory file shrinks under the running device: crosvm logs the fault, drops that
/// client and drives the device for the next.
fn shrinking_memory_drops_only_that_client(server: &mut Crosvm, rng: bool) -> Result<()> {
    let mut driver = Driver::start(&server.socket)?;
    if rng {
        driver.offer_writable(16)?;
        driver.notify()?;
        ensure!(
            driver.wait_for_queue_interrupt()?,
            "no interrupt for the first request"
        );
        ensure!(driver.used_index()? == 1);
    }
    // The rings live at 0x1000..0x4000: every page past the first is gone.
    driver.ram.set_len(0x1000)?;
    // The reply may be lost with the connection.
    let _ = driver.notify();
    let log = server.log_containing("guest memory fault at")?;
    ensure!(
        log.contains("guest memory fault at 0x2"),
        "the fault is in the avail ring: {log}"
    );
    let mut data = [0u8; 4];
    if driver
        .client
        .region_read(PCI_CONFIG_REGION_INDEX, 0, &mut data)
        .is_ok()
    {
        bail!("the connection is still up after the fault");
    }
    ensure!(server.alive(), "crosvm died: {log}");
    drop(driver);
    let mut driver = Driver::start(&server.socket)?;
    ensure!(
        driver.status()? & 4 == 4,
        "the next client's driver is not OK"
    );
    if rng {
        driver.offer_writable(16)?;
        driver.notify()?;
        ensure!(
            driver.wait_for_queue_interrupt()?,
            "no interrupt for the next client"
        );
    }
    Ok(())
}

fn crosvm_present() -> Checked {
    if std::env::var_os("CROSVM_BIN").is_none() {
        return Err(skip(
            "needs CROSVM_BIN: a crosvm built with upstream-patches/, as the README says",
        ));
    }
    Ok(())
}

fn crosvm_rng_survives_a_hostile_client() -> Checked {
    crosvm_present()?;
    let mut server = Crosvm::start(&["rng"])?;
    bad_maps_are_refused(&mut server)?;
    the_map_limit_holds_and_is_released(&mut server)?;
    shrinking_memory_drops_only_that_client(&mut server, true)?;
    Ok(())
}

fn crosvm_block_survives_a_hostile_client() -> Checked {
    crosvm_present()?;
    let disk = tempfile_with(1 << 20)?;
    let mut server = Crosvm::start(&["block", "--file", disk.to_str().context("path")?])?;
    bad_maps_are_refused(&mut server)?;
    the_map_limit_holds_and_is_released(&mut server)?;
    shrinking_memory_drops_only_that_client(&mut server, false)?;
    std::fs::remove_file(&disk)?;
    Ok(())
}

/// A zero-filled file of `size` bytes in the temporary directory.
fn tempfile_with(size: usize) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("crosvm-hostile-disk-{}", std::process::id()));
    std::fs::write(&path, vec![0u8; size])?;
    Ok(path)
}

fn main() {
    checks::run(&[
        (
            "crosvm_rng_survives_a_hostile_client",
            crosvm_rng_survives_a_hostile_client,
        ),
        (
            "crosvm_block_survives_a_hostile_client",
            crosvm_block_survives_a_hostile_client,
        ),
    ]);
}
