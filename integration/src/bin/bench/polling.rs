// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Section 4 of the bench: REGION_WRITE round trips as a synchronous client (cloud-hypervisor's
//! vCPU waiting on each BAR write) sees them, with our server's adaptive polling off and at a few
//! settings, against the echo of the same messages: first with client and servers on one CPU,
//! then on two different CPUs, where polling saves the wakeup of the server's CPU.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use integration::procfs::sched_of;
use integration::serve::REFERENCE_READY;
use integration::serve::SERVE_REFERENCE;
use integration::stats::Spread;

use crate::round_trips;
use crate::start_peer;
use crate::Op;
use crate::Peer;
use crate::Stats;
use crate::READY;
use crate::ROUNDS;
use crate::WARMUP_OPS;

/// The polling maxima measured, in microseconds (0: off).
const POLL_US: &[u64] = &[0, 5, 20, 100];

/// The CPUs for the client and for the servers in section 4b: the first two this process may
/// run on.
pub(crate) fn two_cpus() -> Result<Option<(usize, usize)>> {
    let allowed = crate::allowed_cpus().context("reading this process's CPUs")?;
    Ok(match allowed.as_slice() {
        [client, server, ..] => Some((*client, *server)),
        _ => None,
    })
}

/// Section 4: on the first of `cpus` alone, then the client on the first and the servers on the
/// second.
pub(crate) fn polling_round_trips(
    exe: &Path,
    ops: usize,
    cpus: Option<(usize, usize)>,
) -> Result<()> {
    let Some((client_cpu, server_cpu)) = cpus else {
        println!();
        println!("== 4. round trips with polling: skipped, this process may use one CPU only ==");
        return Ok(());
    };
    crate::pin_to_cpu(client_cpu).context("pinning the client")?;
    for (section, servers_cpu) in [("4a", client_cpu), ("4b", server_cpu)] {
        println!();
        println!(
            "== {section}. REGION_WRITE round trips, client on CPU {client_cpu} and servers on CPU \
             {servers_cpu}, ours with adaptive polling off and at {:?} us: {WARMUP_OPS} warm-up, \
             then {ops} measured per case in {ROUNDS} rounds interleaved ==",
            &POLL_US[1..]
        );
        let mut peers = start_peers(exe, servers_cpu)?;
        measure(&mut peers, ops)?;
    }
    Ok(())
}

/// The echo and ours at every polling setting, on `cpu`.
fn start_peers(exe: &Path, cpu: usize) -> Result<Vec<Peer>> {
    let mut peers = vec![start_peer(
        "echo",
        exe,
        &[OsStr::new("serve-echo")],
        READY,
        false,
        Some(cpu),
    )?];
    for us in POLL_US {
        let name: &'static str = match us {
            0 => "ours",
            5 => "poll 5us",
            20 => "poll 20us",
            100 => "poll 100us",
            _ => "poll",
        };
        let us = us.to_string();
        let args = [
            OsStr::new(SERVE_REFERENCE),
            OsStr::new("--poll-us"),
            OsStr::new(us.as_str()),
            OsStr::new("--socket"),
        ];
        peers.push(start_peer(
            name,
            exe,
            &args,
            REFERENCE_READY,
            true,
            Some(cpu),
        )?);
    }
    Ok(peers)
}

fn measure(peers: &mut [Peer], ops: usize) -> Result<()> {
    println!(
        "  (srv CPU: the server's CPU time per op, user+kernel; p50 spread: the lowest and highest \
         p50 of the {ROUNDS} rounds)"
    );
    println!(
        "  {:<11} {:>10} {:>9} {:>9} {:>18} {:>13} {:>13}",
        "server", "ops/s", "p50 us", "p99 us", "p50 spread us", "srv CPU us/op", "vs echo p50"
    );
    let op = Op::Write;
    let mut requests: Vec<Vec<u8>> = peers.iter().map(|_| op.request(0x1234_5678)).collect();
    let mut latencies: Vec<Vec<u64>> = peers.iter().map(|_| Vec::with_capacity(ops)).collect();
    let mut round_p50s: Vec<Vec<f64>> = peers.iter().map(|_| Vec::new()).collect();
    let mut elapsed = vec![Duration::ZERO; peers.len()];
    let mut server_cpu_ns = vec![0u64; peers.len()];
    for (i, peer) in peers.iter_mut().enumerate() {
        let mut warmup = Vec::with_capacity(WARMUP_OPS);
        round_trips(&mut peer.client, &mut requests[i], WARMUP_OPS, &mut warmup)
            .with_context(|| format!("warm-up against {}", peer.name))?;
    }
    for round in 0..ROUNDS {
        let count = ops / ROUNDS + usize::from(round < ops % ROUNDS);
        for k in 0..peers.len() {
            let i = (round + k) % peers.len();
            let peer = &mut peers[i];
            let (cpu_before, _) = sched_of(peer.process.pid())?;
            let mut this_round = Vec::with_capacity(count);
            elapsed[i] += round_trips(&mut peer.client, &mut requests[i], count, &mut this_round)
                .with_context(|| format!("round trips against {}", peer.name))?;
            let (cpu_after, _) = sched_of(peer.process.pid())?;
            server_cpu_ns[i] += cpu_after - cpu_before;
            round_p50s[i].push(Stats::new(this_round.clone(), Duration::from_secs(1)).p50_us);
            latencies[i].extend(this_round);
        }
    }
    let stats: Vec<Stats> = latencies
        .into_iter()
        .zip(&elapsed)
        .map(|(latencies, elapsed)| Stats::new(latencies, *elapsed))
        .collect();
    let echo_p50 = stats[0].p50_us;
    for (i, peer) in peers.iter().enumerate() {
        let spread = Spread::of(&round_p50s[i], |p50| *p50);
        println!(
            "  {:<11} {:>10.0} {:>9.2} {:>9.2} {:>18} {:>13.2} {:>12.2}x",
            peer.name,
            stats[i].ops_per_sec,
            stats[i].p50_us,
            stats[i].p99_us,
            format!("{:.2}-{:.2}", spread.min, spread.max),
            server_cpu_ns[i] as f64 / ops as f64 / 1000.0,
            stats[i].p50_us / echo_p50
        );
    }
    println!(
        "  the echo on the same CPUs is the limit; polling trades the server's CPU (srv CPU us/op) \
         for the wakeups it saves"
    );
    Ok(())
}
