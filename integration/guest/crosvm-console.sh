#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-console whose host side is an output file and an input FIFO:
# writes a line to /dev/hvc0 for the host to find in its output file, then reads the line the
# host writes into the FIFO in answer.
# Runs after report-device.sh, which reports the function and its drivers.

if [ ! -c /dev/hvc0 ]; then
    echo "@@ERROR no /dev/hvc0"
    exit 1
fi
# One open file for the whole exchange: the tty drops unread input when its last user closes it.
exec 3<>/dev/hvc0
# Raw and without echo: the bytes go through unchanged, and what the host sends is not written
# back to its output file.
stty raw -echo <&3
echo "@@RESULT console.stty_status=$?"
echo "hello from the guest" >&3
echo "@@RESULT console.write_status=$?"
# The host sends its line, 20 bytes ("hello from the host\n"), once it has read ours.
got=$(timeout 60 head -c 20 <&3)
echo "@@RESULT console.read_status=$?"
echo "@@RESULT console.input=$got"
exec 3<&-
