#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script of the virtio-blk benchmark: times sequential O_DIRECT writes and reads on
# /dev/vda, with 4 KiB and with 1 MiB requests, each case three times. A run of a 1 MiB case
# passes over its area several times, so that it lasts long enough for the clock's centiseconds.
# For every case and run it reports
#     @@RESULT CASE.runN.centiseconds=T    from /proc/uptime, before and after dd
#     @@RESULT CASE.runN.requests=R        requests the block layer completed, from its stat file
# and once per case CASE.bytes, the bytes each run moves. The cases are 4k_write, 4k_read,
# 1m_write and 1m_read; reads go to /dev/null so that the device alone is timed. "@@BENCH begin"
# and "@@BENCH end" frame the cases, for the host to measure what the server spent on them.

RUNS=3
# The 4 KiB cases use the first 64 MiB of the disk, the 1 MiB cases 128 MiB from 64 MiB on,
# BIG_PASSES times per run.
SMALL_COUNT=16384
BIG_COUNT=128
BIG_SKIP=64
BIG_PASSES=8

# Centiseconds since boot.
now() {
    sed 's/\([0-9]*\)\.\([0-9]*\) .*/\1\2/' /proc/uptime
}

# Requests completed by the disk so far, reads and writes (fields 1 and 5 of the stat file).
requests() {
    set -- $(cat /sys/block/vda/stat)
    echo $(($1 + $5))
}

# run CASE PASSES BYTES dd-arguments...: times RUNS runs of PASSES dd commands, BYTES in all
# per run, and reports each run.
run() {
    name=$1 passes=$2 bytes=$3
    shift 3
    echo "@@RESULT $name.bytes=$bytes"
    i=1
    while [ "$i" -le "$RUNS" ]; do
        before=$(requests)
        start=$(now)
        pass=0
        while [ "$pass" -lt "$passes" ]; do
            if ! dd "$@" 2>/tmp/dd.err; then
                echo "@@RESULT $name.error=$(tr '\n' ' ' </tmp/dd.err)"
                return 1
            fi
            pass=$((pass + 1))
        done
        end=$(now)
        echo "@@RESULT $name.run$i.centiseconds=$((end - start))"
        echo "@@RESULT $name.run$i.requests=$(($(requests) - before))"
        i=$((i + 1))
    done
}

[ -b /dev/vda ] || { echo "@@RESULT blk.present=0"; exit 1; }
echo "@@RESULT blk.present=1"
echo "@@RESULT blk.size_sectors=$(cat /sys/block/vda/size)"
for attribute in max_segments max_sectors_kb max_hw_sectors_kb nr_requests; do
    echo "@@RESULT queue.$attribute=$(cat /sys/block/vda/queue/$attribute)"
done
echo "@@RESULT queue.scheduler=$(cat /sys/block/vda/queue/scheduler)"

# The host samples the server's CPU time between these two lines.
echo "@@BENCH begin"
status=0
run 4k_write 1 $((SMALL_COUNT * 4096)) \
    if=/dev/zero of=/dev/vda bs=4k count=$SMALL_COUNT oflag=direct conv=notrunc || status=1
run 4k_read 1 $((SMALL_COUNT * 4096)) \
    if=/dev/vda of=/dev/null bs=4k count=$SMALL_COUNT iflag=direct || status=1
run 1m_write $BIG_PASSES $((BIG_PASSES * BIG_COUNT << 20)) \
    if=/dev/zero of=/dev/vda bs=1M count=$BIG_COUNT seek=$BIG_SKIP oflag=direct conv=notrunc ||
    status=1
run 1m_read $BIG_PASSES $((BIG_PASSES * BIG_COUNT << 20)) \
    if=/dev/vda of=/dev/null bs=1M count=$BIG_COUNT skip=$BIG_SKIP iflag=direct || status=1
echo "@@BENCH end"
exit $status
