#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Put before each crosvm device's guest script: reports the virtio function (its PCI device id
# and driver) and the virtio driver bound to it.

for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    echo "@@RESULT pci.device=$(cat "$dev/device")"
    [ -e "$dev/driver" ] && echo "@@RESULT pci.driver=$(basename "$(readlink "$dev/driver")")"
done
for dev in /sys/bus/virtio/devices/*; do
    [ -e "$dev/driver" ] && echo "@@RESULT virtio.driver=$(basename "$(readlink "$dev/driver")")"
done
