// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The QEMU guest checks of crosvm's storage devices beyond block and fs (scsi, 9p, pmem), served
//! by `crosvm device vfio-user-server` built from upstream-patches/. They run when CROSVM_BIN names that
//! crosvm binary; otherwise cargo reports them as ignored with the reason:
//!
//!     CROSVM_BIN=/path/to/crosvm cargo test -p integration --test crosvm_storage

use std::os::unix::fs::FileExt;

use integration::checks;
use integration::checks::Checked;
use integration::guest::shell_quote_path;

mod crosvm_common;

use crosvm_common::boot_in;
use crosvm_common::crosvm_serving;
use crosvm_common::no_seccomp_violation;
use crosvm_common::pattern;
use crosvm_common::sandboxed;
use crosvm_common::with_device_report;
use crosvm_common::Jail;
use crosvm_common::Scratch;

/// virtio-scsi on a disk image, from a sandbox that shows nothing of the host: the guest finds
/// the disk, writes a pattern and reads it back, and the host finds it in the image.
fn crosvm_scsi_keeps_what_the_guest_writes() -> Checked {
    let crosvm = crosvm_serving("scsi")?;
    let scratch = Scratch::new("crosvm-scsi")?;
    let disk = scratch.0.join("disk.img");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let run = boot_in(
        "crosvm-scsi",
        format!(
            "{} device vfio-user-server scsi --socket {{socket}} --scsi-block {} {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&disk),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-scsi.sh")),
        &["virtio_scsi", "sd_mod"],
        "",
        Some(&Jail::empty()),
    )?;
    assert_eq!(run.result("pci.device")?, "0x1048");
    assert_eq!(run.result("virtio.driver")?, "virtio_scsi");
    assert_eq!(run.result("scsi.present")?, "1");
    assert_eq!(run.result("scsi.size_sectors")?, (64 << 11).to_string());
    assert_eq!(run.result("scsi.write_status")?, "0");
    assert_eq!(run.result("scsi.flush_status")?, "0");
    assert_eq!(
        run.result("scsi.readback_md5")?,
        run.result("scsi.pattern_md5")?
    );
    let expected = pattern(b"vfio-user virtio-scsi pattern 0123456789abcdef\n");
    let mut on_disk = vec![0u8; expected.len()];
    std::fs::File::open(&disk)?.read_exact_at(&mut on_disk, 1 << 20)?;
    assert!(on_disk == expected, "the image holds what the guest wrote");
    Ok(())
}

/// virtio-9p on a host directory, from a child confined to it: the guest mounts it, reads the
/// host's file and writes one the host then finds.
fn crosvm_9p_shares_a_directory() -> Checked {
    let crosvm = crosvm_serving("9p")?;
    let scratch = Scratch::new("crosvm-9p")?;
    let dir = scratch.0.join("shared");
    std::fs::create_dir(&dir)?;
    std::fs::write(dir.join("from-host.txt"), "written by the host\n")?;
    let run = boot_in(
        "crosvm-9p",
        format!(
            "{} device vfio-user-server 9p --socket {{socket}} --shared-dir {}:shared {}",
            shell_quote_path(&crosvm),
            shell_quote_path(&dir),
            sandboxed()?
        ),
        &with_device_report(include_str!("../guest/crosvm-9p.sh")),
        &["9pnet_virtio", "9p"],
        "",
        Some(&Jail {
            root: Some(dir.clone()),
            own_capabilities: true,
            ..Jail::empty()
        }),
    )?;
    assert_eq!(run.result("pci.device")?, "0x1049");
    assert_eq!(run.result("virtio.driver")?, "9pnet_virtio");
    assert_eq!(run.result("p9.mount_status")?, "0");
    assert_eq!(run.result("p9.entries")?.trim(), "from-host.txt");
    assert_eq!(run.result("p9.host_file")?, "written by the host");
    assert_eq!(run.result("p9.write_status")?, "0");
    assert_eq!(run.result("p9.umount_status")?, "0");
    assert_eq!(
        std::fs::read_to_string(dir.join("from-guest.txt"))?,
        "written by the guest\n"
    );
    Ok(())
}

/// virtio-pmem on an image that the client maps from the file itself: the guest writes a pattern
/// and flushes it, and the host finds it in the image; the guest sees a line the host wrote in
/// the image beforehand; a second boot reads the pattern back, and a third, of the image
/// read-only, reads it through the server, which refuses the guest's stores. The image is 6 MiB,
/// so its 8 MiB BAR is mappable only up to the image's end.
fn crosvm_pmem_guest_writes_reach_the_image() -> Checked {
    let crosvm = crosvm_serving("pmem")?;
    let scratch = Scratch::new("crosvm-pmem")?;
    let image = scratch.0.join("pmem.img");
    let file = std::fs::File::create(&image)?;
    file.set_len(6 << 20)?;
    file.write_all_at(b"written by the host\n", 3 << 20)?;
    let boot = |step: &str| {
        boot_in(
            &format!("crosvm-pmem-{step}"),
            format!(
                "{} device vfio-user-server pmem --socket {{socket}} --pmem {}{} {}",
                shell_quote_path(&crosvm),
                shell_quote_path(&image),
                if step == "ro" { ",ro=true" } else { "" },
                sandboxed()?
            ),
            &with_device_report(&format!(
                "step={step}\n{}",
                include_str!("../guest/crosvm-pmem.sh")
            )),
            &["virtio_pmem", "nd_pmem"],
            "",
            Some(&Jail::empty()),
        )
    };
    let run = boot("write")?;
    assert_eq!(run.result("pci.device")?, "0x105b");
    assert_eq!(run.result("virtio.driver")?, "virtio_pmem");
    assert_eq!(run.result("pmem.present")?, "1");
    assert_eq!(run.result("pmem.shmem_region_feature")?, "1");
    assert_eq!(run.result("pmem.size_bytes")?, (6 << 20).to_string());
    assert_eq!(run.result("pmem.write_status")?, "0");
    assert_eq!(
        run.result("pmem.readback_md5")?,
        run.result("pmem.pattern_md5")?
    );
    assert_eq!(run.result("pmem.host_line")?, "written by the host");
    let expected = pattern(b"vfio-user virtio-pmem pattern 0123456789abcdef\n");
    let mut in_image = vec![0u8; expected.len()];
    std::fs::File::open(&image)?.read_exact_at(&mut in_image, 1 << 20)?;
    assert!(in_image == expected, "the image holds what the guest wrote");

    let run = boot("read")?;
    assert_eq!(
        run.result("pmem.readback_md5")?,
        run.result("pmem.pattern_md5")?
    );

    // Read-only, the BAR is trapped: the guest reads the image through the server, which
    // refuses its stores.
    let run = boot("ro")?;
    assert_eq!(
        run.result("pmem.readback_md5")?,
        run.result("pmem.pattern_md5")?
    );
    assert_eq!(run.result("pmem.host_line")?, "written by the host");
    assert_eq!(run.result("pmem.store_refused")?, "1");
    let mut page = vec![0u8; 4096];
    std::fs::File::open(&image)?.read_exact_at(&mut page, 4 << 20)?;
    assert!(
        page.iter().all(|&b| b == 0),
        "the read-only image is unchanged"
    );
    Ok(())
}

fn main() {
    checks::run_around(
        no_seccomp_violation,
        &[
            (
                "crosvm_scsi_keeps_what_the_guest_writes",
                crosvm_scsi_keeps_what_the_guest_writes,
            ),
            ("crosvm_9p_shares_a_directory", crosvm_9p_shares_a_directory),
            (
                "crosvm_pmem_guest_writes_reach_the_image",
                crosvm_pmem_guest_writes_reach_the_image,
            ),
        ],
    );
}
