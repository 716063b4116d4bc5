// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The test servers (the reference device; virtio rng and blk), callable from every binary of
//! this package.
//!
//! `reference-server` and `virtio-server` are thin wrappers over [`reference_main`] and
//! [`virtio_main`]. The demo and the benchmarks serve their devices by running their own
//! executable again with a first argument of [`SERVE_REFERENCE`] or [`SERVE_VIRTIO`]
//! ([`serve_if_asked`] at the top of their `main`), so that `cargo run --bin demo` works with
//! nothing but the demo built: cargo builds only the binary it is asked to run.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use vfio_user_server::Listener;
use vfio_user_server::Server;
use vfio_user_server::ServerCapabilities;

use crate::guest::shell_quote;
use crate::inherited::inherited_listener;
use crate::reference::ReferenceDevice;
use crate::virtio::blk::Block;
use crate::virtio::pci::VirtioPci;
use crate::virtio::rng::Rng;
use crate::virtio::VirtioDevice;

/// `EXE serve-reference (--socket PATH | --fd N)`: serve the reference device.
pub const SERVE_REFERENCE: &str = "serve-reference";
/// `EXE serve-virtio (rng | blk --file DISK) (--socket PATH | --fd N)`: serve a virtio device.
pub const SERVE_VIRTIO: &str = "serve-virtio";

/// What [`reference_main`] prints on stderr once clients can connect.
pub const REFERENCE_READY: &str = "reference-server: listening";
/// What [`virtio_main`] prints on stderr once clients can connect.
pub const VIRTIO_READY: &str = "virtio-server: listening";

const REFERENCE_USAGE: &str = "usage: reference-server (--socket PATH | --fd N) [--poll-us N]";
const VIRTIO_USAGE: &str =
    "usage: virtio-server (rng | blk --file DISK) (--socket PATH | --fd N) [--poll-us N]";

/// If this process was started as `EXE serve-reference ...` or `EXE serve-virtio ...`, serves
/// that device and exits: 1 with the error on stderr if serving fails, 2 on a usage error.
/// Returns otherwise.
pub fn serve_if_asked() {
    let mut args = std::env::args().skip(1);
    let serve: fn(&[String]) -> Result<()> = match args.next().as_deref() {
        Some(SERVE_REFERENCE) => reference_main,
        Some(SERVE_VIRTIO) => virtio_main,
        _ => return,
    };
    env_logger::init();
    let args: Vec<String> = args.collect();
    match serve(&args) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The shell words that run `executable` as a server: `'EXE' SUBCOMMAND`, quoted for `sh`, for
/// the server templates of [`crate::guest::Boot`].
pub fn server_command(executable: &Path, subcommand: &str) -> Result<String> {
    let path = executable
        .to_str()
        .with_context(|| format!("{} is not UTF-8", executable.display()))?;
    Ok(format!("{} {subcommand}", shell_quote(path)))
}

/// This executable as a server, as [`server_command`] says.
pub fn this_executable_serving(subcommand: &str) -> Result<String> {
    let exe = std::env::current_exe().context("finding this executable")?;
    server_command(&exe, subcommand)
}

/// Serves the reference device on a unix socket, one client after another, until killed.
/// `args`: `--socket PATH` (or `--socket-path PATH`) binds PATH; `--fd N` takes the listening
/// socket inherited as fd N; `--poll-us N` spins up to N µs on a client's socket after each
/// message (adaptive polling, off by default).
pub fn reference_main(args: &[String]) -> Result<()> {
    // A bad value (an --fd that is not open) is an error with its reason; no socket at all is
    // a usage error.
    let options = parse_options(args, &[]).context(REFERENCE_USAGE)?;
    let Some(listener) = options.listener else {
        eprintln!("{REFERENCE_USAGE}");
        std::process::exit(2);
    };
    let device = ReferenceDevice::new().context("creating the reference device")?;
    let mut server = Server::new(listener, device, ServerCapabilities::default())?;
    server.set_polling(options.poll);
    eprintln!("{REFERENCE_READY}");
    Err(server.serve_forever()).context("accepting clients")
}

/// The options of the servers: where to listen, polling, and the `extra` flags with a value
/// that the caller takes (`--file`).
struct ServeOptions {
    listener: Option<Listener>,
    poll: Duration,
    extra: Vec<(String, String)>,
}

fn parse_options(args: &[String], extra: &[&str]) -> Result<ServeOptions> {
    let mut options = ServeOptions {
        listener: None,
        poll: Duration::ZERO,
        extra: Vec::new(),
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" | "--socket-path" => {
                options.listener =
                    Some(Listener::bind(value).with_context(|| format!("binding {value}"))?)
            }
            "--fd" => options.listener = Some(inherited_listener(value)?),
            "--poll-us" => {
                let us: u64 = value
                    .parse()
                    .with_context(|| format!("--poll-us takes microseconds, not {value}"))?;
                options.poll = Duration::from_micros(us);
            }
            other if extra.contains(&other) => options.extra.push((flag.clone(), value.clone())),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(options)
}

struct VirtioOptions {
    device: String,
    file: Option<String>,
    serve: ServeOptions,
}

fn parse_virtio(args: &[String]) -> Result<VirtioOptions> {
    let device = args.first().cloned().context("which device? rng or blk")?;
    let serve = parse_options(&args[1..], &["--file"])?;
    let file = serve
        .extra
        .iter()
        .find(|(f, _)| f == "--file")
        .map(|(_, v)| v.clone());
    Ok(VirtioOptions {
        device,
        file,
        serve,
    })
}

fn serve_virtio<D: VirtioDevice>(listener: Listener, poll: Duration, device: D) -> Result<()> {
    let mut server = Server::new(
        listener,
        VirtioPci::new(device),
        ServerCapabilities::default(),
    )?;
    server.set_polling(poll);
    eprintln!("{VIRTIO_READY}");
    Err(server.serve_forever()).context("accepting clients")
}

/// Serves a test virtio device over vfio-user, one client after another, until killed.
/// `args`: `rng` or `blk --file DISK`, then `--socket PATH` or `--fd N`.
pub fn virtio_main(args: &[String]) -> Result<()> {
    let options = parse_virtio(args).context(VIRTIO_USAGE)?;
    let listener = options
        .serve
        .listener
        .context("--socket or --fd is required")?;
    let poll = options.serve.poll;
    match options.device.as_str() {
        "rng" => serve_virtio(listener, poll, Rng::new()),
        "blk" => {
            let path = options.file.context("blk needs --file DISK")?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {path}"))?;
            serve_virtio(listener, poll, Block::new(file)?)
        }
        other => bail!("unknown device {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_commands_are_quoted() {
        assert_eq!(
            server_command(Path::new("/a b/demo"), SERVE_VIRTIO).unwrap(),
            "'/a b/demo' serve-virtio"
        );
    }
}
