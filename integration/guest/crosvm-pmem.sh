#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for virtio-pmem whose image is its shared memory BAR: the disk found as
# /dev/pmem0, with the shared memory region feature (bit 0) negotiated. With step=write, a 1 MiB
# pattern is written at 1 MiB and flushed (the fsync reaches the device as a pmem flush); every
# step reads back what is at 1 MiB, and the line the host wrote at 3 MiB. With step=ro (a
# read-only image), a page of ones is stored at 4 MiB, which the server refuses: the page reads
# back as the zeros it held.
# Runs after report-device.sh, which reports the function and its drivers; step is set before.

for _ in $(seq 50); do
    [ -b /dev/pmem0 ] && break
    sleep 0.1
done
[ -b /dev/pmem0 ] || { echo "@@RESULT pmem.present=0"; exit 0; }
echo "@@RESULT pmem.present=1"
echo "@@RESULT pmem.size_bytes=$(blockdev --getsize64 /dev/pmem0)"
for dev in /sys/bus/virtio/devices/*; do
    [ "$(basename "$(readlink "$dev/driver")")" = virtio_pmem ] || continue
    echo "@@RESULT pmem.shmem_region_feature=$(cut -c1 "$dev/features")"
done
yes 'vfio-user virtio-pmem pattern 0123456789abcdef' | head -c 1048576 >/tmp/pattern
echo "@@RESULT pmem.pattern_md5=$(md5sum </tmp/pattern | cut -d' ' -f1)"
if [ "$step" = write ]; then
    dd if=/tmp/pattern of=/dev/pmem0 bs=1M seek=1 count=1 oflag=direct conv=fsync 2>/dev/null
    echo "@@RESULT pmem.write_status=$?"
fi
back=$(dd if=/dev/pmem0 bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
echo "@@RESULT pmem.readback_md5=$back"
if [ "$step" = ro ]; then
    dd if=/dev/zero bs=4096 count=1 2>/dev/null | tr '\0' '\377' >/tmp/ones
    dd if=/tmp/ones of=/dev/pmem0 bs=4096 seek=1024 count=1 oflag=direct 2>/dev/null
    zeros=$(dd if=/dev/zero bs=4096 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
    page=$(dd if=/dev/pmem0 bs=4096 skip=1024 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$page" = "$zeros" ] && echo "@@RESULT pmem.store_refused=1" || echo "@@RESULT pmem.store_refused=0"
fi
marker=$(dd if=/dev/pmem0 bs=4096 skip=768 count=1 iflag=direct 2>/dev/null | head -n 1)
echo "@@RESULT pmem.host_line=$marker"
