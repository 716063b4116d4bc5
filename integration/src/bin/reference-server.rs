// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Serves the reference device on a unix socket, one client after another, until killed.
//!
//!     reference-server --socket PATH     bind PATH
//!     reference-server --fd N            use the listening socket inherited as fd N

use anyhow::Context;
use integration::inherited::inherited_listener;
use integration::reference::ReferenceDevice;
use vfio_user_server::Listener;
use vfio_user_server::Server;
use vfio_user_server::ServerCapabilities;

fn usage() -> ! {
    eprintln!("usage: reference-server (--socket PATH | --fd N)");
    std::process::exit(2);
}

fn main() -> anyhow::Result<()> {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listener = match args.as_slice() {
        [flag, path] if flag == "--socket" || flag == "--socket-path" => {
            Listener::bind(path).with_context(|| format!("binding {path}"))?
        }
        [flag, fd] if flag == "--fd" => inherited_listener(fd)?,
        _ => usage(),
    };
    let device = ReferenceDevice::new().context("creating the reference device")?;
    let mut server = Server::new(listener, device, ServerCapabilities::default())?;
    eprintln!("reference-server: listening");
    Err(server.serve_forever()).context("accepting clients")
}
