// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Boots a guest with vfio-user devices and runs a script in it, by hand:
//!
//!     run-guest --server 'CMD {socket}' [--server ...] --script FILE [--module NAME ...]
//!               [--append ARGS] [--timeout SECS] [--memory MB] [--name NAME]
//!
//! Each server command is run with `sh -c` after `{socket}` is replaced by its socket path; the
//! guest gets one `vfio-user-pci` device per server. The console is printed as it arrives, then
//! the results. Exits 0 when the script reported `@@DONE status=0`.
//!
//! The guest tree is built on first use (one to five minutes) in `$VFIO_USER_GUEST_DIR`, or
//! else `target/guest` of this workspace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::guest;
use integration::guest::Boot;
use integration::guest::GuestEnv;

fn usage() -> ! {
    eprintln!(
        "usage: run-guest --server 'CMD {{socket}}' [--server ...] --script FILE \
         [--module NAME ...] [--append ARGS] [--timeout SECS] [--memory MB] [--name NAME]"
    );
    std::process::exit(2);
}

fn parse_args(args: &[String]) -> Result<Boot> {
    let mut boot = Boot {
        name: "run-guest".to_string(),
        echo_prefix: Some(String::new()),
        ..Boot::default()
    };
    let mut script: Option<PathBuf> = None;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            usage();
        }
        let Some(value) = args.next() else {
            bail!("{flag} needs a value");
        };
        match flag.as_str() {
            "--server" => boot.servers.push(value.clone()),
            "--script" => script = Some(PathBuf::from(value)),
            "--module" => boot.modules.push(value.clone()),
            "--append" => {
                boot.kernel_append.push(' ');
                boot.kernel_append.push_str(value);
            }
            "--timeout" => {
                let secs: u64 = value.parse().context("--timeout takes seconds")?;
                boot.timeout = Duration::from_secs(secs);
            }
            "--memory" => boot.memory_mb = value.parse().context("--memory takes MiB")?,
            "--name" => boot.name = value.clone(),
            _ => bail!("unknown option {flag}"),
        }
    }
    let Some(script) = script else {
        bail!("--script is required");
    };
    boot.script = std::fs::read_to_string(&script)
        .with_context(|| format!("reading the guest script {}", script.display()))?;
    Ok(boot)
}

fn main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let boot = match parse_args(&args) {
        Ok(boot) => boot,
        Err(e) => {
            eprintln!("run-guest: {e:#}");
            usage();
        }
    };
    eprintln!("run-guest: preparing the guest environment");
    let env = GuestEnv::prepare()?;
    let run = guest::run(&env, &boot)?;
    println!("--- results");
    for (key, value) in &run.results {
        println!("{key}={value}");
    }
    match run.check() {
        Ok(()) => {
            println!(
                "--- guest reported @@DONE status=0 (logs: {})",
                run.log_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("run-guest: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}
