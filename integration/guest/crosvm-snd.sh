#!/bin/sh
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Guest script for a virtio-snd: the function, its drivers, and the sound card the driver makes
# from what the device answers on its control queue (jacks, PCM streams, channel maps).
# Runs after report-device.sh, which reports the function and its drivers.

echo "@@RESULT snd.cards=$(grep -c '^ *[0-9]* \[' /proc/asound/cards 2>/dev/null)"
echo "@@RESULT snd.card0=$(sed -n 's/^ *0 \[[^]]*\]: *//p' /proc/asound/cards 2>/dev/null)"
echo "@@RESULT snd.playback_streams=$(grep -c 'playback' /proc/asound/pcm 2>/dev/null)"
echo "@@RESULT snd.capture_streams=$(grep -c 'capture' /proc/asound/pcm 2>/dev/null)"
cat /proc/asound/pcm 2>/dev/null
