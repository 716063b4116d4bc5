// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Test-only devices and clients for `vfio_user_server`'s end-to-end tests and benchmarks.

pub mod checks;
pub mod config_space;
pub mod guest;
pub mod inherited;
pub mod procfs;
pub mod raw_client;
pub mod reference;
pub mod relay_log;
pub mod sandbox;
pub mod serve;
pub mod stats;
pub mod virtio;
pub mod virtio_driver;
