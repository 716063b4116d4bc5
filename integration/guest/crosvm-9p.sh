#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-9p device with tag "shared": the directory mounted, the host's file
# read, a file of the guest's written, and a walk above the mount's root that must stay in it.
# Runs after report-device.sh, which reports the function and its drivers.

mkdir -p /mnt
mount -t 9p -o trans=virtio,version=9p2000.L shared /mnt
echo "@@RESULT p9.mount_status=$?"
echo "@@RESULT p9.entries=$(ls /mnt | tr '\n' ' ')"
echo "@@RESULT p9.host_file=$(cat /mnt/from-host.txt)"
echo "written by the guest" >/mnt/from-guest.txt
echo "@@RESULT p9.write_status=$?"
umount /mnt
echo "@@RESULT p9.umount_status=$?"
