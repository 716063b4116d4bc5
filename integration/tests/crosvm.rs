// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The QEMU guest checks against crosvm's own devices, served by `crosvm device
//! vfio-user-server` built from upstream-patches/. They run when CROSVM_BIN names that crosvm
//! binary; otherwise, or where a check needs what this host lacks (root, /dev/vhost-vsock), cargo
//! reports it as ignored with the reason:
//!
//!     CROSVM_BIN=/path/to/crosvm cargo test -p integration --test crosvm

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;
use integration::checks;
use integration::checks::require;
use integration::checks::skip;
use integration::checks::Checked;
use integration::guest::compositor::is_root;
use integration::guest::compositor::Cage;
use integration::guest::compositor::Compositor;
use integration::guest::compositor::Weston;
use integration::guest::programs;
use integration::guest::shell_quote_path;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::guest::Responder;
use integration::guest::Servers;
use integration::relay_log::relay_connections;
use integration::relay_log::RelayConnection;
use integration::sandbox::empty_root;
use integration::sandbox::jail_value;
use integration::sandbox::KernelLog;

mod crosvm_common;

use crosvm_common::as_user;
use crosvm_common::assert_confined;
use crosvm_common::boot;
use crosvm_common::boot_in;
use crosvm_common::confined_as;
use crosvm_common::confined_while_serving;
use crosvm_common::crosvm;
use crosvm_common::crosvm_serving;
use crosvm_common::frames_on_screen;
use crosvm_common::no_seccomp_violation;
use crosvm_common::pattern;
use crosvm_common::run_confined;
use crosvm_common::sandboxed;
use crosvm_common::serving_process;
use crosvm_common::with_device_report;
use crosvm_common::FramesShown;
use crosvm_common::Jail;
use crosvm_common::UNPRIVILEGED_UID;

fn crosvm_rng_reaches_the_guest() -> Checked {
    let crosvm = crosvm()?;
    let run = boot(
        "crosvm-rng",
        format!(
            "{} device vfio-user-server rng --socket {{socket}} {}",
            shell_quote_path(&crosvm),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-rng.sh")),
        &["virtio_rng"],
        "",
    )?;
    assert_eq!(run.result("pci.device")?, "0x1044");
    assert_eq!(run.result("pci.driver")?, "virtio-pci");
    assert_eq!(run.result("virtio.driver")?, "virtio_rng");
    assert!(run.result("rng.current")?.starts_with("virtio_rng"));
    assert_eq!(run.result("rng.bytes")?, "32");
    Ok(())
}

fn crosvm_block_keeps_what_the_guest_writes() -> Checked {
    block_keeps_what_the_guest_writes("crosvm-blk", &sandboxed()?)
}

/// The same served unconfined: the image and the socket reach the device as they do in the
/// sandbox, as descriptors crosvm takes as inherited ones.
fn crosvm_block_serves_unconfined() -> Checked {
    block_keeps_what_the_guest_writes("crosvm-blk-unconfined", "--disable-sandbox")
}

fn block_keeps_what_the_guest_writes(name: &str, confinement: &str) -> Checked {
    let crosvm = crosvm_serving("block")?;
    let dir = std::env::temp_dir().join(format!("vfio-user-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(128 << 20)?;
    let run = boot(
        name,
        format!(
            "{} device vfio-user-server block --socket {{socket}} --file {} {confinement}",
            shell_quote_path(&crosvm),
            shell_quote_path(&disk),
        ),
        include_str!("../guest/virtio.sh"),
        &["virtio_blk"],
        "vfio_user_test=write",
    )?;
    for key in [
        "blk.write_status",
        "blk.big_write_status",
        "blk.flush_status",
    ] {
        assert_eq!(run.result(key)?, "0", "{key}");
    }
    assert_eq!(
        run.result("blk.readback_md5")?,
        run.result("blk.pattern_md5")?
    );
    let line = b"vfio-user virtio-blk pattern 0123456789abcdef\n";
    let pattern = pattern(line);
    let mut on_disk = vec![0u8; pattern.len()];
    std::os::unix::fs::FileExt::read_exact_at(&std::fs::File::open(&disk)?, &mut on_disk, 1 << 20)?;
    assert!(
        on_disk == pattern,
        "the host file holds what the guest wrote"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn crosvm_console_passes_text_both_ways() -> Checked {
    let crosvm = crosvm_serving("console")?;
    let dir = std::env::temp_dir().join(format!("vfio-user-crosvm-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // crosvm's console waits on its input with epoll: a FIFO, as regular files cannot be.
    let input = dir.join("input");
    let output = dir.join("output");
    let status = Command::new("mkfifo").arg(&input).status()?;
    if !status.success() {
        return Err(anyhow::anyhow!("mkfifo failed: {status}").into());
    }
    // Held open from the start, read-write so that opening it does not block: the server opens
    // the FIFO for every device it builds, and each open waits for a writer.
    let mut fifo = OpenOptions::new().read(true).write(true).open(&input)?;
    // Answers once the guest's line has arrived, when the device the guest uses is the one
    // reading the FIFO (the server builds a device more than once per client).
    let done = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (output, done) = (output.clone(), done.clone());
        std::thread::spawn(move || -> Result<bool> {
            while !done.load(Ordering::Relaxed) {
                let written = std::fs::read(&output).unwrap_or_default();
                if written.windows(20).any(|w| w == b"hello from the guest") {
                    fifo.write_all(b"hello from the host\n")?;
                    return Ok(true);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(false)
        })
    };
    let run = boot(
        "crosvm-console",
        format!(
            "{} device vfio-user-server console --socket {{socket}} --input-file {} --output-file {} \
             {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&input),
            shell_quote_path(&output),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-console.sh")),
        &[],
        "",
    );
    done.store(true, Ordering::Relaxed);
    let answered = feeder.join().expect("the feeder thread panicked")?;
    let run = run?;
    assert!(answered, "the guest's line never reached the output file");
    assert_eq!(run.result("pci.device")?, "0x1043");
    assert_eq!(run.result("pci.driver")?, "virtio-pci");
    assert_eq!(run.result("virtio.driver")?, "virtio_console");
    assert_eq!(run.result("console.stty_status")?, "0");
    assert_eq!(run.result("console.write_status")?, "0");
    assert_eq!(run.result("console.read_status")?, "0");
    assert_eq!(run.result("console.input")?, "hello from the host");
    let written = std::fs::read_to_string(&output)?;
    assert_eq!(
        written, "hello from the guest\n",
        "the guest's line, unchanged"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn crosvm_gpu_binds_and_scans_out() -> Checked {
    let crosvm = crosvm_serving("gpu")?;
    let run = boot_in(
        "crosvm-gpu",
        format!(
            "{} device vfio-user-server gpu --socket {{socket}} {}",
            shell_quote_path(&crosvm),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-gpu.sh")),
        &["virtio_gpu"],
        "",
        Some(&Jail {
            relay_dir: Some("gpu"),
            proc: true,
            ..Jail::empty()
        }),
    )?;
    assert_eq!(run.result("pci.device")?, "0x1050");
    assert_eq!(run.result("pci.driver")?, "virtio-pci");
    assert_eq!(run.result("virtio.driver")?, "virtio_gpu");
    // BAR2, the host-visible memory region: crosvm's default size (8 GiB), 64-bit prefetchable
    // memory (IORESOURCE_MEM 0x200, PREFETCH 0x2000, MEM_64 0x100000).
    assert_eq!(run.result("pci.bar2_size")?, (8u64 << 30).to_string());
    let flags = u64::from_str_radix(run.result("pci.bar2_flags")?.trim_start_matches("0x"), 16)?;
    assert_eq!(flags & 0x102200, 0x102200, "BAR2 flags {flags:#x}");
    assert_eq!(run.result("drm.card0")?, "present");
    assert_eq!(run.result("fb0.name")?, "virtio_gpudrmfb");
    assert_eq!(run.result("trace.enable_status")?, "0");
    assert_eq!(run.result("tty0.write_status")?, "0");
    // fbcon's drawing reached the device: transfers and flushes of its framebuffer, all answered
    // OK_NODATA, none with an error.
    let transfers: u32 = run.result("trace.transfers")?.parse()?;
    let flushes: u32 = run.result("trace.flushes")?.parse()?;
    let ok: u32 = run.result("trace.ok_nodata")?.parse()?;
    assert!(
        transfers > 0 && flushes > 0,
        "{transfers} transfers, {flushes} flushes"
    );
    assert!(ok >= transfers + flushes, "{ok} OK_NODATA answers");
    assert_eq!(run.result("trace.errors")?, "0");
    Ok(())
}

/// A network namespace of the test's own with a tap in it, `vutap0` at 10.55.0.1/24; deleted,
/// tap and all, when dropped.
struct NetNamespace {
    name: String,
}

impl NetNamespace {
    fn create(name: &str) -> Result<NetNamespace> {
        // The namespace left by an earlier run that was killed, if any.
        let _ = Command::new("ip").args(["netns", "delete", name]).output();
        run_ip(&["netns", "add", name])?;
        let namespace = NetNamespace {
            name: name.to_string(),
        };
        for args in [
            &["tuntap", "add", "dev", "vutap0", "mode", "tap"][..],
            &["addr", "add", "10.55.0.1/24", "dev", "vutap0"],
            &["link", "set", "vutap0", "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["netns", "exec", name, "ip"];
            full.extend_from_slice(args);
            run_ip(&full)?;
        }
        Ok(namespace)
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        if let Err(e) = run_ip(&["netns", "delete", &self.name]) {
            eprintln!("deleting network namespace {}: {e:#}", self.name);
        }
    }
}

fn run_ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        output.status.success(),
        "ip {}: {}: {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Why network namespaces cannot be made here, if they cannot.
fn no_netns() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (ip netns needs it)".to_string());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(e) => Some(format!("no ip (iproute2): {e}")),
    }
}

fn crosvm_net_pings_the_host_tap() -> Checked {
    let crosvm = crosvm_serving("net")?;
    if let Some(reason) = no_netns() {
        return Err(skip(reason));
    }
    // The tap and its traffic (10.55.0.0/24 only) stay in a namespace of this test's own; the
    // server runs there too, its socket on the shared filesystem for QEMU outside.
    let namespace = NetNamespace::create(&format!("vunet{}", std::process::id()))?;
    let env = GuestEnv::prepare()?;
    let boot = Boot {
        name: "crosvm-net".to_string(),
        servers: vec![format!(
            "ip netns exec {} {} device vfio-user-server net --socket {{socket}} --tap-name vutap0 {}",
            namespace.name,
            shell_quote_path(&crosvm),
            sandboxed()?
        )],
        script: with_device_report(include_str!("../guest/crosvm-net.sh")),
        modules: vec!["virtio_net".to_string()],
        echo_prefix: Some("[crosvm-net] ".to_string()),
        timeout: Duration::from_secs(300),
        ..Boot::default()
    };
    let mut servers = Servers::start(&env, &boot)?;
    let serving = serving_process(servers.pids()[0])?;
    let jail = Jail {
        host_network: true,
        ..Jail::empty()
    };
    assert_confined(serving, &boot.name, &jail)?;
    // Two guests, one after the other, against the same server: the second client's device
    // works on a duplicate of the tap, which the first one's has let go.
    for round in 1..=2 {
        let run = servers.boot(
            &env,
            &Boot {
                name: format!("crosvm-net-{round}"),
                echo_prefix: Some(format!("[crosvm-net-{round}] ")),
                ..boot.clone()
            },
        )?;
        run.check()?;
        assert_eq!(run.result("pci.device")?, "0x1041", "guest {round}");
        assert_eq!(run.result("pci.driver")?, "virtio-pci", "guest {round}");
        assert_eq!(run.result("virtio.driver")?, "virtio_net", "guest {round}");
        assert_eq!(run.result("net.addr_status")?, "0", "guest {round}");
        assert_eq!(run.result("net.up_status")?, "0", "guest {round}");
        assert_eq!(run.result("net.ping_received")?, "3", "guest {round}");
    }
    assert_confined(serving, &boot.name, &jail)?;
    drop(servers);
    drop(namespace);
    Ok(())
}

/// virtio-snd on crosvm's null backend: the guest's driver builds a sound card from the device's
/// answers on the control queue (one playback and one capture stream, as configured).
fn crosvm_snd_makes_a_sound_card() -> Checked {
    let crosvm = crosvm_serving("snd")?;
    let run = boot_in(
        "crosvm-snd",
        format!(
            "{} device vfio-user-server snd --socket {{socket}} --config backend=null,capture=true {}",
            shell_quote_path(&crosvm),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-snd.sh")),
        &["virtio_snd"],
        "",
        Some(&Jail::empty()),
    )?;
    assert_eq!(run.result("pci.device")?, "0x1059");
    assert_eq!(run.result("pci.driver")?, "virtio-pci");
    assert_eq!(run.result("virtio.driver")?, "virtio_snd");
    assert_eq!(run.result("snd.cards")?, "1");
    assert!(
        run.result("snd.card0")?.contains("VirtIO"),
        "card {}",
        run.result("snd.card0")?
    );
    assert_eq!(run.result("snd.playback_streams")?, "1");
    assert_eq!(run.result("snd.capture_streams")?, "1");
    Ok(())
}

/// virtio-snd on crosvm's file backend: a second of PCM the guest plays through the kernel's
/// ALSA ioctls (a program of ours) is what the host finds in the backend's file.
fn crosvm_snd_playback_reaches_the_host_file() -> Checked {
    let crosvm = crosvm_serving("snd")?;
    let env = GuestEnv::prepare()?;
    let program = programs::build(&env, "pcm-play")?;
    let dir = std::env::temp_dir().join(format!("crosvm-snd-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let frames = guest_programs::PCM_RATE as usize;
    let frame_bytes = 2 * guest_programs::PCM_CHANNELS as usize;
    // Room for the second played and whatever silence the stream starts with.
    let capacity = 4 * frames * frame_bytes;
    let script = format!(
        "{}\n/bin/pcm-play /dev/snd/pcmC0D0p {frames}\n",
        with_device_report(include_str!("../guest/crosvm-snd.sh"))
    );
    let run = run_confined(
        &env,
        &Boot {
            name: "crosvm-snd-file".to_string(),
            servers: vec![format!(
                "{} device vfio-user-server snd --socket {{socket}} \
                 --config backend=file,playback_path={},playback_size={capacity} {}",
                shell_quote_path(&crosvm),
                dir.display(),
                sandboxed()?
            )],
            script,
            modules: vec!["virtio_snd".to_string()],
            echo_prefix: Some("[crosvm-snd-file] ".to_string()),
            timeout: Duration::from_secs(300),
            files: vec![("/bin/pcm-play".to_string(), program)],
            ..Boot::default()
        },
        &Jail::showing(&[&dir]),
    );
    let played = std::fs::read(dir.join("stream-0.out"));
    let _ = std::fs::remove_dir_all(&dir);
    let run = run?;
    run.check()?;
    assert_eq!(run.result("pcm.frames")?, frames.to_string());
    let played = played?;
    let expected: Vec<u8> = (0..frames)
        .flat_map(|frame| {
            (0..guest_programs::PCM_CHANNELS)
                .flat_map(move |channel| guest_programs::pcm_sample(frame, channel).to_le_bytes())
        })
        .collect();
    let start = played
        .windows(64)
        .position(|window| window == &expected[..64])
        .context("the first frames played are not in the backend's file")?;
    let found = &played[start..(start + expected.len()).min(played.len())];
    let matching = found
        .iter()
        .zip(&expected)
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        matching,
        expected.len(),
        "the file matches the {} bytes played up to byte {matching} (from offset {start})",
        expected.len()
    );
    Ok(())
}

/// Files from the compositor to the guest (a keymap) through cross-domain: a compositor stand-in
/// of ours sends a write-sealed memfd whose size is not a page multiple; the guest maps it as a
/// blob through BAR2 (the shadow places it read-only), reads it and sends the bytes back.
fn crosvm_gpu_cross_domain_compositor_files_reach_the_guest() -> Checked {
    let crosvm = crosvm_serving("gpu")?;
    const KEYMAP: &[u8] = b"xkb_keymap { fake keymap of 43 bytes ... };";
    let dir = std::env::temp_dir().join(format!("crosvm-keymap-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let compositor_path = dir.join("wayland-fake");
    let _ = std::fs::remove_file(&compositor_path);
    let listener = UnixListener::bind(&compositor_path)?;
    let echoed: Arc<Mutex<Vec<u8>>> = Arc::default();
    {
        let echoed = echoed.clone();
        std::thread::spawn(move || {
            // crosvm's display also connects here (the unnamed socket is the display's too) and
            // speaks first; it is turned away and falls back to the stub. A connection that stays
            // quiet is a cross-domain context's: it gets the keymap, and what comes back is kept.
            for mut stream in listener.incoming().flatten() {
                let ready =
                    vfio_user_server::sys::wait_readable(std::os::fd::AsFd::as_fd(&stream), 300);
                if !matches!(ready, Ok(false)) {
                    continue;
                }
                let keymap = sealed_memfd(KEYMAP).expect("keymap memfd");
                let sent = vfio_user_server::sys::send_with_fds(
                    std::os::fd::AsFd::as_fd(&stream),
                    &[std::io::IoSlice::new(b"keymap")],
                    &[std::os::fd::AsFd::as_fd(&keymap)],
                );
                if sent.is_err() {
                    continue;
                }
                let echoed = echoed.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                        if n == 0 {
                            break;
                        }
                        echoed.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
    }
    let env = GuestEnv::prepare()?;
    let program = programs::build(&env, "wayland-pattern")?;
    let jail = Jail {
        shown: vec![dir.clone()],
        relay_dir: Some("gpu"),
        proc: true,
        ..Jail::empty()
    };
    let run = run_confined(
        &env,
        &Boot {
            name: "crosvm-keymap".to_string(),
            servers: vec![format!(
                "{} device vfio-user-server gpu --socket {{socket}} --wayland-sock {} \
                 --params '{{\"context-types\":\"cross-domain\"}}' {}",
                shell_quote_path(&crosvm),
                shell_quote_path(&compositor_path),
                sandboxed()?
            )],
            script: "/bin/wayland-pattern --echo-fds\n".to_string(),
            modules: vec!["virtio_gpu".to_string()],
            echo_prefix: Some("[crosvm-keymap] ".to_string()),
            timeout: Duration::from_secs(300),
            files: vec![("/bin/wayland-pattern".to_string(), program)],
            ..Boot::default()
        },
        &jail,
    );
    // The relay has forwarded everything by the time the guest powered off; give the reader
    // thread a moment to see it.
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(&dir);
    let run = run?;
    run.check()?;
    assert_eq!(run.result("echo.bytes")?, "keymap");
    assert_eq!(run.result("echo.file0.size")?, KEYMAP.len().to_string());
    assert_eq!(
        run.result("echo.file0.text")?,
        std::str::from_utf8(KEYMAP).unwrap()
    );
    assert_eq!(echoed.lock().unwrap().as_slice(), KEYMAP);
    Ok(())
}

/// A memfd holding `bytes`, sealed against writes and resizing as compositors seal keymaps.
fn sealed_memfd(bytes: &[u8]) -> Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileExt;
    // SAFETY: a NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::memfd_create(
            c"keymap".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all_at(bytes, 0)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: no pointers; the result is checked.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(file)
}

/// virtio-fs from a child jailed into the shared directory: the guest mounts it, reads the
/// host's file and writes one the host then finds; the jailed child sees nothing else.
fn crosvm_fs_shares_a_directory() -> Checked {
    fs_shares_a_directory(None)
}

/// fs served by a user without privileges (nobody), its shared directory nobody's.
fn crosvm_fs_shares_a_directory_unprivileged() -> Checked {
    fs_shares_a_directory(Some(UNPRIVILEGED_UID))
}

/// The fs check, its server run as `user` (through setpriv) if given.
fn fs_shares_a_directory(user: Option<u32>) -> Checked {
    let crosvm = crosvm_serving("fs")?;
    require(
        is_root(),
        "the fs check makes its shared directory (and drops to nobody) as root",
    )?;
    let dir = std::env::temp_dir().join(format!("crosvm-fs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("from-host.txt"), "written by the host\n")?;
    let as_user = match user {
        Some(uid) => {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid))?;
            std::os::unix::fs::chown(dir.join("from-host.txt"), Some(uid), Some(uid))?;
            as_user(uid)
        }
        None => String::new(),
    };
    let run = boot_in(
        "crosvm-fs",
        format!(
            "{as_user}{} device vfio-user-server fs --socket {{socket}} --shared-dir {} --tag \
             shared {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&dir),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-fs.sh")),
        &["virtiofs"],
        "",
        Some(&Jail {
            root: Some(dir.clone()),
            own_capabilities: true,
            uid: user,
            ..Jail::empty()
        }),
    );
    let from_guest = std::fs::read_to_string(dir.join("from-guest.txt"));
    let _ = std::fs::remove_dir_all(&dir);
    let run = run?;
    assert_eq!(run.result("pci.device")?, "0x105a");
    assert_eq!(run.result("virtio.driver")?, "virtiofs");
    assert_eq!(run.result("fs.mount_status")?, "0");
    assert_eq!(run.result("fs.entries")?.trim(), "from-host.txt");
    assert_eq!(run.result("fs.host_file")?, "written by the host");
    assert_eq!(run.result("fs.write_status")?, "0");
    assert_eq!(run.result("fs.umount_status")?, "0");
    assert_eq!(from_guest?, "written by the guest\n");
    Ok(())
}

/// virtio-vsock on the host's vhost-vsock: the guest's transport binds. Needs /dev/vhost-vsock
/// on the host (the machines this was written on have none: skipped there).
fn crosvm_vsock_binds() -> Checked {
    let crosvm = crosvm_serving("vsock")?;
    require(
        Path::new("/dev/vhost-vsock").exists(),
        "this host has no /dev/vhost-vsock (load vhost_vsock)",
    )?;
    let run = boot_in(
        "crosvm-vsock",
        format!(
            "{} device vfio-user-server vsock --socket {{socket}} --cid 42 {}",
            shell_quote_path(&crosvm),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-vsock.sh")),
        &["vmw_vsock_virtio_transport"],
        "",
        Some(&Jail::showing(&[Path::new("/dev/vhost-vsock")])),
    )?;
    assert_eq!(run.result("pci.device")?, "0x1053");
    assert_eq!(run.result("virtio.driver")?, "vmw_vsock_virtio_transport");
    assert_eq!(run.result("vsock.dev")?, "present");
    Ok(())
}

/// virtio-input, a keyboard fed from a host socket: the guest's driver makes an input device,
/// and the key press and release the host sends once the guest is ready arrive as events.
fn crosvm_input_keyboard_events_reach_the_guest() -> Checked {
    let crosvm = crosvm_serving("input")?;
    let dir = std::env::temp_dir().join(format!("crosvm-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let events_path = dir.join("keyboard.sock");
    let _ = std::fs::remove_file(&events_path);
    let listener = UnixListener::bind(&events_path)?;
    // crosvm connects again for every device it builds (a probe at start, then per client):
    // the events go to every connection, the dead ones ignore them.
    let connections: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
    {
        let connections = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                connections.lock().unwrap().push(stream);
            }
        });
    }
    // struct virtio_input_event: le16 type, le16 code, le32 value. KEY_A (30) down and up,
    // each followed by SYN_REPORT.
    let mut events = Vec::new();
    for (kind, code, value) in [(1u16, 30u16, 1u32), (0, 0, 0), (1, 30, 0), (0, 0, 0)] {
        events.extend_from_slice(&kind.to_le_bytes());
        events.extend_from_slice(&code.to_le_bytes());
        events.extend_from_slice(&value.to_le_bytes());
    }
    let responder = {
        let connections = connections.clone();
        Responder(Arc::new(move |line: &str| {
            if line.contains("@@INPUT ready") {
                for stream in connections.lock().unwrap().iter_mut() {
                    let _ = stream.write_all(&events);
                }
            }
            None
        }))
    };
    let env = GuestEnv::prepare()?;
    let run = run_confined(
        &env,
        &Boot {
            name: "crosvm-input".to_string(),
            servers: vec![format!(
                "{} device vfio-user-server input --socket {{socket}} --input keyboard[path={}] {}",
                shell_quote_path(&crosvm),
                events_path.display(),
                sandboxed()?
            )],
            script: with_device_report(include_str!("../guest/crosvm-input.sh")),
            modules: vec!["virtio_input".to_string(), "evdev".to_string()],
            echo_prefix: Some("[crosvm-input] ".to_string()),
            timeout: Duration::from_secs(300),
            responder: Some(responder),
            ..Boot::default()
        },
        &Jail::empty(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let run = run?;
    run.check()?;
    assert_eq!(run.result("pci.device")?, "0x1052");
    assert_eq!(run.result("virtio.driver")?, "virtio_input");
    assert_eq!(run.result("input.name")?, "Crosvm Virtio Keyboard 0");
    assert_eq!(run.result("input.event0")?, "1 30 1");
    assert_eq!(run.result("input.event1")?, "0 0 0");
    assert_eq!(run.result("input.event2")?, "1 30 0");
    assert_eq!(run.result("input.event3")?, "0 0 0");
    Ok(())
}

/// How the frames of a cross-domain guest reach the compositor.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FrameMode {
    /// BAR2 mapped by QEMU, the compositor given BAR2's own file for the wl_shm pool (the
    /// default): nothing is copied.
    ZeroCopy,
    /// BAR2 mapped by QEMU, each frame copied out of its shadow into the blob the compositor
    /// holds (`--copy-wl-shm-frames`).
    Copy,
    /// BAR2 offered trapped only: each guest store is a REGION_WRITE into the shadow, which the
    /// compositor reads in place.
    Trapped,
}

/// Cross-domain (multi-VM Wayland): a guest program of ours draws into a host-visible blob it
/// maps through BAR2, shares it with weston on the host as a wl_shm pool through the
/// cross-domain context, and shows it fullscreen; the host's screenshot must be the pattern,
/// for two frames that differ at every pixel. A second guest against the same server (the first
/// one's blobs released at its disconnect) does it again. The server's relay must have lent the
/// compositor BAR2's file and copied nothing.
fn crosvm_gpu_cross_domain_frames_reach_weston() -> Checked {
    cross_domain_frames_reach(Weston::start, "weston", FrameMode::ZeroCopy)
}

/// The same, copying each frame: the relay copied, and lent nothing.
fn crosvm_gpu_cross_domain_frames_reach_weston_copied() -> Checked {
    cross_domain_frames_reach(Weston::start, "weston", FrameMode::Copy)
}

/// The same with BAR2 offered trapped only, from which the frames reach weston all the same.
fn crosvm_gpu_cross_domain_frames_reach_weston_trapped() -> Checked {
    cross_domain_frames_reach(Weston::start, "weston", FrameMode::Trapped)
}

/// The same against cage, a compositor on wlroots, so that nothing is tuned to weston.
fn crosvm_gpu_cross_domain_frames_reach_cage() -> Checked {
    cross_domain_frames_reach(Cage::start, "cage", FrameMode::ZeroCopy)
}

fn crosvm_gpu_cross_domain_frames_reach_cage_copied() -> Checked {
    cross_domain_frames_reach(Cage::start, "cage", FrameMode::Copy)
}

fn crosvm_gpu_cross_domain_frames_reach_cage_trapped() -> Checked {
    cross_domain_frames_reach(Cage::start, "cage", FrameMode::Trapped)
}

/// Starts a compositor of `width` x `height` named for a check.
type StartCompositor<C> = fn(&GuestEnv, &str, u32, u32) -> Result<C>;

fn cross_domain_frames_reach<C: Compositor + Send + Sync + 'static>(
    start: StartCompositor<C>,
    compositor_name: &str,
    mode: FrameMode,
) -> Checked {
    let (suffix, flag) = match mode {
        FrameMode::ZeroCopy => ("", ""),
        FrameMode::Copy => ("-copied", "--copy-wl-shm-frames"),
        FrameMode::Trapped => ("-trapped", "--trapped-shared-memory"),
    };
    let name = &format!("crosvm-cross-domain-{compositor_name}{suffix}");
    let crosvm = crosvm_serving("gpu")?;
    require(
        is_root(),
        "the compositors run under chroot, which needs root",
    )?;
    let env = GuestEnv::prepare()?;
    let (width, height) = (640, 480);
    let compositor = Arc::new(start(&env, name, width, height)?);
    let program = programs::build(&env, "wayland-pattern")?;
    let checks = FramesShown::default();
    let responder = frames_on_screen(compositor.clone(), checks.clone());
    let server = format!(
        "{} device vfio-user-server gpu --socket {{socket}} --wayland-sock {} {flag} \
         --params '{{\"context-types\":\"cross-domain\",\"displays\":[{{\"mode\":{{\"windowed\":[{width},{height}]}}}}]}}' {}",
        shell_quote_path(&crosvm),
        shell_quote_path(&compositor.socket()),
        sandboxed()?
    );
    let boot = Boot {
        name: name.to_string(),
        servers: vec![server],
        script: "/bin/wayland-pattern 2\n".to_string(),
        modules: vec!["virtio_gpu".to_string()],
        echo_prefix: Some(format!("[{name}] ")),
        timeout: Duration::from_secs(300),
        files: vec![("/bin/wayland-pattern".to_string(), program)],
        responder: Some(responder),
        // Trapped, the pixels reach the server as BAR writes, which QEMU would otherwise post
        // and let the guest's commit (in its RAM) overtake.
        synchronous_bar_writes: mode == FrameMode::Trapped,
        ..Boot::default()
    };
    let mut servers = Servers::start(&env, &boot)?;
    let serving = serving_process(servers.pids()[0])?;
    let jail = Jail {
        shown: vec![compositor
            .socket()
            .parent()
            .context("the compositor's socket has no directory")?
            .to_path_buf()],
        relay_dir: Some("gpu"),
        proc: true,
        ..Jail::empty()
    };
    assert_confined(serving, name, &jail)?;
    let boots = if mode == FrameMode::Trapped { 1 } else { 2 };
    for i in 0..boots {
        let run = servers.boot(
            &env,
            &Boot {
                name: format!("{name}-{i}"),
                echo_prefix: Some(format!("[{name}-{i}] ")),
                ..boot.clone()
            },
        )?;
        run.check()?;
        assert_eq!(run.result("virtgpu.host_visible")?, "1");
        assert_eq!(run.result("wayland.size")?, format!("{width}x{height}"));
        assert_eq!(run.result("frames.shown")?, "2");
        let mut checks = checks.lock().unwrap();
        assert_eq!(checks.len(), 2, "guest {i}: {checks:?}");
        for (frame, check) in checks.iter().enumerate() {
            assert_eq!(
                check.as_ref(),
                Ok(&(frame as u32)),
                "guest {i}, frame {frame}"
            );
        }
        checks.clear();
    }
    assert!(servers.all_running()?, "the server survived both guests");
    assert_confined(serving, name, &jail)?;
    let relays = relay_connections_of(&servers, boots)?;
    let copied: u64 = relays.iter().map(|r| r.copied_bytes).sum();
    let lent: u64 = relays.iter().map(|r| r.lent_files).sum();
    match mode {
        FrameMode::ZeroCopy | FrameMode::Trapped => {
            assert_eq!(copied, 0, "nothing copied: {relays:?}");
            assert!(lent >= boots as u64, "each guest's pool lent: {relays:?}");
        }
        FrameMode::Copy => {
            assert!(copied > 0, "frames copied: {relays:?}");
            assert_eq!(lent, 0, "nothing lent: {relays:?}");
        }
    }
    Ok(())
}

/// The relay connections the server reported, once at least `count` of them carried messages
/// (each is logged when the guest's context closes it, which may follow the guest's end).
fn relay_connections_of(servers: &Servers, count: usize) -> Result<Vec<RelayConnection>> {
    let log = servers.logs().remove(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let relays: Vec<RelayConnection> = relay_connections(&std::fs::read_to_string(&log)?)
            .into_iter()
            .filter(|r| r.messages > 0)
            .collect();
        if relays.len() >= count {
            return Ok(relays);
        }
        if Instant::now() > deadline {
            bail!(
                "{} relay connections with messages in {}, expected {count}",
                relays.len(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn crosvm_rng_is_confined() -> Checked {
    let crosvm = crosvm_serving("rng")?;
    confined_while_serving(
        "crosvm-rng-confined",
        format!(
            "{} device vfio-user-server rng --socket {{socket}} {}",
            shell_quote_path(&crosvm),
            sandboxed()?
        ),
        "echo @@RESULT rng.read=$(head -c 16 /dev/hwrng | wc -c)\n",
        &["virtio_rng"],
        ("rng.read", "16"),
    )
}

/// rng with the server polling its client's socket (`--poll-us`, the subcommand's own option):
/// the guest is served all the same, as the sandbox confines it.
fn crosvm_rng_serves_with_polling() -> Checked {
    let crosvm = crosvm_serving("rng")?;
    confined_while_serving(
        "crosvm-rng-polling",
        format!(
            "{} device vfio-user-server --poll-us 50 rng --socket {{socket}} {}",
            shell_quote_path(&crosvm),
            sandboxed()?
        ),
        "echo @@RESULT rng.read=$(head -c 4096 /dev/hwrng | wc -c)\n",
        &["virtio_rng"],
        ("rng.read", "4096"),
    )
}

/// block, its image opened before the sandbox: the guest reads and writes it all the same.
fn crosvm_block_is_confined() -> Checked {
    let crosvm = crosvm_serving("block")?;
    let dir = std::env::temp_dir().join(format!("vfio-user-blk-jail-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(16 << 20)?;
    let result = confined_while_serving(
        "crosvm-block-confined",
        format!(
            "{} device vfio-user-server block --socket {{socket}} --file {} {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&disk),
            sandboxed()?
        ),
        "echo jailed | dd of=/dev/vda bs=512 conv=sync,fsync 2>/dev/null\n\
         echo @@RESULT blk.read=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 6)\n",
        &["virtio_blk"],
        ("blk.read", "jailed"),
    );
    let written = std::fs::read(&disk)?;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    assert_eq!(
        &written[..6],
        b"jailed",
        "the host's image holds what the guest wrote"
    );
    Ok(())
}

/// console, its output file opened before the sandbox: what the guest writes reaches it.
fn crosvm_console_is_confined() -> Checked {
    let crosvm = crosvm_serving("console")?;
    let dir = std::env::temp_dir().join(format!("vfio-user-con-jail-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let output = dir.join("output");
    let result = confined_while_serving(
        "crosvm-console-confined",
        format!(
            "{} device vfio-user-server console --socket {{socket}} --output-file {} {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&output),
            sandboxed()?
        ),
        "echo from-the-jailed-console > /dev/hvc0\necho @@RESULT console.wrote=1\n",
        &[],
        ("console.wrote", "1"),
    );
    let written = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    assert!(
        written.contains("from-the-jailed-console"),
        "the host's file holds what the guest wrote: {written:?}"
    );
    Ok(())
}

/// Served by a user without privileges (nobody, through setpriv), rng is sandboxed all the same,
/// in a user namespace of its own, and the guest reads from it.
fn crosvm_rng_is_confined_unprivileged() -> Checked {
    let crosvm = crosvm_serving("rng")?;
    require(is_root(), "drops to the nobody user, which needs root")?;
    require(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "needs setpriv (util-linux)",
    )?;
    // nobody binds the socket: its directory becomes nobody's.
    confined_as(
        "crosvm-rng-unprivileged",
        format!(
            "{}{} device vfio-user-server rng --socket {{socket}} {}",
            as_user(UNPRIVILEGED_UID),
            shell_quote_path(&crosvm),
            sandboxed()?,
        ),
        "echo @@RESULT rng.read=$(head -c 16 /dev/hwrng | wc -c)\n",
        &["virtio_rng"],
        ("rng.read", "16"),
        &Jail {
            uid: Some(UNPRIVILEGED_UID),
            ..Jail::empty()
        },
    )
}

/// Where the kernel refuses the sandbox's namespaces (here: run under bubblewrap with user
/// namespaces disabled inside), the server says so and names --disable-sandbox, rather than
/// aborting, and leaves no socket behind.
fn crosvm_refused_sandbox_names_the_way_out() -> Checked {
    let crosvm = crosvm_serving("rng")?;
    require(
        Command::new("bwrap").arg("--version").output().is_ok(),
        "needs bwrap (Debian: bubblewrap) to refuse the namespaces",
    )?;
    let dir = std::env::temp_dir().join(format!("vfio-user-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("rng.sock");
    let output = Command::new("bwrap")
        .args([
            "--dev-bind",
            "/",
            "/",
            "--unshare-user",
            "--disable-userns",
            "--",
        ])
        .arg(&crosvm)
        .args(["device", "vfio-user-server", "rng", "--socket"])
        .arg(&socket)
        .arg("--jail")
        .arg(jail_value()?)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let left = socket.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the kernel refuses the sandbox's namespaces")
            && stderr.contains("--disable-sandbox"),
        "{stderr}"
    );
    assert!(!left, "no socket is left behind");
    Ok(())
}

/// A syscall the policy does not allow kills the sandboxed server, and nothing else serves in
/// its place: rng with a policy directory whose policy allows almost nothing ends, says why,
/// and leaves no socket to connect to.
fn crosvm_rng_killed_by_its_policy() -> Checked {
    let crosvm = crosvm_serving("rng")?;
    let dir = std::env::temp_dir().join(format!("vfio-user-narrow-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("rng_device_vfio_user.policy"),
        "# Too narrow on purpose: the server cannot even wait for a client.\n\
         read: 1\nwrite: 1\nexit: 1\nexit_group: 1\nrt_sigreturn: 1\n",
    )?;
    let socket = dir.join("rng.sock");
    // The kernel's record of the kill, where this process may read the kernel's log.
    let mut kernel_log = KernelLog::watch().ok();
    let output = Command::new(&crosvm)
        .args(["device", "vfio-user-server", "rng", "--socket"])
        .arg(&socket)
        .arg("--jail")
        .arg(format!(
            "pivot-root={},seccomp-policy-dir={}",
            empty_root()?.display(),
            dir.display()
        ))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("killed by signal 31"),
        "the error names the signal (SIGSYS): {stderr}"
    );
    assert!(!socket.exists(), "no socket is left to connect to");
    assert!(UnixStream::connect(&socket).is_err());
    if let Some(log) = kernel_log.as_mut() {
        let records = log.seccomp_records()?;
        eprintln!("the kernel's record: {records:?}");
        assert!(
            records.iter().any(|r| r.contains("sig=31")),
            "the kernel recorded a seccomp kill (SIGSYS): {records:?}"
        );
    }
    Ok(())
}

fn main() {
    checks::run_around(
        no_seccomp_violation,
        &[
            ("crosvm_rng_reaches_the_guest", crosvm_rng_reaches_the_guest),
            (
                "crosvm_block_keeps_what_the_guest_writes",
                crosvm_block_keeps_what_the_guest_writes,
            ),
            (
                "crosvm_console_passes_text_both_ways",
                crosvm_console_passes_text_both_ways,
            ),
            (
                "crosvm_gpu_binds_and_scans_out",
                crosvm_gpu_binds_and_scans_out,
            ),
            (
                "crosvm_net_pings_the_host_tap",
                crosvm_net_pings_the_host_tap,
            ),
            (
                "crosvm_snd_makes_a_sound_card",
                crosvm_snd_makes_a_sound_card,
            ),
            (
                "crosvm_snd_playback_reaches_the_host_file",
                crosvm_snd_playback_reaches_the_host_file,
            ),
            (
                "crosvm_gpu_cross_domain_compositor_files_reach_the_guest",
                crosvm_gpu_cross_domain_compositor_files_reach_the_guest,
            ),
            ("crosvm_fs_shares_a_directory", crosvm_fs_shares_a_directory),
            (
                "crosvm_fs_shares_a_directory_unprivileged",
                crosvm_fs_shares_a_directory_unprivileged,
            ),
            ("crosvm_vsock_binds", crosvm_vsock_binds),
            (
                "crosvm_input_keyboard_events_reach_the_guest",
                crosvm_input_keyboard_events_reach_the_guest,
            ),
            (
                "crosvm_gpu_cross_domain_frames_reach_weston",
                crosvm_gpu_cross_domain_frames_reach_weston,
            ),
            (
                "crosvm_gpu_cross_domain_frames_reach_weston_copied",
                crosvm_gpu_cross_domain_frames_reach_weston_copied,
            ),
            (
                "crosvm_gpu_cross_domain_frames_reach_weston_trapped",
                crosvm_gpu_cross_domain_frames_reach_weston_trapped,
            ),
            ("crosvm_rng_is_confined", crosvm_rng_is_confined),
            ("crosvm_block_is_confined", crosvm_block_is_confined),
            (
                "crosvm_block_serves_unconfined",
                crosvm_block_serves_unconfined,
            ),
            ("crosvm_console_is_confined", crosvm_console_is_confined),
            (
                "crosvm_rng_killed_by_its_policy",
                crosvm_rng_killed_by_its_policy,
            ),
            (
                "crosvm_rng_is_confined_unprivileged",
                crosvm_rng_is_confined_unprivileged,
            ),
            (
                "crosvm_rng_serves_with_polling",
                crosvm_rng_serves_with_polling,
            ),
            (
                "crosvm_refused_sandbox_names_the_way_out",
                crosvm_refused_sandbox_names_the_way_out,
            ),
            (
                "crosvm_gpu_cross_domain_frames_reach_cage",
                crosvm_gpu_cross_domain_frames_reach_cage,
            ),
            (
                "crosvm_gpu_cross_domain_frames_reach_cage_copied",
                crosvm_gpu_cross_domain_frames_reach_cage_copied,
            ),
            (
                "crosvm_gpu_cross_domain_frames_reach_cage_trapped",
                crosvm_gpu_cross_domain_frames_reach_cage_trapped,
            ),
        ],
    );
}
