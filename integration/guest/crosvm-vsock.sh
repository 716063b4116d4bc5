#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-vsock device on the host's vhost-vsock: the function, its driver,
# and the vsock character device the transport makes.
# Runs after report-device.sh, which reports the function and its drivers.

[ -e /dev/vsock ] && echo "@@RESULT vsock.dev=present"
