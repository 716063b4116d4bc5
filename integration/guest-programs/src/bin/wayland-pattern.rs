// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Shows a known pattern on the host's Wayland compositor through virtio-gpu's cross-domain
//! context, with no sommelier: virtgpu ioctls, the cross-domain protocol, and the Wayland
//! requests a fullscreen wl_shm client needs, written by hand.
//!
//!     wayland-pattern [FRAMES]
//!     wayland-pattern --bench FRAMES
//!     wayland-pattern --echo-fds
//!
//! The buffer is a HOST3D blob the guest maps through the GPU's host-visible BAR. For each
//! frame (2 by default) it draws `guest_programs::pattern`, attaches, damages and commits,
//! waits until the compositor has handled the commit (wl_display.sync), prints
//! `@@SHOW frame=N width=W height=H` and reads a line from stdin before the next frame, so the
//! host can capture the screen in between. With `--bench`, it redraws and commits FRAMES frames
//! as fast as it can (each commit followed by a round trip, so the compositor has handled it)
//! and reports the rate and where the time went. With `--echo-fds` it speaks no Wayland: it
//! waits for the first message that carries files, maps each as a blob (through BAR2, as a
//! client maps a compositor's keymap), reports their bytes, and sends them back. Reports `@@RESULT key=value` lines; exits
//! non-zero on any failure, with the reason on stderr.

use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::BufRead;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::time::Duration;
use std::time::Instant;

use guest_programs::pattern;
use guest_programs::wayland::Client;
use guest_programs::wayland::Result;
use guest_programs::wayland::Transport;
use guest_programs::wayland::TIMEOUT;

// include/uapi/drm/virtgpu_drm.h
const DRM_COMMAND_BASE: u32 = 0x40;
const VIRTGPU_MAP: u32 = 0x01;
const VIRTGPU_EXECBUFFER: u32 = 0x02;
const VIRTGPU_GETPARAM: u32 = 0x03;
const VIRTGPU_GET_CAPS: u32 = 0x09;
const VIRTGPU_RESOURCE_CREATE_BLOB: u32 = 0x0a;
const VIRTGPU_CONTEXT_INIT: u32 = 0x0b;
const VIRTGPU_PARAM_RESOURCE_BLOB: u64 = 3;
const VIRTGPU_PARAM_HOST_VISIBLE: u64 = 4;
const VIRTGPU_PARAM_CONTEXT_INIT: u64 = 6;
const VIRTGPU_PARAM_SUPPORTED_CAPSET_IDS: u64 = 7;
const VIRTGPU_EXECBUF_FENCE_FD_OUT: u32 = 0x02;
const VIRTGPU_EXECBUF_RING_IDX: u32 = 0x04;
const VIRTGPU_BLOB_MEM_GUEST: u32 = 1;
const VIRTGPU_BLOB_MEM_HOST3D: u32 = 2;
const VIRTGPU_BLOB_FLAG_USE_MAPPABLE: u32 = 1;
const VIRTGPU_BLOB_FLAG_USE_SHAREABLE: u32 = 2;
const VIRTGPU_CONTEXT_PARAM_CAPSET_ID: u64 = 1;
const VIRTGPU_CONTEXT_PARAM_NUM_RINGS: u64 = 2;
const VIRTGPU_CONTEXT_PARAM_POLL_RINGS_MASK: u64 = 3;
const VIRTGPU_EVENT_FENCE_SIGNALED: u32 = 0x9000_0000;
const CAPSET_CROSS_DOMAIN: u32 = 5;

// rutabaga_gfx src/cross_domain/cross_domain_protocol.rs
const CMD_INIT: u8 = 1;
const CMD_GET_IMAGE_REQUIREMENTS: u8 = 2;
const CMD_POLL: u8 = 3;
const CMD_SEND: u8 = 4;
const CMD_RECEIVE: u8 = 5;
const CHANNEL_TYPE_WAYLAND: u32 = 1;
const QUERY_RING: u32 = 0;
const CHANNEL_RING: u32 = 1;
const MAX_IDENTIFIERS: usize = 28;
const ID_TYPE_VIRTGPU_BLOB: u32 = 1;
const SEND_RECEIVE_HEADER: usize = 8 + 8 + 3 * 4 * MAX_IDENTIFIERS;
const RING_SIZE: usize = 4096;

const DRM_FORMAT_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");

fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    ((3 << 30) | ((size as u32) << 16) | (0x64 << 8) | (DRM_COMMAND_BASE + nr)) as libc::c_ulong
}

fn ioctl<T>(fd: &File, nr: u32, arg: &mut T) -> Result<()> {
    // SAFETY: `arg` is a live, writable value of the size the request encodes, laid out as the
    // kernel's struct (the #[repr(C)] types below).
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            iowr(nr, std::mem::size_of::<T>()),
            arg as *mut T,
        )
    };
    if ret < 0 {
        return Err(format!(
            "virtgpu ioctl {nr:#x}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct GetParam {
    param: u64,
    value: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetCaps {
    cap_set_id: u32,
    cap_set_ver: u32,
    addr: u64,
    size: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct ContextSetParam {
    param: u64,
    value: u64,
}

#[repr(C)]
#[derive(Default)]
struct ContextInit {
    num_params: u32,
    pad: u32,
    ctx_set_params: u64,
}

#[repr(C)]
#[derive(Default)]
struct CreateBlob {
    blob_mem: u32,
    blob_flags: u32,
    bo_handle: u32,
    res_handle: u32,
    size: u64,
    pad: u32,
    cmd_size: u32,
    cmd: u64,
    blob_id: u64,
}

#[repr(C)]
#[derive(Default)]
struct Map {
    offset: u64,
    handle: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct ExecBuffer {
    flags: u32,
    size: u32,
    command: u64,
    bo_handles: u64,
    num_bo_handles: u32,
    fence_fd: i32,
    ring_idx: u32,
    syncobj_stride: u32,
    num_in_syncobjs: u32,
    num_out_syncobjs: u32,
    in_syncobjs: u64,
    out_syncobjs: u64,
}

/// A blob mapped into this process.
struct Blob {
    res_handle: u32,
    ptr: *mut u8,
    size: usize,
}

impl Blob {
    fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset + len <= self.size);
        let mut out = vec![0u8; len];
        // SAFETY: in bounds of the mapping, checked above; the host writes it only before the
        // fence this program waited for.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), len) };
        out
    }
}

struct Gpu {
    card: File,
}

impl Gpu {
    fn open() -> Result<Gpu> {
        let card = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/dri/card0")
            .map_err(|e| format!("opening /dev/dri/card0: {e}"))?;
        Ok(Gpu { card })
    }

    fn param(&self, param: u64) -> Result<u64> {
        let mut value = 0u64;
        let mut arg = GetParam {
            param,
            value: &mut value as *mut u64 as u64,
        };
        ioctl(&self.card, VIRTGPU_GETPARAM, &mut arg)?;
        Ok(value)
    }

    fn cross_domain_caps(&self) -> Result<[u32; 4]> {
        let mut caps = [0u32; 4];
        let mut arg = GetCaps {
            cap_set_id: CAPSET_CROSS_DOMAIN,
            cap_set_ver: 0,
            addr: caps.as_mut_ptr() as u64,
            size: 16,
            pad: 0,
        };
        ioctl(&self.card, VIRTGPU_GET_CAPS, &mut arg)?;
        Ok(caps)
    }

    fn init_context(&self) -> Result<()> {
        let params = [
            ContextSetParam {
                param: VIRTGPU_CONTEXT_PARAM_CAPSET_ID,
                value: CAPSET_CROSS_DOMAIN.into(),
            },
            ContextSetParam {
                param: VIRTGPU_CONTEXT_PARAM_NUM_RINGS,
                value: 2,
            },
            ContextSetParam {
                param: VIRTGPU_CONTEXT_PARAM_POLL_RINGS_MASK,
                value: 1 << CHANNEL_RING,
            },
        ];
        let mut arg = ContextInit {
            num_params: params.len() as u32,
            pad: 0,
            ctx_set_params: params.as_ptr() as u64,
        };
        ioctl(&self.card, VIRTGPU_CONTEXT_INIT, &mut arg)
    }

    fn create_blob(&self, blob_mem: u32, flags: u32, size: u64, blob_id: u64) -> Result<Blob> {
        let mut create = CreateBlob {
            blob_mem,
            blob_flags: flags,
            size,
            blob_id,
            ..Default::default()
        };
        ioctl(&self.card, VIRTGPU_RESOURCE_CREATE_BLOB, &mut create)?;
        let mut map = Map {
            handle: create.bo_handle,
            ..Default::default()
        };
        ioctl(&self.card, VIRTGPU_MAP, &mut map)?;
        // SAFETY: a new shared mapping of the blob at the offset the driver gave; the result is
        // checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.card.as_raw_fd(),
                map.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!("mmap of blob: {}", io::Error::last_os_error()));
        }
        Ok(Blob {
            res_handle: create.res_handle,
            ptr: ptr.cast(),
            size: size as usize,
        })
    }

    /// Submits cross-domain commands on `ring`; returns the out-fence when asked for one.
    fn submit(&self, commands: &[u8], ring: u32, fence: bool) -> Result<Option<File>> {
        let mut arg = ExecBuffer {
            flags: VIRTGPU_EXECBUF_RING_IDX
                | if fence {
                    VIRTGPU_EXECBUF_FENCE_FD_OUT
                } else {
                    0
                },
            size: commands.len() as u32,
            command: commands.as_ptr() as u64,
            fence_fd: -1,
            ring_idx: ring,
            ..Default::default()
        };
        ioctl(&self.card, VIRTGPU_EXECBUFFER, &mut arg)?;
        // SAFETY: the kernel installed this fd for us when asked for an out-fence.
        Ok(fence.then(|| unsafe { File::from_raw_fd(arg.fence_fd) }))
    }

    /// Waits for the next fence event of a polled ring on the card.
    fn wait_event(&self, deadline: Instant) -> Result<()> {
        loop {
            wait_readable(&self.card, deadline)?;
            let mut buf = [0u8; 64];
            // SAFETY: reads into a live local buffer of its length.
            let n =
                unsafe { libc::read(self.card.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 8 {
                return Err(format!(
                    "reading a DRM event: {}",
                    io::Error::last_os_error()
                ));
            }
            let kind = u32::from_le_bytes(buf[0..4].try_into().unwrap());
            if kind == VIRTGPU_EVENT_FENCE_SIGNALED {
                return Ok(());
            }
        }
    }
}

fn wait_readable(fd: &impl AsRawFd, deadline: Instant) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let ret = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
    match ret {
        1.. => Ok(()),
        0 => Err("timed out waiting for the host".to_string()),
        _ => Err(format!("poll: {}", io::Error::last_os_error())),
    }
}

fn header(cmd: u8, ring: u8, size: usize) -> Vec<u8> {
    let mut out = vec![cmd, ring];
    out.extend_from_slice(&(size as u16).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out
}

/// The cross-domain Wayland channel: sends Wayland bytes with blobs, receives bytes.
struct Channel<'a> {
    gpu: &'a Gpu,
    query_ring: Blob,
    channel_ring: Blob,
    incoming: Vec<u8>,
    /// `(identifier, type, size)` of the files that came with received bytes, oldest first.
    files: Vec<(u32, u32, u32)>,
}

impl<'a> Channel<'a> {
    fn open(gpu: &'a Gpu) -> Result<Channel<'a>> {
        let flags = VIRTGPU_BLOB_FLAG_USE_MAPPABLE;
        let query_ring = gpu.create_blob(VIRTGPU_BLOB_MEM_GUEST, flags, RING_SIZE as u64, 0)?;
        let channel_ring = gpu.create_blob(VIRTGPU_BLOB_MEM_GUEST, flags, RING_SIZE as u64, 0)?;
        let mut init = header(CMD_INIT, 0, 36);
        init.extend_from_slice(&query_ring.res_handle.to_le_bytes());
        init.extend_from_slice(&channel_ring.res_handle.to_le_bytes());
        init.extend_from_slice(&CHANNEL_TYPE_WAYLAND.to_le_bytes());
        init.extend_from_slice(&[0; 16]);
        gpu.submit(&init, QUERY_RING, false)?;
        let channel = Channel {
            gpu,
            query_ring,
            channel_ring,
            incoming: Vec::new(),
            files: Vec::new(),
        };
        channel.arm_poll()?;
        Ok(channel)
    }

    fn arm_poll(&self) -> Result<()> {
        self.gpu.submit(
            &header(CMD_POLL, CHANNEL_RING as u8, 8),
            CHANNEL_RING,
            false,
        )?;
        Ok(())
    }

    /// `(stride, offset, size, blob_id)` of an XRGB8888 image.
    fn image_requirements(&self, width: u32, height: u32) -> Result<(u32, u32, u64, u64)> {
        let mut cmd = header(CMD_GET_IMAGE_REQUIREMENTS, 0, 24);
        for value in [width, height, DRM_FORMAT_XRGB8888, 0] {
            cmd.extend_from_slice(&value.to_le_bytes());
        }
        let fence = self.gpu.submit(&cmd, QUERY_RING, true)?.expect("asked");
        wait_readable(&fence, Instant::now() + TIMEOUT)?;
        let reply = self.query_ring.read(0, 64);
        let word = |i: usize| u32::from_le_bytes(reply[i * 4..i * 4 + 4].try_into().unwrap());
        let size = u64::from_le_bytes(reply[40..48].try_into().unwrap());
        Ok((word(0), word(4), size, word(12).into()))
    }

    fn send(&self, data: &[u8], blobs: &[u32]) -> Result<()> {
        let mut cmd = header(CMD_SEND, 0, SEND_RECEIVE_HEADER + data.len());
        cmd.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
        cmd.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let mut ids = [0u32; MAX_IDENTIFIERS * 3];
        for (i, blob) in blobs.iter().enumerate() {
            ids[i] = *blob;
            ids[MAX_IDENTIFIERS + i] = ID_TYPE_VIRTGPU_BLOB;
        }
        for id in ids {
            cmd.extend_from_slice(&id.to_le_bytes());
        }
        cmd.extend_from_slice(data);
        self.gpu.submit(&cmd, QUERY_RING, false)?;
        Ok(())
    }

    /// Waits for bytes from the compositor and appends them to `incoming`.
    fn receive_one(&mut self, deadline: Instant) -> Result<()> {
        self.gpu.wait_event(deadline)?;
        let head = self.channel_ring.read(0, SEND_RECEIVE_HEADER);
        if head[0] != CMD_RECEIVE {
            return Err(format!("unexpected channel ring command {}", head[0]));
        }
        let identifiers = u32::from_le_bytes(head[8..12].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
        let word = |i: usize| u32::from_le_bytes(head[16 + i * 4..20 + i * 4].try_into().unwrap());
        for i in 0..identifiers.min(MAX_IDENTIFIERS) {
            self.files.push((
                word(i),
                word(MAX_IDENTIFIERS + i),
                word(2 * MAX_IDENTIFIERS + i),
            ));
        }
        if len > RING_SIZE - SEND_RECEIVE_HEADER {
            return Err(format!("channel ring holds {len} bytes"));
        }
        let data = self.channel_ring.read(SEND_RECEIVE_HEADER, len);
        self.incoming.extend_from_slice(&data);
        self.arm_poll()
    }
}

impl Transport for Channel<'_> {
    /// A blob's resource handle.
    type File = u32;

    fn send(&mut self, data: &[u8], blobs: &[u32]) -> Result<()> {
        Channel::send(self, data, blobs)
    }

    fn receive(&mut self, into: &mut Vec<u8>, deadline: Instant) -> Result<()> {
        self.receive_one(deadline)?;
        into.append(&mut self.incoming);
        Ok(())
    }
}

/// `--echo-fds`: the files of the first message that carries any, mapped and sent back.
fn echo_fds(gpu: &Gpu) -> Result<()> {
    let mut channel = Channel::open(gpu)?;
    let deadline = Instant::now() + TIMEOUT;
    while channel.files.is_empty() {
        channel.receive_one(deadline)?;
    }
    println!(
        "@@RESULT echo.bytes={}",
        String::from_utf8_lossy(&channel.incoming)
    );
    let mut echoed = Vec::new();
    for (i, (id, kind, size)) in std::mem::take(&mut channel.files).into_iter().enumerate() {
        if kind != ID_TYPE_VIRTGPU_BLOB {
            return Err(format!("file {i} has identifier type {kind}"));
        }
        // As a Wayland proxy maps a keymap: a host blob of whole pages, mapped through BAR2.
        let pages = u64::from(size).div_ceil(4096) * 4096;
        let blob = gpu.create_blob(
            VIRTGPU_BLOB_MEM_HOST3D,
            VIRTGPU_BLOB_FLAG_USE_MAPPABLE,
            pages,
            id.into(),
        )?;
        let bytes = blob.read(0, size as usize);
        println!("@@RESULT echo.file{i}.size={size}");
        println!(
            "@@RESULT echo.file{i}.text={}",
            String::from_utf8_lossy(&bytes).trim_end_matches('\0')
        );
        echoed.extend_from_slice(&bytes);
    }
    channel.send(&echoed, &[])?;
    println!("@@RESULT echo.sent={}", echoed.len());
    Ok(())
}

fn run(frames: u32, bench: bool) -> Result<()> {
    let gpu = Gpu::open()?;
    for (name, param) in [
        ("resource_blob", VIRTGPU_PARAM_RESOURCE_BLOB),
        ("host_visible", VIRTGPU_PARAM_HOST_VISIBLE),
        ("context_init", VIRTGPU_PARAM_CONTEXT_INIT),
    ] {
        let value = gpu.param(param)?;
        println!("@@RESULT virtgpu.{name}={value}");
        if value == 0 {
            return Err(format!("the device lacks {name}"));
        }
    }
    let capsets = gpu.param(VIRTGPU_PARAM_SUPPORTED_CAPSET_IDS)?;
    println!("@@RESULT virtgpu.capsets={capsets:#x}");
    if capsets & (1 << CAPSET_CROSS_DOMAIN) == 0 {
        return Err("no cross-domain capset".into());
    }
    let caps = gpu.cross_domain_caps()?;
    println!("@@RESULT cross_domain.channels={:#x}", caps[1]);
    gpu.init_context()?;
    if std::env::args().nth(1).as_deref() == Some("--echo-fds") {
        return echo_fds(&gpu);
    }
    let mut client = Client::new(Channel::open(&gpu)?, (640, 480));
    let globals = client.fullscreen_surface("wayland-pattern")?;
    println!("@@RESULT wayland.globals={globals}");
    let (width, height) = client.size;
    println!("@@RESULT wayland.size={width}x{height}");

    // The buffer: a host-visible blob, mapped through BAR2.
    let (stride, offset, size, blob_id) = client.transport.image_requirements(width, height)?;
    println!("@@RESULT blob.stride={stride}");
    println!("@@RESULT blob.size={size}");
    if stride < width * 4 || offset as u64 + stride as u64 * height as u64 > size {
        return Err(format!(
            "unusable layout: stride {stride} offset {offset} size {size}"
        ));
    }
    let flags = VIRTGPU_BLOB_FLAG_USE_MAPPABLE | VIRTGPU_BLOB_FLAG_USE_SHAREABLE;
    let buffer = gpu.create_blob(VIRTGPU_BLOB_MEM_HOST3D, flags, size, blob_id)?;
    client.create_buffer(buffer.res_handle, size as u32, offset, stride)?;

    if bench {
        return run_bench(
            &mut client,
            &buffer,
            frames,
            (width, height, stride, offset),
        );
    }
    let stdin = io::stdin();
    for frame in 0..frames {
        draw(&buffer, frame, width, height, stride, offset);
        client.commit()?;
        client.roundtrip()?;
        println!("@@SHOW frame={frame} width={width} height={height}");
        io::stdout().flush().ok();
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading stdin: {e}"))?;
    }
    println!("@@RESULT frames.shown={frames}");
    Ok(())
}

fn run_bench(
    client: &mut Client<Channel>,
    buffer: &Blob,
    frames: u32,
    (width, height, stride, offset): (u32, u32, u32, u32),
) -> Result<()> {
    if width % 2 != 0 {
        return Err("--bench needs an even width".into());
    }
    // As a Wayland proxy does (wayland-proxy-virtwl, sommelier), each frame is copied into the
    // blob from a buffer of the client's, here two alternating frames drawn beforehand.
    let frames_in_ram: Vec<Vec<u64>> = (0..2)
        .map(|frame| {
            (0..height)
                .flat_map(|y| {
                    (0..width.div_ceil(2)).map(move |pair| {
                        let x = pair * 2;
                        let right = if x + 1 < width {
                            pattern(frame, x + 1, y, width, height)
                        } else {
                            0
                        };
                        u64::from(pattern(frame, x, y, width, height)) | (u64::from(right) << 32)
                    })
                })
                .collect()
        })
        .collect();
    let mut draw_time = Duration::ZERO;
    let mut commit_time = Duration::ZERO;
    let start = Instant::now();
    for frame in 0..frames {
        let drawn = Instant::now();
        copy_frame(
            buffer,
            &frames_in_ram[frame as usize % 2],
            width,
            height,
            stride,
            offset,
        );
        draw_time += drawn.elapsed();
        let committed = Instant::now();
        client.commit()?;
        client.roundtrip()?;
        commit_time += committed.elapsed();
    }
    let total = start.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(frames.max(1));
    println!("@@RESULT bench.frames={frames}");
    println!("@@RESULT bench.size={width}x{height}");
    println!(
        "@@RESULT bench.fps={:.3}",
        f64::from(frames) / total.as_secs_f64()
    );
    println!("@@RESULT bench.frame_ms={:.1}", ms(total));
    println!("@@RESULT bench.draw_ms={:.1}", ms(draw_time));
    println!("@@RESULT bench.commit_ms={:.1}", ms(commit_time));
    Ok(())
}

/// Copies a frame of `width.div_ceil(2)` pixel pairs per row into the blob with 8-byte volatile
/// stores, the accesses `draw` makes. `width` must be even.
fn copy_frame(buffer: &Blob, frame: &[u64], width: u32, height: u32, stride: u32, offset: u32) {
    let pairs = width.div_ceil(2) as usize;
    for y in 0..height as usize {
        let at = offset as usize + y * stride as usize;
        assert!(at + pairs * 8 <= buffer.size && at.is_multiple_of(8));
        let row = &frame[y * pairs..(y + 1) * pairs];
        for (i, pixels) in row.iter().enumerate() {
            // SAFETY: inside the blob's mapping (checked above for the row), 8-aligned.
            unsafe { std::ptr::write_volatile(buffer.ptr.add(at + i * 8).cast(), *pixels) };
        }
    }
}

/// Draws `frame` with 8-byte volatile stores: device memory takes them as they come, and a
/// client that traps the BAR gets one message per store (a byte-wise `rep movsb` would make
/// eight).
fn draw(buffer: &Blob, frame: u32, width: u32, height: u32, stride: u32, offset: u32) {
    for y in 0..height {
        let at = offset as usize + y as usize * stride as usize;
        assert!(at + width as usize * 4 <= buffer.size && at.is_multiple_of(8));
        for x in (0..width).step_by(2) {
            let left = u64::from(pattern(frame, x, y, width, height));
            let right = if x + 1 < width {
                u64::from(pattern(frame, x + 1, y, width, height))
            } else {
                0
            };
            let pixels = left | (right << 32);
            if x + 1 < width {
                // SAFETY: inside the blob's mapping (checked above for the row), 8-aligned.
                unsafe {
                    std::ptr::write_volatile(buffer.ptr.add(at + x as usize * 4).cast(), pixels)
                };
            } else {
                // SAFETY: as above, the row's last 4 bytes.
                unsafe {
                    std::ptr::write_volatile(
                        buffer.ptr.add(at + x as usize * 4).cast::<u32>(),
                        left as u32,
                    )
                };
            }
        }
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.first().is_some_and(|a| a == "--bench");
    if bench || args.first().is_some_and(|a| a == "--echo-fds") {
        args.remove(0);
    }
    let frames = match args.first().map(|a| a.parse::<u32>()) {
        None => 2,
        Some(Ok(frames)) => frames,
        Some(Err(_)) => {
            eprintln!("usage: wayland-pattern [--bench] [FRAMES] | --echo-fds");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(frames, bench) {
        eprintln!("wayland-pattern: {e}");
        println!("@@RESULT error={e}");
        std::process::exit(1);
    }
}
