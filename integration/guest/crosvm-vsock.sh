#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-vsock device on the host's vhost-vsock: the function, its driver,
# and the vsock character device the transport makes.

for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    echo "@@RESULT pci.device=$(cat "$dev/device")"
done
for dev in /sys/bus/virtio/devices/*; do
    [ -e "$dev/driver" ] && echo "@@RESULT virtio.driver=$(basename "$(readlink "$dev/driver")")"
done
[ -e /dev/vsock ] && echo "@@RESULT vsock.dev=present"
