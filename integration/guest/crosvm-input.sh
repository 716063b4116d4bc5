#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-input keyboard fed from a host socket: the function, its drivers,
# the input device the driver makes, and the first four events read from it after telling the
# host (with "@@INPUT ready") to send them.
# Runs after report-device.sh, which reports the function and its drivers.

# The machine has an i8042 keyboard too: take the input device on the virtio bus.
event=
for input in /sys/bus/virtio/devices/*/input/input*; do
    [ -e "$input" ] || continue
    echo "@@RESULT input.name=$(cat "$input/name")"
    event=$(basename "$(ls -d "$input"/event* | head -n 1)")
done
echo "@@RESULT input.node=$event"
# evdev drops events nobody has open: the reader starts first.
# struct input_event on x86_64: a 16-byte timeval, then u16 type, u16 code, s32 value.
timeout 60 dd if="/dev/input/$event" of=/tmp/events bs=24 count=4 2>/dev/null &
reader=$!
sleep 1
echo "@@INPUT ready"
wait $reader
i=0
while [ $i -lt 4 ]; do
    type_code=$(od -A n -t u2 -j $((i * 24 + 16)) -N 4 /tmp/events | tr -s ' ' | sed 's/^ //')
    value=$(od -A n -t d4 -j $((i * 24 + 20)) -N 4 /tmp/events | tr -d ' ')
    echo "@@RESULT input.event$i=$type_code $value"
    i=$((i + 1))
done
