// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Serves a test virtio device over vfio-user, one client after another, until killed.
//!
//!     virtio-server rng --socket PATH
//!     virtio-server blk --file DISK --socket PATH
//!
//! `--fd N` replaces `--socket PATH` for an inherited listening socket.

fn main() -> anyhow::Result<()> {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    integration::serve::virtio_main(&args)
}
