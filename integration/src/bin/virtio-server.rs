// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Serves a test virtio device over vfio-user, one client after another, until killed.
//!
//!     virtio-server rng --socket PATH
//!     virtio-server blk --file DISK --socket PATH
//!
//! `--fd N` replaces `--socket PATH` for an inherited listening socket.

use anyhow::bail;
use anyhow::Context;
use integration::inherited::inherited_listener;
use integration::virtio::blk::Block;
use integration::virtio::pci::VirtioPci;
use integration::virtio::rng::Rng;
use integration::virtio::VirtioDevice;
use vfio_user_server::Listener;
use vfio_user_server::Server;
use vfio_user_server::ServerCapabilities;

struct Options {
    device: String,
    file: Option<String>,
    listener: Option<Listener>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        device: args.first().cloned().context("which device? rng or blk")?,
        file: None,
        listener: None,
    };
    let mut rest = args[1..].iter();
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
            "--file" => options.file = Some(value.clone()),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(options)
}

fn serve<D: VirtioDevice>(listener: Listener, device: D) -> anyhow::Result<()> {
    let mut server = Server::new(
        listener,
        VirtioPci::new(device),
        ServerCapabilities::default(),
    )?;
    eprintln!("virtio-server: listening");
    Err(server.serve_forever()).context("accepting clients")
}

fn main() -> anyhow::Result<()> {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse(&args)
        .context("usage: virtio-server (rng | blk --file DISK) (--socket PATH | --fd N)")?;
    let listener = options.listener.context("--socket or --fd is required")?;
    match options.device.as_str() {
        "rng" => serve(listener, Rng::new()),
        "blk" => {
            let path = options.file.context("blk needs --file DISK")?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {path}"))?;
            serve(listener, Block::new(file)?)
        }
        other => bail!("unknown device {other}"),
    }
}
