#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-fs device with tag "shared": the function, its driver, then the
# shared directory mounted, the host's file read and a file of the guest's written.

for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    echo "@@RESULT pci.device=$(cat "$dev/device")"
done
for dev in /sys/bus/virtio/devices/*; do
    [ -e "$dev/driver" ] && echo "@@RESULT virtio.driver=$(basename "$(readlink "$dev/driver")")"
done
mkdir -p /mnt
mount -t virtiofs shared /mnt
echo "@@RESULT fs.mount_status=$?"
echo "@@RESULT fs.entries=$(ls /mnt | tr '\n' ' ')"
echo "@@RESULT fs.host_file=$(cat /mnt/from-host.txt)"
echo "written by the guest" >/mnt/from-guest.txt
echo "@@RESULT fs.write_status=$?"
umount /mnt
echo "@@RESULT fs.umount_status=$?"
