// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Plays `guest_programs::pcm_sample` frames on an ALSA playback device through the kernel's
//! PCM ioctls (no alsa-lib in the guest): 48 kHz, 2 channels, S16_LE.
//!
//!     pcm-play DEVICE FRAMES
//!
//! Reports `@@RESULT pcm.*` lines; exits non-zero on failure, with the reason on stderr.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use guest_programs::pcm_sample;
use guest_programs::PCM_CHANNELS;
use guest_programs::PCM_RATE;

// include/uapi/sound/asound.h
const ACCESS_RW_INTERLEAVED: u32 = 3;
const FORMAT_S16_LE: u32 = 2;
const SUBFORMAT_STD: u32 = 0;
const PARAM_CHANNELS: usize = 10;
const PARAM_RATE: usize = 11;
const PARAM_PERIOD_SIZE: usize = 13;
const PARAM_BUFFER_SIZE: usize = 17;
const FIRST_INTERVAL: usize = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct Interval {
    min: u32,
    max: u32,
    /// openmin:1, openmax:1, integer:1, empty:1
    flags: u32,
}

#[repr(C)]
struct HwParams {
    flags: u32,
    masks: [[u32; 8]; 3],
    mres: [[u32; 8]; 5],
    intervals: [Interval; 12],
    ires: [Interval; 9],
    rmask: u32,
    cmask: u32,
    info: u32,
    msbits: u32,
    rate_num: u32,
    rate_den: u32,
    fifo_size: u64,
    sync: [u8; 16],
    reserved: [u8; 48],
}

#[repr(C)]
struct XferI {
    result: i64,
    buf: u64,
    frames: u64,
}

/// `struct snd_pcm_sw_params`.
#[repr(C)]
struct SwParams {
    tstamp_mode: i32,
    period_step: u32,
    sleep_min: u32,
    avail_min: u64,
    xfer_align: u64,
    start_threshold: u64,
    stop_threshold: u64,
    silence_threshold: u64,
    silence_size: u64,
    boundary: u64,
    proto: u32,
    tstamp_type: u32,
    reserved: [u8; 56],
}

const _: () = assert!(std::mem::size_of::<HwParams>() == 608);
const _: () = assert!(std::mem::size_of::<SwParams>() == 136);
const _: () = assert!(std::mem::size_of::<XferI>() == 24);

fn io(dir: u64, nr: u64, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | (0x41 << 8) | nr) as libc::c_ulong
}

fn ioctl<T>(fd: i32, request: libc::c_ulong, arg: *mut T, what: &str) -> Result<(), String> {
    // SAFETY: `arg` is null for argument-less requests, or points to a live value of the size
    // the request encodes, laid out as the kernel's struct.
    let ret = unsafe { libc::ioctl(fd, request, arg) };
    if ret < 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// 100 ms periods: few enough messages through the device that an emulated guest keeps up.
const PERIOD_FRAMES: u32 = PCM_RATE / 10;

fn interval(value: u32) -> Interval {
    Interval {
        min: value,
        max: value,
        flags: 1 << 2,
    }
}

fn run(device: &str, frames: usize) -> Result<(), String> {
    let pcm = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("opening {device}: {e}"))?;
    let fd = pcm.as_raw_fd();
    let any = Interval {
        min: 0,
        max: u32::MAX,
        flags: 0,
    };
    let mut params = HwParams {
        flags: 0,
        masks: [[u32::MAX; 8]; 3],
        mres: [[0; 8]; 5],
        intervals: [any; 12],
        ires: [any; 9],
        rmask: u32::MAX,
        cmask: 0,
        info: 0,
        msbits: 0,
        rate_num: 0,
        rate_den: 0,
        fifo_size: 0,
        sync: [0; 16],
        reserved: [0; 48],
    };
    for (mask, bit) in [
        (0, ACCESS_RW_INTERLEAVED),
        (1, FORMAT_S16_LE),
        (2, SUBFORMAT_STD),
    ] {
        params.masks[mask] = [0; 8];
        params.masks[mask][(bit / 32) as usize] = 1 << (bit % 32);
    }
    params.intervals[PARAM_CHANNELS - FIRST_INTERVAL] = interval(PCM_CHANNELS);
    params.intervals[PARAM_RATE - FIRST_INTERVAL] = interval(PCM_RATE);
    params.intervals[PARAM_PERIOD_SIZE - FIRST_INTERVAL] = interval(PERIOD_FRAMES);
    params.intervals[PARAM_BUFFER_SIZE - FIRST_INTERVAL] = Interval {
        min: 4 * PERIOD_FRAMES,
        max: PCM_RATE,
        flags: 0,
    };
    let hw_params = io(3, 0x11, std::mem::size_of::<HwParams>());
    ioctl(fd, hw_params, &mut params, "HW_PARAMS")?;
    // The kernel answers with the values it chose.
    let period = params.intervals[PARAM_PERIOD_SIZE - FIRST_INTERVAL].min;
    let buffer = params.intervals[PARAM_BUFFER_SIZE - FIRST_INTERVAL].min;
    println!("@@RESULT pcm.period_frames={period}");
    println!("@@RESULT pcm.buffer_frames={buffer}");
    // Start only once the whole buffer is queued: the device then consumes in real time, and
    // the buffer is the guest's margin for refilling it (under emulation the guest is slow).
    let mut software = SwParams {
        tstamp_mode: 0,
        period_step: 1,
        sleep_min: 0,
        avail_min: u64::from(period),
        xfer_align: 1,
        start_threshold: u64::from(buffer),
        stop_threshold: u64::from(buffer),
        silence_threshold: 0,
        silence_size: 0,
        boundary: 0,
        proto: 0,
        tstamp_type: 0,
        reserved: [0; 56],
    };
    let sw_params = io(3, 0x13, std::mem::size_of::<SwParams>());
    ioctl(fd, sw_params, &mut software, "SW_PARAMS")?;
    ioctl(fd, io(0, 0x40, 0), std::ptr::null_mut::<u8>(), "PREPARE")?;

    let samples: Vec<i16> = (0..frames)
        .flat_map(|frame| (0..PCM_CHANNELS).map(move |channel| pcm_sample(frame, channel)))
        .collect();
    let frame_bytes = 2 * PCM_CHANNELS as usize;
    let mut done = 0usize;
    let writei = io(1, 0x50, std::mem::size_of::<XferI>());
    while done < frames {
        let chunk = (frames - done).min(PERIOD_FRAMES as usize);
        let mut xfer = XferI {
            result: 0,
            // SAFETY: in bounds of `samples`: done + chunk <= frames.
            buf: unsafe { samples.as_ptr().cast::<u8>().add(done * frame_bytes) } as u64,
            frames: chunk as u64,
        };
        ioctl(fd, writei, &mut xfer, "WRITEI_FRAMES")?;
        done += xfer.result as usize;
    }
    ioctl(fd, io(0, 0x44, 0), std::ptr::null_mut::<u8>(), "DRAIN")?;
    println!("@@RESULT pcm.frames={done}");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(device), Some(Ok(frames))) = (args.get(1), args.get(2).map(|f| f.parse())) else {
        eprintln!("usage: pcm-play DEVICE FRAMES");
        std::process::exit(2);
    };
    if let Err(e) = run(device, frames) {
        eprintln!("pcm-play: {e}");
        println!("@@RESULT pcm.error={e}");
        std::process::exit(1);
    }
}
