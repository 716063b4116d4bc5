// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The rewriter on any stream a guest can send its compositor, and any events back: built from
//! the input as Wayland-shaped messages (small object ids and opcodes, small or arbitrary
//! arguments, sometimes a broken header), cut into receives anywhere, with fds of placed blobs,
//! of an unplaced file and of a blob placed beyond int32's reach. Nothing may panic, and every
//! byte and fd must come out, once.

#![no_main]

use std::io;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vfio_user_server::sys;
use vfio_user_server::Placement;
use vfio_user_server::SharedRegion;
use wl_shm_rewrite::Rewriter;

/// The region's file and four files: placed at 0x10000 and 0x40000, unplaced, and placed at
/// 3 GiB.
struct Files {
    region: OwnedFd,
    files: Vec<(OwnedFd, Option<Placement>)>,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let file = |len| OwnedFd::from(sys::memfd(c"fuzz", len).expect("memfd"));
        let placed = |offset, len| Some(Placement { offset, len });
        Files {
            region: file(0x100000),
            files: vec![
                (file(0x8000), placed(0x10000, 0x8000)),
                (file(0x4000), placed(0x40000, 0x4000)),
                (file(0x4000), None),
                (file(0x1000), placed(3 << 30, 0x1000)),
            ],
        }
    })
}

struct Region;

impl SharedRegion for Region {
    fn lend(&self, fd: BorrowedFd) -> Option<Placement> {
        let identity = sys::file_identity(fd).ok()?;
        files()
            .files
            .iter()
            .find(|(file, _)| sys::file_identity(file.as_fd()).ok() == Some(identity))
            .and_then(|(_, placement)| *placement)
    }

    fn region_fd(&self) -> io::Result<OwnedFd> {
        files().region.try_clone()
    }
}

/// Reads the input a byte or a word at a time, zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    fn word(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn message(input: &mut Input) -> Vec<u8> {
    let object = u32::from(input.byte() % 24);
    let opcode = u32::from(input.byte() % 8);
    let args: Vec<u32> = (0..input.byte() % 7)
        .map(|_| match input.byte() % 4 {
            0 => u32::from(input.byte() % 24),
            1 => u32::from(input.byte()) << 12,
            _ => input.word(),
        })
        .collect();
    let mut size = 8 + 4 * args.len() as u32;
    if input.byte() == 0xff {
        size = u32::from(input.byte());
    }
    let mut bytes = object.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&((size << 16) | opcode).to_ne_bytes());
    for arg in args {
        bytes.extend_from_slice(&arg.to_ne_bytes());
    }
    bytes
}

fn bind(interface: &str, id: u32) -> Vec<u8> {
    let mut text = interface.as_bytes().to_vec();
    text.push(0);
    let len = text.len() as u32;
    text.resize(text.len().div_ceil(4) * 4, 0);
    let mut bytes = 2u32.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&1u32.to_ne_bytes());
    bytes.extend_from_slice(&len.to_ne_bytes());
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(&1u32.to_ne_bytes());
    bytes.extend_from_slice(&id.to_ne_bytes());
    let size = bytes.len() as u32;
    bytes[4..8].copy_from_slice(&(size << 16).to_ne_bytes());
    bytes
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut rewriter = Rewriter::new();
    // The registry at 2, wl_compositor at 10 and wl_shm at 3, as a client makes them.
    let mut setup = 2u32.to_ne_bytes().to_vec();
    setup.extend_from_slice(&((12u32 << 16) | 1).to_ne_bytes());
    setup.extend_from_slice(&2u32.to_ne_bytes());
    setup.extend(bind("wl_compositor", 10));
    setup.extend(bind("wl_shm", 3));
    setup[0..4].copy_from_slice(&1u32.to_ne_bytes());
    let mut sent = setup.len();
    let mut out = rewriter.process(&setup, Vec::new(), &Region).bytes.len();
    let (mut fds_in, mut fds_out) = (0, 0);
    while !input.is_empty() {
        match input.byte() % 3 {
            0 | 1 => {
                let mut chunk = Vec::new();
                for _ in 0..1 + input.byte() % 4 {
                    chunk.extend(message(&mut input));
                }
                // Cut anywhere: the rest goes in the next receive.
                let cut = usize::from(input.byte()) % (chunk.len() + 1);
                for part in [&chunk[..cut], &chunk[cut..]] {
                    let fds: Vec<OwnedFd> = (0..input.byte() % 3)
                        .map(|_| {
                            let (file, _) = &files().files[usize::from(input.byte() % 4)];
                            file.try_clone().expect("dup")
                        })
                        .collect();
                    fds_in += fds.len();
                    sent += part.len();
                    let chunk = rewriter.process(part, fds, &Region);
                    out += chunk.bytes.len();
                    fds_out += chunk.fds.len();
                }
            }
            _ => {
                let events: Vec<u8> = (0..1 + input.byte() % 3)
                    .flat_map(|_| message(&mut input))
                    .collect();
                rewriter.process_events(&events);
            }
        }
        let _ = rewriter.lent();
    }
    assert_eq!(
        out + rewriter.held_back(),
        sent,
        "every byte goes on, or waits for its end"
    );
    assert_eq!(fds_in, fds_out, "every fd goes on");
});
