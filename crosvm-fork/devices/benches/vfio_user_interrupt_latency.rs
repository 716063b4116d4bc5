// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! How long an MSI-X interrupt of a device served over vfio-user takes from the device's signal
//! to the client's thread waking on its eventfd, the two ways the VM services deliver it, in
//! the same run and interleaved sample by sample:
//! - direct: the device signals the client's eventfd itself (the VM services answered `MsixConfig`
//!   with it);
//! - relayed: the device signals its own irqfd and the VM services thread passes it on, as every
//!   vector was delivered before the direct path existed (still the path of a vector allocated
//!   before the client gave it an eventfd).
//!
//! The client thread waits on both eventfds with poll(2), as a VMM's event loop does. Run with
//! `cargo bench -p devices --bench vfio_user_interrupt_latency`; it prints each path's median
//! and p99 over all samples, the spread of the per-round medians, and the ratio of medians, once
//! with every thread on one CPU and once with the scheduler free to spread them.

#![cfg(any(target_os = "android", target_os = "linux"))]

use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use std::time::Instant;

use base::Event;
use devices::vfio_user_backend::vfio_user_server;
use devices::vfio_user_backend::VmServices;
use vfio_user_server::protocol::*;
use vfio_user_server::sys;
use vfio_user_server::Interrupts;
use vfio_user_server::IrqCounts;
use vfio_user_server::IrqSetRequest;
use vm_control::VmIrqRequest;
use vm_control::VmIrqResponse;

const ROUNDS: usize = 10;
const SAMPLES_PER_ROUND: usize = 500;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Relayed,
}

fn assign(interrupts: &Interrupts, vector: u32, fd: &OwnedFd) {
    let set = IrqSet {
        argsz: size_of::<IrqSet>() as u32,
        flags: IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
        index: PCI_MSIX_IRQ_INDEX,
        start: vector,
        count: 1,
    };
    interrupts
        .set_irqs(IrqSetRequest {
            set,
            bools: &[],
            fds: vec![fd.try_clone().expect("dup")],
        })
        .expect("SET_IRQS");
}

/// Allocates `vector` as `MsixConfig` does; returns the event the device then signals.
fn allocate(tube: &base::Tube, vector: usize) -> Event {
    let irqfd = Event::new().expect("event");
    tube.send(&VmIrqRequest::AllocateOneMsi {
        irqfd: irqfd.try_clone().expect("dup"),
        device_id: vm_control::PciId::new(0x1af4, 0x1044).into(),
        queue_id: vector,
        device_name: "bench".to_string(),
    })
    .expect("send");
    match tube.recv().expect("recv") {
        VmIrqResponse::Irqfd { irqfd, .. } => irqfd,
        VmIrqResponse::AllocateOneMsi { .. } => irqfd,
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Samples (ns) of each path, by round.
struct Samples {
    direct: Vec<Vec<u64>>,
    relayed: Vec<Vec<u64>>,
}

fn measure() -> Samples {
    let interrupts = Interrupts::new(IrqCounts {
        msix: 2,
        ..Default::default()
    });
    let direct_eventfd = sys::eventfd(true).expect("eventfd");
    let relayed_eventfd = sys::eventfd(true).expect("eventfd");
    // Vector 0 gets its eventfd before crosvm allocates it, vector 1 after.
    assign(&interrupts, 0, &direct_eventfd);
    let (services, endpoints, _intx) =
        VmServices::start(interrupts.clone(), None, Default::default()).expect("VM services");
    let direct = allocate(&endpoints.msi_tube, 0);
    let relayed = allocate(&endpoints.msi_tube, 1);
    assign(&interrupts, 1, &relayed_eventfd);
    assert!(matches!(
        services.delivery(0),
        Some(devices::vfio_user_backend::Delivery::Direct(_))
    ));
    assert_eq!(
        services.delivery(1),
        Some(devices::vfio_user_backend::Delivery::Relayed)
    );

    // The client: wakes on either eventfd and reports when.
    let (woke_tx, woke_rx) = mpsc::channel::<(Path, Instant)>();
    let client = thread::spawn(move || {
        let mut fds = [
            libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&direct_eventfd),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&relayed_eventfd),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: `fds` is a valid array of two pollfds that outlives the call, and the
            // fds it names are owned by this closure.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 10_000) };
            let now = Instant::now();
            if ready <= 0 {
                return;
            }
            for (pollfd, (path, fd)) in fds.iter().zip([
                (Path::Direct, &direct_eventfd),
                (Path::Relayed, &relayed_eventfd),
            ]) {
                if pollfd.revents & libc::POLLIN != 0 {
                    sys::eventfd_read(fd.as_fd()).expect("eventfd read");
                    if woke_tx.send((path, now)).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let mut samples = Samples {
        direct: Vec::new(),
        relayed: Vec::new(),
    };
    for _ in 0..ROUNDS {
        let mut direct_round = Vec::with_capacity(SAMPLES_PER_ROUND);
        let mut relayed_round = Vec::with_capacity(SAMPLES_PER_ROUND);
        for i in 0..2 * SAMPLES_PER_ROUND {
            let path = if i % 2 == 0 {
                Path::Direct
            } else {
                Path::Relayed
            };
            let event = match path {
                Path::Direct => &direct,
                Path::Relayed => &relayed,
            };
            let start = Instant::now();
            event.signal().expect("signal");
            let (woken, at) = woke_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("the client never woke");
            assert!(woken == path, "woke on the other vector");
            let ns = at.duration_since(start).as_nanos() as u64;
            match path {
                Path::Direct => direct_round.push(ns),
                Path::Relayed => relayed_round.push(ns),
            }
        }
        samples.direct.push(direct_round);
        samples.relayed.push(relayed_round);
    }
    drop(woke_rx);
    drop(services);
    client.join().expect("client thread");
    samples
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 50)
}

fn report(title: &str, samples: &Samples) {
    println!("{title}");
    let mut medians = Vec::new();
    for (name, rounds) in [("direct", &samples.direct), ("relayed", &samples.relayed)] {
        let mut all: Vec<u64> = rounds.iter().flatten().copied().collect();
        all.sort_unstable();
        let round_medians: Vec<u64> = rounds.iter().map(|r| median(r)).collect();
        let us = |ns: u64| ns as f64 / 1000.0;
        println!(
            "  {name:8} median {:6.1} us  p99 {:6.1} us  round medians {:.1}-{:.1} us  ({} samples)",
            us(percentile(&all, 50)),
            us(percentile(&all, 99)),
            us(*round_medians.iter().min().expect("rounds")),
            us(*round_medians.iter().max().expect("rounds")),
            all.len()
        );
        medians.push(percentile(&all, 50));
    }
    println!(
        "  direct / relayed median: {:.2}",
        medians[0] as f64 / medians[1] as f64
    );
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, CPU_SET writes inside it, and
    // sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("cannot pin to CPU 0: {}", std::io::Error::last_os_error());
        }
    }
}

fn main() {
    // Threads inherit the affinity of the thread that creates them: everything measure()
    // starts on the pinned thread stays on CPU 0.
    let one_cpu = thread::spawn(|| {
        pin_to_cpu0();
        measure()
    })
    .join()
    .expect("one-CPU run");
    report(
        "MSI-X interrupt latency, device signal to client wakeup, all threads on CPU 0:",
        &one_cpu,
    );
    let spread = measure();
    report(
        "MSI-X interrupt latency, device signal to client wakeup, threads unpinned:",
        &spread,
    );
}
