// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Programs the integration tests run inside their guests (built statically, put in the
//! initramfs), and what the host side of a test shares with them.

pub mod wayland;

/// The XRGB8888 pixel a guest program draws at `(x, y)` of a `width` x `height` frame number
/// `frame`; the host compares its screenshots with it. Red and green follow x and y, blue is a
/// 32-pixel checkerboard whose phase flips with every frame, so consecutive frames differ at
/// every pixel.
pub fn pattern(frame: u32, x: u32, y: u32, width: u32, height: u32) -> u32 {
    let red = x * 255 / width.saturating_sub(1).max(1);
    let green = y * 255 / height.saturating_sub(1).max(1);
    let blue = if (x / 32 + y / 32 + frame).is_multiple_of(2) {
        0x20
    } else {
        0xe0
    };
    (red.min(255) << 16) | (green.min(255) << 8) | blue
}

/// The sample rate and channel count `pcm-play` plays at (S16_LE).
pub const PCM_RATE: u32 = 48_000;
pub const PCM_CHANNELS: u32 = 2;

/// The sample `pcm-play` plays for `channel` of frame `frame`: a sawtooth per channel that never
/// repeats within a second, so a host can find where it starts and check every sample after.
pub fn pcm_sample(frame: usize, channel: u32) -> i16 {
    ((frame as u32)
        .wrapping_mul(3)
        .wrapping_add(channel * 0x4000)
        % 0x10000) as u16 as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_differ_everywhere_and_corners_span_the_range() {
        for (x, y) in [(0, 0), (639, 479), (100, 200)] {
            assert_ne!(pattern(0, x, y, 640, 480), pattern(1, x, y, 640, 480));
        }
        assert_eq!(pattern(0, 0, 0, 640, 480), 0x000020);
        assert_eq!(pattern(0, 639, 479, 640, 480) >> 8, 0xffff);
    }
}
