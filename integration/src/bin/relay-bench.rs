// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What the GPU's Wayland relay costs a client's messages, against a direct connection to the
//! same compositor stand-in, in the same run:
//!
//! - direct: the client connected straight to the stand-in;
//! - relay: through `SocketRelay` with no filter (the copying mode; its pool's file is not placed
//!   in the region, so that nothing is copied and the figures are the relay's own);
//! - relay+rewrite: through `SocketRelay` with `wl_shm_rewrite` following the stream (the
//!   default for cross-domain), after a rewritten pool and buffer were made.
//!
//! Each is measured as round trips (a `wl_surface.commit`-sized request, then a `wl_display.sync`
//! answered by the stand-in) and as a stream (requests sent back to back, the stand-in answering
//! once it has them all). The peers alternate, `--rounds` times each; the table gives medians and
//! the spread (min-max) over rounds, and each relay's median as a ratio of direct's. It asserts
//! nothing about speed.
//!
//!     cargo run --release -p integration --bin relay-bench [-- --rounds 5]

use std::io::IoSlice;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use guest_programs::wayland::Request;
use integration::stats::Spread;
use vfio_user_server::sys;
use vfio_user_server::FilterFactory;
use vfio_user_server::ShadowMemory;
use vfio_user_server::SocketRelay;
use vfio_user_server::StreamFilter;
use wl_shm_rewrite::Rewriter;

const ROUND_TRIPS: u32 = 20_000;
const STREAMED: u32 = 200_000;
/// wl_display.sync: answered by the stand-in with one event.
const SYNC_OPCODE: u16 = 0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Peer {
    Direct,
    Relay,
    RelayRewrite,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Direct => "direct",
            Peer::Relay => "relay",
            Peer::RelayRewrite => "relay+rewrite",
        }
    }
}

/// One round's figures for one peer.
#[derive(Clone, Copy, Debug)]
struct Figures {
    round_trip_us: f64,
    streamed_per_s: f64,
}

/// A message of `args`, words only.
fn request(object: u32, opcode: u16, args: &[u32]) -> Vec<u8> {
    args.iter()
        .fold(Request::new(object, opcode), |r, &a| r.uint(a))
        .finish()
}

/// A compositor stand-in: reads requests, and answers each wl_display.sync with an event.
fn stand_in(listener: UnixListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    let Ok(received) = sys::recv_with_fds(stream.as_fd(), &mut buf) else {
                        return;
                    };
                    if received.len == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..received.len]);
                    let mut at = 0;
                    while pending.len() - at >= 8 {
                        let word = |i: usize| {
                            u32::from_ne_bytes(pending[at + i..at + i + 4].try_into().unwrap())
                        };
                        let (object, size) = (word(0), (word(4) >> 16) as usize);
                        if size < 8 || pending.len() - at < size {
                            break;
                        }
                        if object == 1 && word(4) as u16 == SYNC_OPCODE {
                            let done = request(word(8), 0, &[0]);
                            if sys::send_with_fds(stream.as_fd(), &[IoSlice::new(&done)], &[])
                                .is_err()
                            {
                                return;
                            }
                        }
                        at += size;
                    }
                    pending.drain(..at);
                }
            });
        }
    });
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn send(&self, bytes: &[u8]) -> Result<()> {
        let mut sent = 0;
        while sent < bytes.len() {
            sent += sys::send_with_fds(self.stream.as_fd(), &[IoSlice::new(&bytes[sent..])], &[])?;
        }
        Ok(())
    }

    /// Waits for one 12-byte event.
    fn wait_done(&mut self) -> Result<()> {
        let mut got = 0;
        while got < 12 {
            let received = sys::recv_with_fds(self.stream.as_fd(), &mut self.buf[got..12])?;
            if received.len == 0 {
                bail!("the stand-in closed");
            }
            got += received.len;
        }
        Ok(())
    }
}

fn measure(client: &mut Client) -> Result<Figures> {
    let commit = request(20, 6, &[]);
    let sync = request(1, SYNC_OPCODE, &[30]);
    let one = [commit.clone(), sync.clone()].concat();
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        client.send(&one)?;
        client.wait_done()?;
    }
    let round_trip_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND_TRIPS);
    let batch: Vec<u8> = (0..1000).flat_map(|_| commit.clone()).collect();
    let start = Instant::now();
    for _ in 0..STREAMED / 1000 {
        client.send(&batch)?;
    }
    client.send(&sync)?;
    client.wait_done()?;
    let streamed_per_s = f64::from(STREAMED) / start.elapsed().as_secs_f64();
    Ok(Figures {
        round_trip_us,
        streamed_per_s,
    })
}

/// A connection to `path` that has made a wl_shm pool of a blob placed in `shadow` and a buffer
/// in it, so that a rewriting relay has something to follow.
fn connect(path: &Path, blob: &std::fs::File) -> Result<Client> {
    let stream = UnixStream::connect(path).with_context(|| format!("{}", path.display()))?;
    let mut client = Client {
        stream,
        buf: vec![0u8; 64],
    };
    let bind = Request::new(2, 0)
        .uint(1)
        .string("wl_shm")
        .uint(1)
        .uint(3)
        .finish();
    let setup = [
        request(1, 1, &[2]),
        bind,
        request(3, 0, &[4, 0x10000]),
        request(4, 0, &[5, 0, 64, 64, 256, 1]),
        request(1, SYNC_OPCODE, &[30]),
    ]
    .concat();
    sys::send_with_fds(
        client.stream.as_fd(),
        &[IoSlice::new(&setup)],
        &[blob.as_fd()],
    )?;
    client.wait_done()?;
    Ok(client)
}

fn main() -> Result<()> {
    let mut rounds = 5u32;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [flag, value] if flag == "--rounds" => rounds = value.parse()?,
        _ => bail!("usage: relay-bench [--rounds N]"),
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stand_in_path = dir.join("compositor");
    stand_in(UnixListener::bind(&stand_in_path)?);
    let shadow = ShadowMemory::new();
    shadow.region_mmap("relay-bench", 1 << 20)?;
    let blob = sys::memfd(c"blob", 0x10000)?;
    shadow.map(0x10000, blob.as_fd(), 0, 0x10000, true)?;
    let unplaced = sys::memfd(c"unplaced", 0x10000)?;
    let plain = SocketRelay::start(&dir.join("relay"), &stand_in_path, shadow.clone())?;
    let filters: FilterFactory = Arc::new(|| Box::new(Rewriter::new()) as Box<dyn StreamFilter>);
    let rewriting = SocketRelay::start_filtered(
        &dir.join("relay-rewrite"),
        &stand_in_path,
        shadow.clone(),
        Some(filters),
    )?;
    let peers = [
        (Peer::Direct, stand_in_path.clone()),
        (Peer::Relay, plain.path().to_path_buf()),
        (Peer::RelayRewrite, rewriting.path().to_path_buf()),
    ];
    let mut results: Vec<Vec<Figures>> = vec![Vec::new(); peers.len()];
    for round in 0..rounds {
        for (i, (peer, path)) in peers.iter().enumerate() {
            let file = if *peer == Peer::Relay {
                &unplaced
            } else {
                &blob
            };
            let mut client = connect(path, file)?;
            let figures = measure(&mut client)?;
            eprintln!("round {round}, {}: {figures:?}", peer.name());
            results[i].push(figures);
        }
    }
    println!(
        "{ROUND_TRIPS} round trips (commit + sync) and {STREAMED} streamed 8-byte requests per \
         round; medians over {rounds} alternating rounds (min-max)"
    );
    println!(
        "{:<14} {:>26} {:>10} {:>30} {:>10}",
        "peer", "round trip us", "x direct", "streamed requests/s", "x direct"
    );
    let direct_rt = Spread::of(&results[0], |f| f.round_trip_us).median;
    let direct_st = Spread::of(&results[0], |f| f.streamed_per_s).median;
    for (i, (peer, _)) in peers.iter().enumerate() {
        let rt = Spread::of(&results[i], |f| f.round_trip_us);
        let st = Spread::of(&results[i], |f| f.streamed_per_s);
        println!(
            "{:<14} {:>26} {:>10.2} {:>30} {:>10.2}",
            peer.name(),
            format!("{:.1} ({:.1}-{:.1})", rt.median, rt.min, rt.max),
            rt.median / direct_rt,
            format!("{:.0} ({:.0}-{:.0})", st.median, st.min, st.max),
            st.median / direct_st,
        );
    }
    drop(plain);
    drop(rewriting);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
