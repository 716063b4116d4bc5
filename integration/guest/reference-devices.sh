#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script: finds every reference device (vendor 0x1b36, device 0x7fff) and reports, for
# the Nth one in bus order, devN.KEY=VALUE results: what the kernel enumerated (class, BAR
# sizes and types, the MSI-X capability) and what MMIO reads and writes through the server
# return. Also reports the number of devices found as `devices`. The harness judges the values.

# The byte at offset $2 of device $1's config space, in decimal.
config_byte() {
    od -An -tu1 -j "$2" -N 1 "$1/config" | tr -d ' \n'
}

# "start end flags" of BAR $2 of device $1: line $2 + 1 of its resource file.
bar_resource() {
    sed -n "$(($2 + 1))p" "$1/resource"
}

# Reports the size and 64-bitness of BAR $3 of device $1 as result prefix $2.
report_bar() {
    set -- "$1" "$2" "$3" $(bar_resource "$1" "$3")
    start=$4 end=$5 flags=$6
    size=0
    [ "$((end))" -ne 0 ] && size=$((end - start + 1))
    # IORESOURCE_MEM_64
    is64=$(((flags & 0x100000) != 0))
    echo "@@RESULT $2.bar$3_size=$(printf '0x%x' "$size")"
    echo "@@RESULT $2.bar$3_64bit=$is64"
}

# Walks the capability list of device $1 for MSI-X (id 0x11); prints its offset or "none".
msix_offset() {
    pointer=$(($(config_byte "$1" 0x34) & 0xfc))
    hops=0
    while [ "$pointer" -ne 0 ] && [ "$hops" -lt 48 ]; do
        if [ "$(config_byte "$1" "$pointer")" -eq 17 ]; then
            printf '0x%x\n' "$pointer"
            return
        fi
        pointer=$(($(config_byte "$1" $((pointer + 1))) & 0xfc))
        hops=$((hops + 1))
    done
    echo none
}

report_msix() {
    offset=$(msix_offset "$1")
    echo "@@RESULT $2.msix_cap=$offset"
    [ "$offset" = none ] && return
    control=$(($(config_byte "$1" $((offset + 2))) | $(config_byte "$1" $((offset + 3))) << 8))
    echo "@@RESULT $2.msix_vectors=$(((control & 0x7ff) + 1))"
}

# MMIO through QEMU to the server: BAR0's ID and scratch registers (trapped), and BAR2's
# trapped first page and its mmapped rest, each written with $3 and read back.
report_mmio() {
    bar0=$(bar_resource "$1" 0 | cut -d' ' -f1)
    bar2=$(bar_resource "$1" 2 | cut -d' ' -f1)
    # No driver binds the device, so its memory decoding is enabled here.
    echo 1 >"$1/enable"
    echo "@@RESULT $2.bar0_id=$(devmem $((bar0)) 32)"
    devmem $((bar0 + 0x28)) 32 "$3"
    echo "@@RESULT $2.bar0_scratch=$(devmem $((bar0 + 0x28)) 32)"
    devmem $((bar2 + 0x10)) 32 "$3"
    echo "@@RESULT $2.bar2_trapped=$(devmem $((bar2 + 0x10)) 32)"
    devmem $((bar2 + 0x1010)) 32 "$3"
    echo "@@RESULT $2.bar2_mapped=$(devmem $((bar2 + 0x1010)) 32)"
}

# Once every device has been written: each must still hold its own value.
report_scratch_again() {
    bar0=$(bar_resource "$1" 0 | cut -d' ' -f1)
    echo "@@RESULT $2.bar0_scratch_last=$(devmem $((bar0 + 0x28)) 32)"
}

# The sysfs directories of the reference devices, in bus order.
reference_devices() {
    for dev in /sys/bus/pci/devices/*; do
        [ "$(cat "$dev/vendor")" = 0x1b36 ] && [ "$(cat "$dev/device")" = 0x7fff ] && echo "$dev"
    done
}

devices=$(reference_devices)
n=0
for dev in $devices; do
    id=dev$n
    echo "@@RESULT $id.address=${dev##*/}"
    echo "@@RESULT $id.class=$(cat "$dev/class")"
    report_bar "$dev" "$id" 0
    report_bar "$dev" "$id" 2
    report_msix "$dev" "$id"
    # A value per device, to tell the devices' registers apart.
    report_mmio "$dev" "$id" "$(printf '0x5a5a%04x' "$n")"
    n=$((n + 1))
done
echo "@@RESULT devices=$n"

n=0
for dev in $devices; do
    report_scratch_again "$dev" "dev$n"
    echo 0 >"$dev/enable"
    n=$((n + 1))
done
