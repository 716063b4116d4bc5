// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Serves the reference device on a unix socket, one client after another, until killed.
//!
//!     reference-server --socket PATH     bind PATH
//!     reference-server --fd N            use the listening socket inherited as fd N
//!     ... --poll-us N                    spin up to N µs on the socket after each message

fn main() -> anyhow::Result<()> {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    integration::serve::reference_main(&args)
}
