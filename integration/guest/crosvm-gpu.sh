#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-gpu (2D, on the server's stub display): the function, its drivers,
# its BARs, the DRM card the driver makes, and whether the kernel's fbdev emulation (fbcon)
# took it; then the commands fbcon's drawing sends to the device and the device's answers, as
# the driver's trace events record them (crosvm logs no GPU commands).
# Runs after report-device.sh, which reports the function and its drivers.

for dev in /sys/bus/pci/devices/*; do
    [ "$(cat "$dev/vendor")" = 0x1af4 ] || continue
    # BAR2, the host-visible memory region: its size in bytes and its flags.
    set -- $(sed -n 3p "$dev/resource")
    [ -n "$2" ] && echo "@@RESULT pci.bar2_size=$(($2 - $1 + 1))"
    [ -n "$3" ] && echo "@@RESULT pci.bar2_flags=$3"
done
if [ -e /dev/dri/card0 ] || [ -e /sys/class/drm/card0 ]; then
    echo "@@RESULT drm.card0=present"
else
    echo "@@RESULT drm.card0=absent"
fi
[ -e /sys/class/drm/card0/device/driver ] &&
    echo "@@RESULT drm.driver=$(basename "$(readlink /sys/class/drm/card0/device/driver)")"
echo "@@RESULT fb0.name=$(cat /sys/class/graphics/fb0/name 2>/dev/null)"
# The commands the driver sends from here on, and the device's answers, as the driver's
# virtio_gpu trace events record them.
mkdir -p /sys/kernel/tracing
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
echo 1 >/sys/kernel/tracing/events/virtio_gpu/enable
echo "@@RESULT trace.enable_status=$?"
# Something for fbcon to draw into its framebuffer (a 2D resource, the scanout since the
# driver's probe) and flush: TRANSFER_TO_HOST_2D (0x105) and RESOURCE_FLUSH (0x104), each
# answered OK_NODATA (0x1100) by a device that knows the resource; errors are 0x12xx.
echo "hello from the guest" >/dev/tty0
echo "@@RESULT tty0.write_status=$?"
sleep 1
trace=/sys/kernel/tracing/trace
echo "@@RESULT trace.transfers=$(grep -c 'virtio_gpu_cmd_queue: .* type=0x105 ' $trace)"
echo "@@RESULT trace.flushes=$(grep -c 'virtio_gpu_cmd_queue: .* type=0x104 ' $trace)"
echo "@@RESULT trace.ok_nodata=$(grep -c 'virtio_gpu_cmd_response: .* type=0x1100 ' $trace)"
echo "@@RESULT trace.errors=$(grep -c 'virtio_gpu_cmd_response: .* type=0x12' $trace)"
