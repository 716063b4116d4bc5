#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-scsi controller with one disk: the disk found as /dev/sda, a 1 MiB
# pattern written at 1 MiB past the page cache and read back, then the disk flushed.
# Runs after report-device.sh, which reports the function and its drivers.

# The controller scans its target asynchronously: give the disk a moment to appear.
for _ in $(seq 50); do
    [ -b /dev/sda ] && break
    sleep 0.1
done
[ -b /dev/sda ] || { echo "@@RESULT scsi.present=0"; exit 0; }
echo "@@RESULT scsi.present=1"
echo "@@RESULT scsi.size_sectors=$(cat /sys/block/sda/size)"
echo "@@RESULT scsi.vendor=$(cat /sys/block/sda/device/vendor | tr -d ' ')"
yes 'vfio-user virtio-scsi pattern 0123456789abcdef' | head -c 1048576 >/tmp/pattern
echo "@@RESULT scsi.pattern_md5=$(md5sum </tmp/pattern | cut -d' ' -f1)"
dd if=/tmp/pattern of=/dev/sda bs=1M seek=1 count=1 oflag=direct conv=fsync 2>/dev/null
echo "@@RESULT scsi.write_status=$?"
back=$(dd if=/dev/sda bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
echo "@@RESULT scsi.readback_md5=$back"
blockdev --flushbufs /dev/sda
echo "@@RESULT scsi.flush_status=$?"
