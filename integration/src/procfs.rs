// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What /proc says of another process: its CPU time, how often it was scheduled in, and the
//! processes below it.

use std::io;

/// CPU time (ns) and number of times scheduled in, summed over the threads of `pid`
/// (/proc/PID/task/*/schedstat).
pub fn sched_of(pid: u32) -> io::Result<(u64, u64)> {
    let mut cpu_ns = 0;
    let mut runs = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that exited meanwhile has nothing more to count.
        let Ok(text) = std::fs::read_to_string(entry?.path().join("schedstat")) else {
            continue;
        };
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        cpu_ns += fields.first().copied().unwrap_or(0);
        runs += fields.get(2).copied().unwrap_or(0);
    }
    Ok((cpu_ns, runs))
}

/// The processes below `pid`, children of any of its threads, each before its own children;
/// none for a process gone meanwhile.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|child| child.parse().ok())
                .collect::<Vec<u32>>()
        })
        .flat_map(|child| std::iter::once(child).chain(descendants(child)))
        .collect()
}

/// `sched_of` summed over `pid` and every process below it: CPU time (ns) and times scheduled
/// in (each a wakeup or a preemption); nothing for processes gone meanwhile.
pub fn tree_sched(pid: u32) -> (u64, u64) {
    std::iter::once(pid)
        .chain(descendants(pid))
        .map(|p| sched_of(p).unwrap_or((0, 0)))
        .fold((0, 0), |(ns, runs), (n, r)| (ns + n, runs + r))
}
