// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The demo: boots a Linux guest in QEMU with three vfio-user devices, each served by its own
//! process over `vfio_user_server` (the reference device, virtio-rng and virtio-blk on a
//! scratch disk), and prints what the guest sees. Builds the guest tree on first use.
//!
//!     cargo run --release -p integration --bin demo

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use integration::guest;
use integration::guest::Boot;
use integration::guest::GuestEnv;

const SCRIPT: &str = concat!(
    "echo '--- the guest sees these PCI functions (vendor device class driver):'\n",
    "for d in /sys/bus/pci/devices/*; do\n",
    "  drv=none; [ -e $d/driver ] && drv=$(basename $(readlink $d/driver))\n",
    "  echo \"  ${d##*/} $(cat $d/vendor) $(cat $d/device) $(cat $d/class) $drv\"\n",
    "done\n",
    include_str!("../../guest/reference-devices.sh"),
    "\n",
    include_str!("../../guest/virtio.sh"),
);

fn quoted(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn main() -> Result<()> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the demo's directory")?
        .to_path_buf();
    let scratch = std::env::temp_dir().join(format!("vfio-user-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let disk = scratch.join("disk.img");
    std::fs::File::create(&disk)?.set_len(128 << 20)?;
    let virtio = quoted(&bin_dir.join("virtio-server"));
    let servers = vec![
        format!(
            "{} --socket {{socket}}",
            quoted(&bin_dir.join("reference-server"))
        ),
        format!("{virtio} rng --socket {{socket}}"),
        format!("{virtio} blk --file {} --socket {{socket}}", quoted(&disk)),
    ];
    println!("demo: preparing the guest (the first run builds a Debian tree: about 2 minutes)");
    let env = GuestEnv::prepare()?;
    println!("demo: booting QEMU with these vfio-user servers:");
    for server in &servers {
        println!("  {server}");
    }
    let run = guest::run(
        &env,
        &Boot {
            name: "demo".to_string(),
            servers,
            script: SCRIPT.to_string(),
            modules: vec!["virtio_blk".to_string(), "virtio_rng".to_string()],
            kernel_append: "vfio_user_test=write".to_string(),
            timeout: Duration::from_secs(300),
            echo_prefix: Some("guest| ".to_string()),
            ..Boot::default()
        },
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let run = run?;
    println!("demo: what the guest reported:");
    for (key, value) in &run.results {
        println!("  {key} = {value}");
    }
    run.check()?;
    println!("demo: the guest ran its checks and powered off cleanly");
    Ok(())
}
