#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-net on a host tap that has 10.55.0.1/24: brings the guest's
# interface up as 10.55.0.2/24 and pings the host's end of the tap.
# Runs after report-device.sh, which reports the function and its drivers.

# The first interface that is not the loopback (eth0, unless the kernel names it otherwise).
iface=
for dev in /sys/class/net/*; do
    [ "$(basename "$dev")" = lo ] && continue
    iface=$(basename "$dev")
    break
done
if [ -z "$iface" ]; then
    echo "@@ERROR no network interface"
    exit 1
fi
echo "@@RESULT net.iface=$iface"
echo "@@RESULT net.mac=$(cat "/sys/class/net/$iface/address")"
ip link set lo up
ip addr add 10.55.0.2/24 dev "$iface"
echo "@@RESULT net.addr_status=$?"
ip link set "$iface" up
echo "@@RESULT net.up_status=$?"
out=$(ping -c 3 -W 2 10.55.0.1 2>&1)
status=$?
echo "$out"
echo "@@RESULT net.ping_status=$status"
received=$(echo "$out" | sed -n 's/.* \([0-9][0-9]*\) packets received.*/\1/p')
echo "@@RESULT net.ping_received=${received:-0}"
