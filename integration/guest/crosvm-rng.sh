#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-rng whose bytes are random (crosvm's): the function, its drivers,
# and how many bytes one read of /dev/hwrng returns.
# Runs after report-device.sh, which reports the function and its drivers.

echo "@@RESULT rng.current=$(cat /sys/class/misc/hw_random/rng_current)"
echo "@@RESULT rng.bytes=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | wc -c)"
