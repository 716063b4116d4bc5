#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for virtio-wl, which a stock kernel has no driver for: the virtio device type the
# transport found, whether a driver bound, and the size of the function's BAR2, its shared memory.
# Runs after report-device.sh, which reports the function and its drivers.

for dev in /sys/bus/virtio/devices/*; do
    [ -e "$dev/device" ] || continue
    echo "@@RESULT wl.virtio_device=$(cat "$dev/device")"
    [ -e "$dev/driver" ] && echo "@@RESULT wl.driver=bound" || echo "@@RESULT wl.driver=none"
done
for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    # resource: one "start end flags" line per BAR.
    sed -n 3p "$dev/resource" | {
        read -r start end _
        echo "@@RESULT wl.bar2_bytes=$((end - start + 1))"
    }
done
