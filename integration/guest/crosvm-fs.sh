#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-fs device with tag "shared": the function, its driver, then the
# shared directory mounted, the host's file read and a file of the guest's written.
# Runs after report-device.sh, which reports the function and its drivers.

mkdir -p /mnt
mount -t virtiofs shared /mnt
echo "@@RESULT fs.mount_status=$?"
echo "@@RESULT fs.entries=$(ls /mnt | tr '\n' ' ')"
echo "@@RESULT fs.host_file=$(cat /mnt/from-host.txt)"
echo "written by the guest" >/mnt/from-guest.txt
echo "@@RESULT fs.write_status=$?"
umount /mnt
echo "@@RESULT fs.umount_status=$?"
