#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for the virtio test devices. Reports, for every virtio function, what the kernel
# enumerated; then checks virtio-rng's known stream and, with a disk, writes, reads back and
# times data through virtio-blk. The action comes from the kernel command line:
#     vfio_user_test=write    write the patterns, read them back, time 64 MiB
#     vfio_user_test=read     only read back what a previous boot wrote
# The harness compares the values with what the devices must give.

action=$(sed -n 's/.*vfio_user_test=\([a-z]*\).*/\1/p' /proc/cmdline)

# Centiseconds since boot.
now() {
    sed 's/\([0-9]*\)\.\([0-9]*\) .*/\1\2/' /proc/uptime
}

report_functions() {
    for dev in /sys/bus/pci/devices/*; do
        [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
        id=$(cat "$dev/device")
        driver=none
        [ -e "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
        echo "@@RESULT $id.class=$(cat "$dev/class")"
        echo "@@RESULT $id.driver=$driver"
        # BAR0: line 1 of the resource file.
        set -- $(sed -n 1p "$dev/resource")
        echo "@@RESULT $id.bar0_size=$(printf '0x%x' $(($2 - $1 + 1)))"
        vectors=0
        [ -d "$dev/msi_irqs" ] && vectors=$(ls "$dev/msi_irqs" | wc -l)
        echo "@@RESULT $id.msix_vectors=$vectors"
        echo "@@RESULT $id.irq=$(cat "$dev/irq")"
    done
    # The virtio drivers bind to the functions' children on the virtio bus.
    for dev in /sys/bus/virtio/devices/*; do
        [ -e "$dev/device" ] || continue
        driver=none
        [ -e "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
        echo "@@RESULT virtio$(($(cat "$dev/device"))).driver=$driver"
    done
}

# Reads 64 bytes of /dev/hwrng and counts the places where the stream does not step by one
# (mod 251), and bytes the stream never produces (>= 251).
check_rng() {
    [ -e /dev/hwrng ] || { echo "@@RESULT rng.present=0"; return; }
    echo "@@RESULT rng.present=1"
    echo "@@RESULT rng.current=$(cat /sys/class/misc/hw_random/rng_current)"
    # Stop the kernel's own entropy reads so that ours see the stream without gaps.
    echo 0 >/sys/class/misc/hw_random/rng_quality 2>/dev/null
    dd if=/dev/hwrng bs=64 count=1 2>/dev/null | od -An -tu1 -v | tr -s ' ' '\n' | {
        previous=-1 breaks=0 invalid=0 count=0
        while read -r byte; do
            [ -n "$byte" ] || continue
            count=$((count + 1))
            [ "$byte" -ge 251 ] && invalid=$((invalid + 1))
            if [ "$previous" -ge 0 ] && [ "$byte" -ne $(((previous + 1) % 251)) ]; then
                breaks=$((breaks + 1))
            fi
            previous=$byte
        done
        echo "@@RESULT rng.bytes=$count"
        echo "@@RESULT rng.breaks=$breaks"
        echo "@@RESULT rng.invalid=$invalid"
    }
}

# A 1 MiB pattern the host can rebuild: the line below repeated.
make_pattern() {
    yes 'vfio-user virtio-blk pattern 0123456789abcdef' | head -c 1048576 >/tmp/pattern
}

check_blk() {
    [ -b /dev/vda ] || { echo "@@RESULT blk.present=0"; return; }
    echo "@@RESULT blk.present=1"
    echo "@@RESULT blk.size_sectors=$(cat /sys/block/vda/size)"
    echo "@@RESULT blk.serial=$(cat /sys/block/vda/serial 2>/dev/null)"
    make_pattern
    echo "@@RESULT blk.pattern_md5=$(md5sum </tmp/pattern | cut -d' ' -f1)"
    if [ "$action" = write ]; then
        # 1 MiB at 1 MiB, synchronously, then read back past the page cache.
        dd if=/tmp/pattern of=/dev/vda bs=1M seek=1 count=1 oflag=direct conv=fsync 2>/dev/null
        echo "@@RESULT blk.write_status=$?"
        # 64 MiB at 8 MiB, timed.
        for i in $(seq 64); do cat /tmp/pattern; done >/tmp/big
        start=$(now)
        dd if=/tmp/big of=/dev/vda bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null
        echo "@@RESULT blk.big_write_status=$?"
        elapsed=$(($(now) - start))
        echo "@@RESULT blk.big_write_centiseconds=$elapsed"
        rm -f /tmp/big
        start=$(now)
        big=$(dd if=/dev/vda bs=1M skip=8 count=64 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
        echo "@@RESULT blk.big_read_centiseconds=$(($(now) - start))"
        echo "@@RESULT blk.big_md5=$big"
        blockdev --flushbufs /dev/vda
        echo "@@RESULT blk.flush_status=$?"
    fi
    back=$(dd if=/dev/vda bs=1M skip=1 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    echo "@@RESULT blk.readback_md5=$back"
}

report_functions
check_rng
check_blk
