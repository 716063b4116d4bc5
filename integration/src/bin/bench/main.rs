// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Benchmarks `vfio_user_server` (serving the reference device) against the rust-vmm
//! `vfio_user` crate's server and a bare echo, with the same client code for every peer. It prints
//! figures and ratios and asserts nothing about speed.
//!
//!     cargo run --release -p integration --bin bench
//!
//! 1. 4-byte REGION_READ / REGION_WRITE round trips on BAR0's SCRATCH register.
//! 2. DMA_MAP + DMA_UNMAP of 1,000 windows of one memfd, the fd passed with each map.
//! 3. The reference server's RSS with 512 MiB mapped, untouched and then written by the client.
//! 4. REGION_WRITE round trips, ours with adaptive polling (`--poll-us`) off and at a few
//!    settings, against the echo: all on one CPU, then client and servers on different CPUs.
//!
//! The bench re-executes itself for every peer:
//!
//!     bench serve-reference --socket PATH
//!                                    our server with the reference device (as `reference-server`)
//!     bench serve-rust-vmm PATH      the rust-vmm `vfio_user::Server` with a scratch register
//!     bench serve-echo PATH          reads a message, writes a reply of our server's size
//!     bench loop PATH (read|write|dma) COUNT [--no-version]
//!                                    only the client loop, against a running server (for
//!                                    strace/perf); for dma, COUNT regions are mapped then
//!                                    unmapped
//!
//! `BENCH_OPS` overrides the number of measured round trips per case. In sections 1 to 3 the
//! client and every server run on one CPU, so that the figures measure the software (syscalls,
//! context switches, the server's own work) and not where the scheduler puts the processes or how
//! long an idle CPU takes to wake up; `BENCH_PIN=0` leaves the placement to the scheduler.
//! Section 4 measures that wakeup too: client and servers on two different CPUs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::io::BufRead;
use std::io::BufReader;
use std::io::IoSlice;
use std::io::Read;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::procfs::sched_of;
use integration::raw_client::QEMU_CAPABILITIES;
use integration::reference::regs;
use integration::reference::BAR0_SIZE;
use integration::serve;
use integration::serve::REFERENCE_READY;
use integration::serve::SERVE_REFERENCE;
use vfio_user::DmaMapFlags;
use vfio_user::DmaUnmapFlags;
use vfio_user::IrqInfo;
use vfio_user::ServerBackend;
use vfio_user::ServerRegion;
use vfio_user_server::protocol::command;
use vfio_user_server::protocol::header_flags;
use vfio_user_server::protocol::read_struct;
use vfio_user_server::protocol::DmaMap;
use vfio_user_server::protocol::DmaUnmap;
use vfio_user_server::protocol::Header;
use vfio_user_server::protocol::RegionAccess;
use vfio_user_server::protocol::Version;
use vfio_user_server::protocol::DMA_MAP_FLAG_READ;
use vfio_user_server::protocol::DMA_MAP_FLAG_WRITE;
use vfio_user_server::protocol::HEADER_SIZE;
use vfio_user_server::protocol::REGION_INFO_FLAG_READ;
use vfio_user_server::protocol::REGION_INFO_FLAG_WRITE;
use vfio_user_server::sys;
use vfio_user_server::sys::MappedFile;
use zerocopy::IntoBytes;

mod polling;

/// What the bench's own server processes print on stderr once they accept connections.
const READY: &str = "bench: listening";

const WARMUP_OPS: usize = 10_000;
const DEFAULT_OPS: usize = 200_000;
/// The measured ops of a case are split in rounds, interleaved across the peers, so that a
/// slow phase of the machine does not land on one peer only.
const ROUNDS: usize = 4;

const DMA_REGIONS: usize = 1_000;
const DMA_WINDOW: u64 = 64 << 10;
/// Guest addresses of the windows: distinct and not adjacent.
const DMA_BASE: u64 = 0x1_0000_0000;
const DMA_STRIDE: u64 = 2 << 20;
const DMA_MEASURED_ROUNDS: usize = 3;

const RSS_MAP_SIZE: u64 = 512 << 20;
const RSS_MAP_ADDRESS: u64 = 0x4000_0000;

/// Targets for the p50 round trip of ours relative to the peers.
const TARGET_VS_ECHO: f64 = 1.1;
const TARGET_VS_RUST_VMM: f64 = 0.8;

fn main() -> Result<()> {
    serve::serve_if_asked();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    match args.as_slice() {
        [] => run_bench(),
        [sub, path] if *sub == "serve-rust-vmm" => serve_rust_vmm(Path::new(path)),
        [sub, path] if *sub == "serve-echo" => serve_echo(Path::new(path)),
        [sub, path, op, count, rest @ ..] if *sub == "loop" => {
            let op = match op.to_str() {
                Some("read") => Some(Op::Read),
                Some("write") => Some(Op::Write),
                Some("dma") => None,
                _ => bail!("loop takes read, write or dma"),
            };
            let count: usize = count
                .to_str()
                .and_then(|s| s.parse().ok())
                .context("loop takes a count")?;
            let version = match rest {
                [] => true,
                [flag] if *flag == "--no-version" => false,
                _ => bail!("usage: bench loop PATH (read|write|dma) COUNT [--no-version]"),
            };
            client_loop(Path::new(path), op, count, version)
        }
        _ => bail!(
            "usage: bench | bench serve-rust-vmm PATH | bench serve-echo PATH | \
             bench loop PATH (read|write|dma) COUNT [--no-version]"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The client, the same for every peer.

/// Builds a command message: header (msg_id patched in by [`Client::call`]) and body parts.
fn message(command: u16, parts: &[&[u8]]) -> Vec<u8> {
    let size = HEADER_SIZE + parts.iter().map(|part| part.len()).sum::<usize>();
    let header = Header {
        msg_id: 0,
        command,
        msg_size: size as u32,
        flags: header_flags::TYPE_COMMAND,
        error: 0,
    };
    let mut bytes = header.as_bytes().to_vec();
    for part in parts {
        bytes.extend_from_slice(part);
    }
    bytes
}

struct Client {
    stream: UnixStream,
    next_id: u16,
    /// Body of the last reply.
    body: Vec<u8>,
}

impl Client {
    fn connect(path: &Path) -> Result<Client> {
        let stream =
            UnixStream::connect(path).with_context(|| format!("connecting {}", path.display()))?;
        // A server that stops answering fails the bench instead of hanging it.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client {
            stream,
            next_id: 1,
            body: Vec::with_capacity(4096),
        })
    }

    /// Sends `request` (a whole message) in one write, `fds` attached, then reads the reply:
    /// header, then body (left in `self.body`). An error reply is an error.
    fn call(&mut self, request: &mut [u8], fds: &[BorrowedFd]) -> Result<Header> {
        let msg_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        request[0..2].copy_from_slice(&msg_id.to_le_bytes());
        if fds.is_empty() {
            (&self.stream).write_all(request)?;
        } else {
            let sent = sys::send_with_fds(self.stream.as_fd(), &[IoSlice::new(request)], fds)?;
            (&self.stream).write_all(&request[sent..])?;
        }
        let mut header_bytes = [0u8; HEADER_SIZE];
        (&self.stream).read_exact(&mut header_bytes)?;
        let header: Header = read_struct(&header_bytes).expect("buffer is header-sized");
        let body_len = (header.msg_size as usize)
            .checked_sub(HEADER_SIZE)
            .with_context(|| format!("reply with msg_size {}", header.msg_size))?;
        self.body.resize(body_len, 0);
        (&self.stream).read_exact(&mut self.body)?;
        let command = u16::from_le_bytes([request[2], request[3]]);
        if header.msg_id != msg_id
            || header.command != command
            || header.message_type() != header_flags::TYPE_REPLY
        {
            bail!("{header:?} does not answer command {command} id {msg_id}");
        }
        if header.is_error() {
            bail!("command {command} failed with errno {}", header.error);
        }
        Ok(header)
    }

    /// VERSION 0.0 with QEMU's capabilities (rust-vmm's server needs a NUL-terminated JSON
    /// object with a `capabilities` member; ours takes it too).
    fn negotiate(&mut self) -> Result<()> {
        let mut data = QEMU_CAPABILITIES.as_bytes().to_vec();
        data.push(0);
        let version = Version { major: 0, minor: 0 };
        let mut request = message(command::VERSION, &[version.as_bytes(), &data]);
        self.call(&mut request, &[])?;
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "REGION_READ",
            Op::Write => "REGION_WRITE",
        }
    }

    /// The 4-byte access to BAR0's SCRATCH register.
    fn request(self, value: u32) -> Vec<u8> {
        let access = RegionAccess {
            offset: regs::SCRATCH,
            region: 0,
            count: 4,
        };
        match self {
            Op::Read => message(command::REGION_READ, &[access.as_bytes()]),
            Op::Write => message(
                command::REGION_WRITE,
                &[access.as_bytes(), &value.to_le_bytes()],
            ),
        }
    }

    /// Reply size our server sends.
    fn reply_size(self) -> usize {
        match self {
            Op::Read => HEADER_SIZE + size_of::<RegionAccess>() + 4,
            Op::Write => HEADER_SIZE + size_of::<RegionAccess>(),
        }
    }
}

/// Runs `count` round trips of `request`, appending each one's latency (ns) to `latencies`;
/// returns the wall time of the whole loop.
fn round_trips(
    client: &mut Client,
    request: &mut [u8],
    count: usize,
    latencies: &mut Vec<u64>,
) -> Result<Duration> {
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        client.call(request, &[])?;
        latencies.push(t.elapsed().as_nanos() as u64);
    }
    Ok(start.elapsed())
}

/// Writes then reads back SCRATCH: the peer really implements the register.
fn check_scratch(client: &mut Client) -> Result<()> {
    let value = 0x5eed_1234;
    client.call(&mut Op::Write.request(value), &[])?;
    client.call(&mut Op::Read.request(0), &[])?;
    let data = client.body.get(size_of::<RegionAccess>()..);
    if data != Some(&value.to_le_bytes()[..]) {
        bail!("SCRATCH read back {data:?}, wrote {value:#x}");
    }
    Ok(())
}

fn client_loop(path: &Path, op: Option<Op>, count: usize, version: bool) -> Result<()> {
    let mut client = Client::connect(path)?;
    if version {
        client.negotiate()?;
    }
    let Some(op) = op else {
        let memfd = sys::memfd(c"bench-dma", count as u64 * DMA_WINDOW)?;
        let round = dma_round(&mut client, &memfd, count, None)?;
        for (name, latencies) in [("DMA_MAP", round.map), ("DMA_UNMAP", round.unmap)] {
            let total: u64 = latencies.iter().sum();
            let stats = Stats::new(latencies, Duration::from_nanos(total));
            println!(
                "{name} x{count}: total {:.2} ms, mean {:.2} us, p50 {:.2} us, p99 {:.2} us",
                total as f64 / 1e6,
                stats.mean_us,
                stats.p50_us,
                stats.p99_us
            );
        }
        return Ok(());
    };
    let mut request = op.request(0x1234_5678);
    let mut latencies = Vec::with_capacity(count);
    let elapsed = round_trips(&mut client, &mut request, count, &mut latencies)?;
    let stats = Stats::new(latencies, elapsed);
    println!(
        "{} x{count}: {:.0} ops/s, p50 {:.2} us, p99 {:.2} us",
        op.name(),
        stats.ops_per_sec,
        stats.p50_us,
        stats.p99_us
    );
    Ok(())
}

struct Stats {
    ops_per_sec: f64,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

impl Stats {
    fn new(mut latencies: Vec<u64>, elapsed: Duration) -> Stats {
        latencies.sort_unstable();
        let n = latencies.len().max(1);
        let at = |percent: usize| latencies[(n * percent / 100).min(n - 1)] as f64 / 1000.0;
        Stats {
            ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
            mean_us: latencies.iter().sum::<u64>() as f64 / n as f64 / 1000.0,
            p50_us: at(50),
            p99_us: at(99),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server processes.

/// A server child process; killed (and its socket removed) on drop, panics included.
struct ServerProcess {
    child: Child,
    socket: PathBuf,
}

impl ServerProcess {
    /// Starts `program` with `args` and the socket path, on `cpu` alone if given.
    fn start(
        name: &'static str,
        program: &Path,
        args: &[&OsStr],
        ready: &'static str,
        cpu: Option<usize>,
    ) -> Result<ServerProcess> {
        let socket = std::env::temp_dir().join(format!(
            "vfio-user-bench-{}-{name}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new(program);
        command
            .args(args)
            .arg(&socket)
            // Logging would be part of the measurement.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if cpu.is_some_and(|cpu| cpu >= libc::CPU_SETSIZE as usize) {
            bail!("no CPU {cpu:?}");
        }
        // SAFETY: prctl and sched_setaffinity are async-signal-safe and touch no memory of this
        // process but a local CPU set (pin_to_cpu allocates only for a CPU beyond CPU_SETSIZE,
        // refused above); the child dies with the bench even if the bench is killed before its
        // guards run.
        unsafe {
            command.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                match cpu {
                    Some(cpu) => pin_to_cpu(cpu).map(|_| ()),
                    None => Ok(()),
                }
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let server = ServerProcess { child, socket };
        // The server says when it accepts connections; the rest of its stderr is passed on.
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(ready) {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(());
                    }
                } else {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .with_context(|| format!("{name} server did not start"))?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

// ---------------------------------------------------------------------------------------------
// The rust-vmm server, with a backend equivalent to the reference device's BAR0 registers.

#[derive(Default)]
struct ScratchBackend {
    scratch: u64,
    /// DMA maps by address, mmapped as our server does.
    maps: BTreeMap<u64, MappedFile>,
}

impl ServerBackend for ScratchBackend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        if region != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let value = match offset & !0x3 {
            regs::ID => u64::from(regs::MAGIC),
            regs::SCRATCH => self.scratch,
            0x2c => self.scratch >> 32,
            _ => 0,
        };
        let bytes = (value >> ((offset & 0x3) * 8)).to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
        Ok(())
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        if region != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(raw);
        match offset {
            regs::SCRATCH if n == 8 => self.scratch = value,
            regs::SCRATCH => self.scratch = (self.scratch & !0xffff_ffff) | (value & 0xffff_ffff),
            0x2c => self.scratch = (self.scratch & 0xffff_ffff) | value << 32,
            _ => {}
        }
        Ok(())
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        let Some(fd) = fd else {
            return Ok(());
        };
        let page = sys::page_size();
        let aligned = offset & !(page - 1);
        let len = usize::try_from(size + (offset - aligned))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mapping = MappedFile::map(
            fd.as_fd(),
            aligned,
            len,
            flags.contains(DmaMapFlags::READ),
            flags.contains(DmaMapFlags::WRITE),
        )?;
        self.maps.insert(address, mapping);
        Ok(())
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        if flags.contains(DmaUnmapFlags::UNMAP_ALL) {
            self.maps.clear();
            return Ok(());
        }
        let end = address.saturating_add(size);
        let doomed: Vec<u64> = self.maps.range(address..end).map(|(&a, _)| a).collect();
        for address in doomed {
            self.maps.remove(&address);
        }
        Ok(())
    }

    fn reset(&mut self) -> io::Result<()> {
        self.scratch = 0;
        Ok(())
    }

    fn set_irqs(
        &mut self,
        _index: u32,
        _flags: u32,
        _start: u32,
        _count: u32,
        _fds: Vec<File>,
    ) -> io::Result<()> {
        Ok(())
    }
}

fn serve_rust_vmm(path: &Path) -> Result<()> {
    // The reference device's layout: BAR0 16 KiB, config space 256 bytes, the rest empty.
    let regions = (0..9u32)
        .map(|index| {
            let mut region = ServerRegion {
                region_info: Default::default(),
                sparse_areas: Vec::new(),
                mmap_fd: None,
            };
            let size = match index {
                0 => BAR0_SIZE,
                7 => 256,
                _ => 0,
            };
            region.region_info.argsz = size_of_val(&region.region_info) as u32;
            region.region_info.index = index;
            region.region_info.size = size;
            if size > 0 {
                region.region_info.flags = REGION_INFO_FLAG_READ | REGION_INFO_FLAG_WRITE;
            }
            region
        })
        .collect();
    let irqs = [1, 0, 4, 1, 1]
        .into_iter()
        .enumerate()
        .map(|(index, count)| IrqInfo {
            index: index as u32,
            flags: 1,
            count,
        })
        .collect();
    let server = vfio_user::Server::new(path, true, irqs, regions)
        .map_err(|e| anyhow::anyhow!("rust-vmm server: {e}"))?;
    let mut backend = ScratchBackend::default();
    eprintln!("{READY}");
    loop {
        // One client at a time, as ours.
        if let Err(e) = server.run(&mut backend) {
            eprintln!("rust-vmm server: {e}");
        }
        backend = ScratchBackend::default();
    }
}

// ---------------------------------------------------------------------------------------------
// The echo: framing only, replies of our server's sizes.

fn serve_echo(path: &Path) -> Result<()> {
    let listener = UnixListener::bind(path)?;
    eprintln!("{READY}");
    for stream in listener.incoming() {
        let _ = echo_connection(stream?);
    }
    Ok(())
}

fn echo_connection(mut stream: UnixStream) -> io::Result<()> {
    let mut header_bytes = [0u8; HEADER_SIZE];
    let mut body = vec![0u8; 1 << 20];
    let mut reply = [0u8; HEADER_SIZE + 64];
    loop {
        stream.read_exact(&mut header_bytes)?;
        let header: Header = read_struct(&header_bytes).expect("buffer is header-sized");
        let body_len = (header.msg_size as usize).saturating_sub(HEADER_SIZE);
        let body = body
            .get_mut(..body_len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        stream.read_exact(body)?;
        let size = match header.command {
            command::REGION_READ => {
                let count = read_struct::<RegionAccess>(body).map_or(0, |a| a.count as usize);
                HEADER_SIZE + size_of::<RegionAccess>() + count.min(32)
            }
            command::REGION_WRITE => HEADER_SIZE + size_of::<RegionAccess>(),
            command::DMA_UNMAP => HEADER_SIZE + size_of::<DmaUnmap>(),
            _ => HEADER_SIZE,
        };
        let reply_header = Header {
            msg_id: header.msg_id,
            command: header.command,
            msg_size: size as u32,
            flags: header_flags::TYPE_REPLY,
            error: 0,
        };
        reply[..HEADER_SIZE].copy_from_slice(reply_header.as_bytes());
        stream.write_all(&reply[..size])?;
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

struct Peer {
    name: &'static str,
    process: ServerProcess,
    client: Client,
}

fn start_peer(
    name: &'static str,
    program: &Path,
    args: &[&OsStr],
    ready: &'static str,
    is_server: bool,
    cpu: Option<usize>,
) -> Result<Peer> {
    let process = ServerProcess::start(name, program, args, ready, cpu)?;
    let mut client = Client::connect(&process.socket)?;
    if is_server {
        client
            .negotiate()
            .with_context(|| format!("VERSION with {name}"))?;
        check_scratch(&mut client).with_context(|| format!("SCRATCH of {name}"))?;
    }
    Ok(Peer {
        name,
        process,
        client,
    })
}

fn run_bench() -> Result<()> {
    let exe = std::env::current_exe()?;
    let ops: usize = match std::env::var("BENCH_OPS") {
        Ok(value) => value.parse().context("BENCH_OPS")?,
        Err(_) => DEFAULT_OPS,
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    // Before the pinning below leaves this thread one CPU.
    let polling_cpus = polling::two_cpus()?;
    let placement = if std::env::var("BENCH_PIN").is_ok_and(|value| value == "0") {
        "placement left to the scheduler (BENCH_PIN=0)".to_string()
    } else {
        let cpu = pin_to_one_cpu().context("pinning to one CPU")?;
        format!("all pinned to CPU {cpu} (BENCH_PIN=0 to let them float)")
    };
    println!(
        "vfio-user bench: {cpus} CPUs; client and each server in its own process over unix \
         stream sockets, {placement}"
    );
    println!(
        "  load average before: {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );

    // Index 0 is the echo, 1 ours, 2 rust-vmm.
    let mut peers = [
        start_peer(
            "echo",
            &exe,
            &[OsStr::new("serve-echo")],
            READY,
            false,
            None,
        )?,
        start_peer(
            "ours",
            &exe,
            &[OsStr::new(SERVE_REFERENCE), OsStr::new("--socket")],
            REFERENCE_READY,
            true,
            None,
        )?,
        start_peer(
            "rust-vmm",
            &exe,
            &[OsStr::new("serve-rust-vmm")],
            READY,
            true,
            None,
        )?,
    ];

    for peer in &peers {
        println!(
            "  {:<9} pid {:<8} {}",
            peer.name,
            peer.process.pid(),
            peer.process.socket.display()
        );
    }

    register_round_trips(&mut peers, ops)?;
    dma_map_unmap(&mut peers)?;
    // Only the reference server is left for the memory figures.
    let [echo, ours, rust_vmm] = peers;
    drop(echo);
    drop(rust_vmm);
    drop(ours);
    server_memory(&exe)?;
    polling::polling_round_trips(&exe, ops, polling_cpus)?;
    println!();
    println!(
        "  load average after: {}",
        std::fs::read_to_string("/proc/loadavg")?.trim()
    );
    Ok(())
}

/// Pins the calling thread, and so the processes it starts afterwards, to the first CPU it may
/// run on; returns that CPU.
fn pin_to_one_cpu() -> io::Result<usize> {
    let cpu = *allowed_cpus()?
        .first()
        .ok_or_else(|| io::Error::other("no CPU allowed"))?;
    pin_to_cpu(cpu)
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `allowed` is a writable cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut allowed) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu < CPU_SETSIZE, inside the set.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .collect())
}

/// Pins the calling thread (and what it starts afterwards) to `cpu`; returns `cpu`. Also called
/// between fork and exec: it only makes syscalls on a local set.
fn pin_to_cpu(cpu: usize) -> io::Result<usize> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::other(format!("no CPU {cpu}")));
    }
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE, checked above: inside the set.
    unsafe { libc::CPU_SET(cpu, &mut one) };
    // SAFETY: `one` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cpu)
}

fn ratio_line(what: &str, ours: &Stats, peer: &Stats, target: f64) -> String {
    let p50 = ours.p50_us / peer.p50_us;
    let verdict = if p50 <= target { "met" } else { "NOT met" };
    format!(
        "  {what:<27} p50 round trip {p50:5.2}x (target <= {target:.2}x: {verdict:<7})   \
         ops/s {:5.2}x",
        ours.ops_per_sec / peer.ops_per_sec
    )
}

fn register_round_trips(peers: &mut [Peer; 3], ops: usize) -> Result<()> {
    println!();
    println!(
        "== 1. 4-byte register round trips on BAR0 offset {:#x} (SCRATCH): {WARMUP_OPS} warm-up, \
         then {ops} measured per case in {ROUNDS} rounds interleaved across servers ==",
        regs::SCRATCH
    );
    println!(
        "  (srv CPU: the server's CPU time per op, user+kernel; srv runs: times the server was \
         scheduled in per op)"
    );
    println!(
        "  {:<13} {:<9} {:>10} {:>9} {:>9} {:>9} {:>13} {:>13}",
        "op", "server", "ops/s", "mean us", "p50 us", "p99 us", "srv CPU us/op", "srv runs/op"
    );
    let mut results = Vec::new();
    for op in [Op::Read, Op::Write] {
        let mut requests: Vec<Vec<u8>> = peers.iter().map(|_| op.request(0x1234_5678)).collect();
        let mut latencies: Vec<Vec<u64>> = peers.iter().map(|_| Vec::with_capacity(ops)).collect();
        let mut elapsed = [Duration::ZERO; 3];
        let mut server_cpu_ns = [0u64; 3];
        let mut server_runs = [0u64; 3];
        for (i, peer) in peers.iter_mut().enumerate() {
            let mut warmup = Vec::with_capacity(WARMUP_OPS);
            round_trips(&mut peer.client, &mut requests[i], WARMUP_OPS, &mut warmup)
                .with_context(|| format!("{} warm-up against {}", op.name(), peer.name))?;
            if peer.client.body.len() + HEADER_SIZE != op.reply_size() {
                bail!(
                    "{} answered {} with {} bytes, ours sends {}",
                    peer.name,
                    op.name(),
                    peer.client.body.len() + HEADER_SIZE,
                    op.reply_size()
                );
            }
        }
        for round in 0..ROUNDS {
            let count = ops / ROUNDS + usize::from(round < ops % ROUNDS);
            // Rotate who goes first.
            for k in 0..peers.len() {
                let i = (round + k) % peers.len();
                let peer = &mut peers[i];
                let (cpu_before, runs_before) = sched_of(peer.process.pid())?;
                elapsed[i] +=
                    round_trips(&mut peer.client, &mut requests[i], count, &mut latencies[i])
                        .with_context(|| format!("{} against {}", op.name(), peer.name))?;
                let (cpu_after, runs_after) = sched_of(peer.process.pid())?;
                server_cpu_ns[i] += cpu_after - cpu_before;
                server_runs[i] += runs_after - runs_before;
            }
        }
        let stats: Vec<Stats> = latencies
            .into_iter()
            .zip(elapsed)
            .map(|(latencies, elapsed)| Stats::new(latencies, elapsed))
            .collect();
        for (i, (peer, stats)) in peers.iter().zip(&stats).enumerate() {
            println!(
                "  {:<13} {:<9} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>13.2} {:>13.2}",
                op.name(),
                peer.name,
                stats.ops_per_sec,
                stats.mean_us,
                stats.p50_us,
                stats.p99_us,
                server_cpu_ns[i] as f64 / ops as f64 / 1000.0,
                server_runs[i] as f64 / ops as f64
            );
        }
        results.push((op, stats));
    }
    println!(
        "  ratios of ours to each peer: p50 round trip ours/peer (lower is better for ours), \
         ops/s ours/peer (higher is better for ours)"
    );
    for (op, stats) in &results {
        let [echo, ours, rust_vmm] = &stats[..] else {
            unreachable!("three peers");
        };
        println!(
            "{}",
            ratio_line(
                &format!("{} ours/echo", op.name()),
                ours,
                echo,
                TARGET_VS_ECHO
            )
        );
        println!(
            "{}",
            ratio_line(
                &format!("{} ours/rust-vmm", op.name()),
                ours,
                rust_vmm,
                TARGET_VS_RUST_VMM
            )
        );
        println!(
            "  {:<27} p50 round trip {:5.2}x (the floor of ours/rust-vmm: no server beats the \
             echo)",
            format!("{} echo/rust-vmm", op.name()),
            echo.p50_us / rust_vmm.p50_us
        );
    }
    Ok(())
}

/// Times of one round: per-op latencies of the maps and of the unmaps (ns).
struct DmaRound {
    map: Vec<u64>,
    unmap: Vec<u64>,
    /// Open fds of the server while every window was mapped.
    server_fds: Option<usize>,
}

/// Maps `count` windows of `memfd`, then unmaps them in the same order. With `server`, counts
/// the server's open fds in between.
fn dma_round(
    client: &mut Client,
    memfd: &File,
    count: usize,
    server: Option<u32>,
) -> Result<DmaRound> {
    let mut round = DmaRound {
        map: Vec::with_capacity(count),
        unmap: Vec::with_capacity(count),
        server_fds: None,
    };
    for i in 0..count as u64 {
        let map = DmaMap {
            argsz: size_of::<DmaMap>() as u32,
            flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
            offset: i * DMA_WINDOW,
            address: DMA_BASE + i * DMA_STRIDE,
            size: DMA_WINDOW,
        };
        let mut request = message(command::DMA_MAP, &[map.as_bytes()]);
        let t = Instant::now();
        client.call(&mut request, &[memfd.as_fd()])?;
        round.map.push(t.elapsed().as_nanos() as u64);
    }
    if let Some(pid) = server {
        round.server_fds = Some(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count());
    }
    for i in 0..count as u64 {
        let unmap = DmaUnmap {
            argsz: size_of::<DmaUnmap>() as u32,
            flags: 0,
            address: DMA_BASE + i * DMA_STRIDE,
            size: DMA_WINDOW,
        };
        let mut request = message(command::DMA_UNMAP, &[unmap.as_bytes()]);
        let t = Instant::now();
        client.call(&mut request, &[])?;
        round.unmap.push(t.elapsed().as_nanos() as u64);
    }
    Ok(round)
}

fn dma_map_unmap(peers: &mut [Peer; 3]) -> Result<()> {
    println!();
    println!(
        "== 2. DMA_MAP of {DMA_REGIONS} windows of {} KiB of one memfd (fd passed with each), then \
         {DMA_REGIONS} DMA_UNMAPs: 1 warm-up round, {DMA_MEASURED_ROUNDS} measured rounds ==",
        DMA_WINDOW >> 10
    );
    println!("  (echo: the same messages, fd included, answered without mmap/munmap: the floor)");
    let memfd = sys::memfd(c"bench-dma", DMA_REGIONS as u64 * DMA_WINDOW)?;
    println!(
        "  {:<9} {:>13} {:>12} {:>11} {:>15} {:>14} {:>13} {:>16}",
        "server",
        "map total ms",
        "map mean us",
        "map p50 us",
        "unmap total ms",
        "unmap mean us",
        "unmap p50 us",
        "srv fds, mapped"
    );
    let mut means = Vec::new();
    for peer in peers.iter_mut() {
        dma_round(&mut peer.client, &memfd, DMA_REGIONS, None)
            .with_context(|| format!("DMA warm-up against {}", peer.name))?;
        let mut map = Vec::new();
        let mut unmap = Vec::new();
        let mut server_fds = 0;
        for _ in 0..DMA_MEASURED_ROUNDS {
            let round = dma_round(
                &mut peer.client,
                &memfd,
                DMA_REGIONS,
                Some(peer.process.pid()),
            )
            .with_context(|| format!("DMA against {}", peer.name))?;
            map.extend(round.map);
            unmap.extend(round.unmap);
            server_fds = round.server_fds.unwrap_or(0);
        }
        let rounds = DMA_MEASURED_ROUNDS as f64;
        let map_total_ms = map.iter().sum::<u64>() as f64 / 1e6 / rounds;
        let unmap_total_ms = unmap.iter().sum::<u64>() as f64 / 1e6 / rounds;
        let map_stats = Stats::new(map, Duration::from_secs(1));
        let unmap_stats = Stats::new(unmap, Duration::from_secs(1));
        println!(
            "  {:<9} {:>13.2} {:>12.2} {:>11.2} {:>15.2} {:>14.2} {:>13.2} {:>16}",
            peer.name,
            map_total_ms,
            map_stats.mean_us,
            map_stats.p50_us,
            unmap_total_ms,
            unmap_stats.mean_us,
            unmap_stats.p50_us,
            server_fds
        );
        means.push((map_stats.mean_us, unmap_stats.mean_us));
    }
    let [(echo_map, echo_unmap), (ours_map, ours_unmap), (rv_map, rv_unmap)] = means[..] else {
        unreachable!("three peers");
    };
    println!("  ratios of the per-op means (lower is better for ours):");
    println!(
        "  ours/rust-vmm  DMA_MAP {:5.2}x   DMA_UNMAP {:5.2}x",
        ours_map / rv_map,
        ours_unmap / rv_unmap
    );
    println!(
        "  ours/echo      DMA_MAP {:5.2}x   DMA_UNMAP {:5.2}x",
        ours_map / echo_map,
        ours_unmap / echo_unmap
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", peers[1].process.pid()))?;
    if let Some(line) = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
    {
        println!(
            "  (\"srv fds, mapped\": the server's open fds with all {DMA_REGIONS} windows mapped; \
             its limit: {})",
            line.split_whitespace()
                .skip(3)
                .zip(["soft", "hard"])
                .map(|(value, kind)| format!("{value} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The memory lines of /proc/PID/status, in KiB: VmRSS, RssAnon, RssFile, RssShmem.
fn memory_of(pid: u32) -> Result<[u64; 4]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let mut values = [0u64; 4];
    for (value, key) in values
        .iter_mut()
        .zip(["VmRSS:", "RssAnon:", "RssFile:", "RssShmem:"])
    {
        let line = status
            .lines()
            .find(|line| line.starts_with(key))
            .with_context(|| format!("no {key} in /proc/{pid}/status"))?;
        *value = line
            .split_whitespace()
            .nth(1)
            .and_then(|kb| kb.parse().ok())
            .with_context(|| format!("bad line {line:?}"))?;
    }
    Ok(values)
}

fn print_memory(state: &str, pid: u32) -> Result<[u64; 4]> {
    let [rss, anon, file, shmem] = memory_of(pid)?;
    println!("  {state:<48} {rss:>9} {anon:>9} {file:>9} {shmem:>9}");
    Ok([rss, anon, file, shmem])
}

/// `exe`: this bench, which serves the reference device as `bench serve-reference`.
fn server_memory(exe: &Path) -> Result<()> {
    println!();
    println!(
        "== 3. reference-server memory (KiB, /proc/PID/status) with a {} MiB DMA map ==",
        RSS_MAP_SIZE >> 20
    );
    let server = ServerProcess::start(
        "ours-rss",
        exe,
        &[OsStr::new(SERVE_REFERENCE), OsStr::new("--socket")],
        REFERENCE_READY,
        None,
    )?;
    let pid = server.pid();
    println!(
        "  {:<48} {:>9} {:>9} {:>9} {:>9}",
        "state", "VmRSS", "RssAnon", "RssFile", "RssShmem"
    );
    print_memory("listening, no client", pid)?;
    let mut client = Client::connect(&server.socket)?;
    client.negotiate()?;
    let [baseline, ..] = print_memory("after VERSION (baseline, before the map)", pid)?;
    let memfd = sys::memfd(c"bench-rss", RSS_MAP_SIZE)?;
    let map = DmaMap {
        argsz: size_of::<DmaMap>() as u32,
        flags: DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE,
        offset: 0,
        address: RSS_MAP_ADDRESS,
        size: RSS_MAP_SIZE,
    };
    client.call(
        &mut message(command::DMA_MAP, &[map.as_bytes()]),
        &[memfd.as_fd()],
    )?;
    let [mapped, ..] = print_memory("after DMA_MAP (memfd ftruncate'd, untouched)", pid)?;
    // The client fills the memfd: its pages now exist, in the page cache of the memfd.
    let chunk = vec![0xa5u8; 1 << 20];
    for offset in (0..RSS_MAP_SIZE).step_by(chunk.len()) {
        memfd.write_all_at(&chunk, offset)?;
    }
    let [written, _, _, written_shmem] =
        print_memory("after the client wrote all of it (server idle)", pid)?;
    let unmap = DmaUnmap {
        argsz: size_of::<DmaUnmap>() as u32,
        flags: 0,
        address: RSS_MAP_ADDRESS,
        size: RSS_MAP_SIZE,
    };
    client.call(&mut message(command::DMA_UNMAP, &[unmap.as_bytes()]), &[])?;
    print_memory("after DMA_UNMAP", pid)?;
    println!(
        "  growth from the map: {} KiB; after the client's writes: {} KiB over baseline \
         (RssShmem {} KiB): the server maps but does not touch",
        mapped as i64 - baseline as i64,
        written as i64 - baseline as i64,
        written_shmem
    );
    drop(client);
    drop(server);
    Ok(())
}
