// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The demo: boots a Linux guest in QEMU with three vfio-user devices, each served by its own
//! process over `vfio_user_server` (the reference device, virtio-rng and virtio-blk on a
//! scratch disk), and prints what the guest sees. Builds the guest tree on first use.
//!
//!     cargo run --release -p integration --bin demo
//!
//! The servers are this executable run again (`demo serve-reference ...`, `demo serve-virtio
//! ...`), so nothing but the demo itself needs to be built.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use integration::guest;
use integration::guest::compositor::is_root;
use integration::guest::shell_quote_path;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::serve;
use integration::serve::SERVE_REFERENCE;
use integration::serve::SERVE_VIRTIO;

const SCRIPT: &str = concat!(
    "echo '--- the guest sees these PCI functions (vendor device class driver):'\n",
    "for d in /sys/bus/pci/devices/*; do\n",
    "  drv=none; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))\n",
    "  echo \"  ${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class) $drv\"\n",
    "done\n",
    include_str!("../../guest/reference-devices.sh"),
    "\n",
    include_str!("../../guest/virtio.sh"),
);

const NAME: &str = "demo";

/// An expected way for the demo to fail: what went wrong, in one line, and what to do.
struct Failure {
    cause: String,
    fix: String,
}

impl Failure {
    fn new(cause: impl Into<String>, fix: impl Into<String>) -> Failure {
        Failure {
            cause: cause.into(),
            fix: fix.into(),
        }
    }
}

/// One line for an error: the first line of its outermost message and of its root cause. The
/// rest (the logs some errors carry) is in the files the demo names.
fn first_line(error: &anyhow::Error) -> String {
    let line = |text: String| {
        text.lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string()
    };
    let outer = line(error.to_string());
    let root = line(error.root_cause().to_string());
    if outer == root {
        outer
    } else if outer.ends_with(':') {
        format!("{outer} {root}")
    } else {
        format!("{outer}: {root}")
    }
}

/// The last non-empty line of `path`, if any: where a failed build says why.
fn last_line_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(str::to_string)
}

/// Removes the scratch directory on every way out.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn prepare_guest() -> Result<GuestEnv, Failure> {
    let cache = GuestEnv::cache_dir();
    let log = GuestEnv::build_log();
    if GuestEnv::is_built() {
        println!("demo: using the guest tree in {}", cache.display());
    } else {
        if !is_root() {
            return Err(Failure::new(
                format!(
                    "the guest tree (QEMU 11 and a Linux kernel) is not built in {} yet, and \
                     building it (debootstrap) needs root",
                    cache.display()
                ),
                "run the demo as root once, e.g. `sudo -E \"$(command -v cargo)\" run --release \
                 -p integration --bin demo`",
            ));
        }
        println!(
            "demo: building the guest tree in {}: a Debian trixie tree with QEMU 11 and a Linux \
             kernel, from the Debian mirror in the host's apt sources (or $VFIO_USER_GUEST_MIRROR). \
             This happens once and takes 1 to 5 minutes; progress goes to {}",
            cache.display(),
            log.display()
        );
    }
    let started = Instant::now();
    let env = GuestEnv::prepare().map_err(|e| {
        Failure::new(
            format!(
                "building the guest tree failed: {}",
                last_line_of(&log).unwrap_or_else(|| first_line(&e))
            ),
            format!(
                "read {}; if no Debian mirror was found or reachable, set \
                 VFIO_USER_GUEST_MIRROR to the URL of a Debian archive you can reach",
                log.display()
            ),
        )
    })?;
    if started.elapsed() > Duration::from_secs(5) {
        println!(
            "demo: the guest tree was built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(env)
}

fn run() -> Result<(), Failure> {
    let env = prepare_guest()?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new(format!("cannot find the demo's executable: {e}"), "rerun"))?;
    let command = |sub: &str| {
        serve::server_command(&exe, sub).map_err(|e| {
            Failure::new(
                first_line(&e),
                "run the demo from a directory whose path is UTF-8",
            )
        })
    };
    let scratch =
        Scratch(std::env::temp_dir().join(format!("vfio-user-demo-{}", std::process::id())));
    let disk = scratch.0.join("disk.img");
    std::fs::create_dir_all(&scratch.0)
        .and_then(|()| std::fs::File::create(&disk)?.set_len(128 << 20))
        .map_err(|e| {
            Failure::new(
                format!("creating the scratch disk {}: {e}", disk.display()),
                "point TMPDIR at a writable directory with 128 MiB free",
            )
        })?;
    let servers = vec![
        format!("{} --socket {{socket}}", command(SERVE_REFERENCE)?),
        format!("{} rng --socket {{socket}}", command(SERVE_VIRTIO)?),
        format!(
            "{} blk --file {} --socket {{socket}}",
            command(SERVE_VIRTIO)?,
            shell_quote_path(&disk)
        ),
    ];
    println!(
        "demo: starting three vfio-user servers, each a process of this executable ({{socket}} \
         is a fresh unix socket):"
    );
    for server in &servers {
        println!("  {server}");
    }
    println!(
        "demo: booting QEMU (TCG) with a vfio-user-pci device on each socket; the guest's \
         console follows"
    );
    let logs = env.log_dir(NAME);
    let run = guest::run(
        &env,
        &Boot {
            name: NAME.to_string(),
            servers,
            script: SCRIPT.to_string(),
            modules: vec!["virtio_blk".to_string(), "virtio_rng".to_string()],
            kernel_append: "vfio_user_test=write".to_string(),
            timeout: Duration::from_secs(300),
            echo_prefix: Some("guest| ".to_string()),
            ..Boot::default()
        },
    )
    .map_err(|e| {
        Failure::new(
            format!("the guest did not run: {}", first_line(&e)),
            format!(
                "read the servers' output in {}.servers/ and QEMU's in {}/",
                logs.display(),
                logs.display()
            ),
        )
    })?;
    println!("demo: what the guest reported:");
    for (key, value) in &run.results {
        println!("  {key} = {value}");
    }
    if let Err(e) = run.check() {
        return Err(Failure::new(
            format!("the guest's checks failed: {}", first_line(&e)),
            format!(
                "read the console in {}/console.log and the servers' output in {}.servers/",
                logs.display(),
                logs.display()
            ),
        ));
    }
    println!(
        "demo: the guest ran its checks and powered off cleanly; the console and the servers' \
         output are in {} and {}.servers",
        logs.display(),
        logs.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    serve::serve_if_asked();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("demo: failed: {}", failure.cause);
            eprintln!("demo: to fix: {}", failure.fix);
            ExitCode::FAILURE
        }
    }
}
