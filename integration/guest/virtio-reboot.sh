#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for the reboot test, run on every boot of one QEMU process. The first boot
# (no marker in the disk's first sector) writes a pattern and the marker, checks the rng and
# reboots; the boot after the reset finds the marker, checks the rng and reads the pattern
# back. Results are prefixed boot1. and boot2.

marker=vfio-user-reboot-marker

rng_ok() {
    echo 0 >/sys/class/misc/hw_random/rng_quality 2>/dev/null
    dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tu1 -v | tr -s ' ' '\n' | {
        previous=-1 ok=1
        while read -r byte; do
            [ -n "$byte" ] || continue
            if [ "$previous" -ge 0 ] && [ "$byte" -ne $(((previous + 1) % 251)) ]; then ok=0; fi
            previous=$byte
        done
        echo $ok
    }
}

yes 'vfio-user virtio-blk pattern 0123456789abcdef' | head -c 1048576 >/tmp/pattern
expected=$(md5sum </tmp/pattern | cut -d' ' -f1)
found=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c ${#marker})
if [ "$found" != "$marker" ]; then
    echo "@@RESULT boot1.rng_ok=$(rng_ok)"
    dd if=/tmp/pattern of=/dev/vda bs=1M seek=1 count=1 oflag=direct conv=fsync 2>/dev/null
    echo "@@RESULT boot1.write_status=$?"
    printf '%s' "$marker" | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null
    echo "@@RESULT boot1.marker_status=$?"
    reboot -f
    sleep 30
    echo "@@RESULT boot1.reboot=failed"
    exit 1
fi
echo "@@RESULT boot2.rng_ok=$(rng_ok)"
back=$(dd if=/dev/vda bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$back" = "$expected" ]
echo "@@RESULT boot2.pattern_ok=$(( $? == 0 ))"
