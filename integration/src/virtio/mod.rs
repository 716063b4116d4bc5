// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Test-only virtio devices served over vfio-user: the virtio-pci modern transport and the
//! devices behind it.
