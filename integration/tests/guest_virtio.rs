// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Linux guests in QEMU driving the virtio test devices over vfio-user: enumeration, the rng's
//! stream, block data that reaches the host file and survives a reboot of the guest, and the
//! same without MSI-X.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use integration::guest;
use integration::guest::shell_quote;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::guest::GuestRun;
use integration::guest::Servers;
use integration::virtio::blk::SERIAL;

const SCRIPT: &str = include_str!("../guest/virtio.sh");
const DISK_SIZE: u64 = 128 << 20;
const MODULES: [&str; 2] = ["virtio_blk", "virtio_rng"];

fn server(args: &str) -> String {
    format!(
        "{} {args} --socket {{socket}}",
        shell_quote(env!("CARGO_BIN_EXE_virtio-server"))
    )
}

fn disk(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vfio-user-guest-disk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(DISK_SIZE).unwrap();
    path
}

fn boot_config(name: &str, servers: Vec<String>, append: &str) -> Boot {
    Boot {
        name: name.to_string(),
        servers,
        script: SCRIPT.to_string(),
        modules: MODULES.iter().map(|m| m.to_string()).collect(),
        kernel_append: append.to_string(),
        echo_prefix: Some(format!("[{name}] ")),
        timeout: Duration::from_secs(300),
        ..Boot::default()
    }
}

fn boot(name: &str, servers: Vec<String>, append: &str) -> Result<GuestRun> {
    let env = GuestEnv::prepare()?;
    let run = guest::run(&env, &boot_config(name, servers, append))?;
    run.check()?;
    Ok(run)
}

fn rng_and_blk(disk: &Path) -> Vec<String> {
    vec![
        server("rng"),
        server(&format!(
            "blk --file {}",
            shell_quote(disk.to_str().unwrap())
        )),
    ]
}

/// The guest's 1 MiB pattern, rebuilt on the host.
fn pattern() -> Vec<u8> {
    let line = b"vfio-user virtio-blk pattern 0123456789abcdef\n";
    line.iter().copied().cycle().take(1 << 20).collect()
}

fn read_disk(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(path).unwrap(),
        &mut buf,
        offset,
    )
    .unwrap();
    buf
}

fn check_enumeration(run: &GuestRun, msix: bool) -> Result<()> {
    for (id, class, queues) in [("0x1044", "0xff0000", 1), ("0x1042", "0x018000", 1)] {
        assert_eq!(run.result(&format!("{id}.class"))?, class);
        assert_eq!(run.result(&format!("{id}.driver"))?, "virtio-pci");
        assert_eq!(run.result(&format!("{id}.bar0_size"))?, "0x8000");
        let vectors: u32 = run.result(&format!("{id}.msix_vectors"))?.parse()?;
        if msix {
            assert_eq!(
                vectors,
                queues + 1,
                "{id}: config vector plus one per queue"
            );
        } else {
            assert_eq!(vectors, 0, "{id}: pci=nomsi");
        }
    }
    assert_eq!(run.result("virtio4.driver")?, "virtio_rng");
    assert_eq!(run.result("virtio2.driver")?, "virtio_blk");
    Ok(())
}

fn check_rng(run: &GuestRun) -> Result<()> {
    assert_eq!(run.result("rng.present")?, "1");
    assert!(run.result("rng.current")?.starts_with("virtio_rng"));
    assert_eq!(run.result("rng.bytes")?, "64");
    assert_eq!(
        run.result("rng.invalid")?,
        "0",
        "bytes >= 251 are not in the stream"
    );
    assert_eq!(run.result("rng.breaks")?, "0", "the stream steps by one");
    Ok(())
}

/// MiB/s of 64 MiB moved in `centiseconds`.
fn rate(run: &GuestRun, key: &str) -> Result<f64> {
    let centiseconds: f64 = run.result(key)?.parse()?;
    Ok(64.0 / (centiseconds.max(1.0) / 100.0))
}

#[test]
fn rng_and_blk_in_one_guest_and_data_survives_a_new_boot() -> Result<()> {
    let disk = disk("rng-blk.img");
    let servers = || rng_and_blk(&disk);
    let run = boot("virtio-write", servers(), "vfio_user_test=write")?;
    check_enumeration(&run, true)?;
    check_rng(&run)?;
    assert_eq!(run.result("blk.present")?, "1");
    assert_eq!(
        run.result("blk.size_sectors")?,
        (DISK_SIZE / 512).to_string()
    );
    assert_eq!(run.result("blk.serial")?, std::str::from_utf8(SERIAL)?);
    for key in [
        "blk.write_status",
        "blk.big_write_status",
        "blk.flush_status",
    ] {
        assert_eq!(run.result(key)?, "0", "{key}");
    }
    let pattern_md5 = run.result("blk.pattern_md5")?.to_string();
    assert_eq!(run.result("blk.readback_md5")?, pattern_md5);
    println!(
        "virtio-blk through vfio-user, 64 MiB O_DIRECT in the guest: write {:.1} MiB/s, read piped to md5sum {:.1} MiB/s",
        rate(&run, "blk.big_write_centiseconds")?,
        rate(&run, "blk.big_read_centiseconds")?
    );

    // Nothing lost: the host file holds what the guest wrote, where it wrote it.
    let pattern = pattern();
    assert_eq!(read_disk(&disk, 1 << 20, pattern.len()), pattern);
    for mib in 8..8 + 64 {
        assert!(
            read_disk(&disk, mib << 20, pattern.len()) == pattern,
            "MiB {mib} of the 64 MiB transfer"
        );
    }

    // A fresh guest (fresh QEMU, same servers' device types) reads what the first one wrote.
    let run = boot("virtio-read", servers(), "vfio_user_test=read")?;
    assert_eq!(run.result("blk.readback_md5")?, pattern_md5);
    Ok(())
}

#[test]
fn devices_work_with_intx_only() -> Result<()> {
    let disk = disk("intx.img");
    let run = boot(
        "virtio-intx",
        rng_and_blk(&disk),
        "pci=nomsi vfio_user_test=write",
    )?;
    check_enumeration(&run, false)?;
    check_rng(&run)?;
    assert_eq!(
        run.result("blk.readback_md5")?,
        run.result("blk.pattern_md5")?
    );
    assert_eq!(read_disk(&disk, 1 << 20, 1 << 20), pattern());
    Ok(())
}

/// The guest reboots inside one QEMU process (a machine reset): the devices are reset and
/// re-probed, and what the first boot wrote is read back by the second.
#[test]
fn devices_work_again_after_a_guest_reboot() -> Result<()> {
    let disk = disk("reboot.img");
    let env = GuestEnv::prepare()?;
    let run = guest::run(
        &env,
        &Boot {
            script: include_str!("../guest/virtio-reboot.sh").to_string(),
            allow_reboot: true,
            ..boot_config("virtio-reboot", rng_and_blk(&disk), "")
        },
    )?;
    run.check()?;
    assert_eq!(run.result("boot1.rng_ok")?, "1");
    assert_eq!(run.result("boot1.write_status")?, "0");
    assert_eq!(run.result("boot1.marker_status")?, "0");
    assert_eq!(run.result("boot2.rng_ok")?, "1", "rng after the reset");
    assert_eq!(run.result("boot2.pattern_ok")?, "1", "blk after the reset");
    assert_eq!(read_disk(&disk, 1 << 20, 1 << 20), pattern());
    Ok(())
}

/// QEMU dies in the middle of block I/O; the same server processes then serve a new QEMU.
#[test]
fn servers_survive_qemu_killed_mid_io() -> Result<()> {
    let disk = disk("killed.img");
    let env = GuestEnv::prepare()?;
    let first = boot_config("virtio-killed", rng_and_blk(&disk), "");
    let mut servers = Servers::start(&env, &first)?;
    let killed = servers.boot(
        &env,
        &Boot {
            script: "echo '@@RESULT io.started=1'\n\
                     dd if=/dev/zero of=/dev/vda bs=1M count=120 oflag=direct\n\
                     echo '@@RESULT io.finished=1'\n"
                .to_string(),
            kill_on: Some("io.started=1".to_string()),
            ..first.clone()
        },
    )?;
    assert!(
        killed.killed_on_marker,
        "QEMU was killed: {:?}",
        killed.results
    );
    assert!(
        !killed.results.contains_key("io.finished"),
        "killed before the I/O ended"
    );
    assert!(servers.all_running()?, "servers outlive their client");

    let run = servers.boot(
        &env,
        &Boot {
            name: "virtio-after-kill".to_string(),
            ..boot_config("virtio-after-kill", Vec::new(), "vfio_user_test=write")
        },
    )?;
    run.check()?;
    check_rng(&run)?;
    assert_eq!(
        run.result("blk.readback_md5")?,
        run.result("blk.pattern_md5")?
    );
    assert!(servers.all_running()?);
    Ok(())
}
