#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for virtio-balloon driven from the host: a 16 MiB pattern is kept in memory
# throughout; 224 MiB of free memory is touched (so that the pages the balloon takes are pages the host
# had given), then the host is told to inflate ("@@STEP inflate") and to deflate
# ("@@STEP deflate"), each step answered on the console once done; after deflating, 192 MiB is
# written and read back, and the host measures ("@@STEP measure").
# Runs after report-device.sh, which reports the function and its drivers.

free_kb() { awk '/^MemFree:/ { print $2 }' /proc/meminfo; }

yes 'vfio-user virtio-balloon pattern 0123456789abcdef' | head -c 16777216 >/tmp/pattern
echo "@@RESULT balloon.pattern_md5=$(md5sum </tmp/pattern | cut -d' ' -f1)"
# /tmp is a tmpfs of half the memory, with the pattern in it already.
dd if=/dev/zero of=/tmp/fill bs=1M count=224 2>/dev/null
echo "@@RESULT balloon.touched_bytes=$(wc -c </tmp/fill)"
rm /tmp/fill
echo "@@RESULT balloon.free_before_kb=$(free_kb)"
echo "@@STEP inflate"
read -r answer
echo "@@RESULT balloon.inflate=$answer"
echo "@@RESULT balloon.free_inflated_kb=$(free_kb)"
echo "@@RESULT balloon.pattern_md5_inflated=$(md5sum </tmp/pattern | cut -d' ' -f1)"
echo "@@STEP deflate"
read -r answer
echo "@@RESULT balloon.deflate=$answer"
echo "@@RESULT balloon.free_deflated_kb=$(free_kb)"
dd if=/dev/zero bs=1M count=192 2>/dev/null | tr '\0' 'b' >/tmp/refill
echo "@@RESULT balloon.refill_status=$?"
echo "@@RESULT balloon.refill_md5=$(md5sum </tmp/refill | cut -d' ' -f1)"
echo "@@RESULT balloon.refill_expected_md5=$(dd if=/dev/zero bs=1M count=192 2>/dev/null | tr '\0' 'b' | md5sum | cut -d' ' -f1)"
echo "@@RESULT balloon.pattern_md5_after=$(md5sum </tmp/pattern | cut -d' ' -f1)"
echo "@@STEP measure"
read -r answer
echo "@@RESULT balloon.measure=$answer"
