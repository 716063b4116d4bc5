// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! Boots Linux guests in QEMU (TCG) with the reference device served over vfio-user by
//! `reference-server`, and checks what the guest kernel sees and what its MMIO reaches.
//!
//! The first run builds the guest tree from Debian's packages (one to five minutes; see
//! `integration::guest`); later runs take seconds per boot.

use std::time::Duration;

use anyhow::Context;
use anyhow::Result;
use integration::guest;
use integration::guest::shell_quote;
use integration::guest::Boot;
use integration::guest::GuestEnv;
use integration::guest::GuestRun;
use integration::reference;

/// Reports every reference device the guest finds as `devN.*` results.
const SCRIPT: &str = include_str!("../guest/reference-devices.sh");

fn reference_server() -> String {
    format!(
        "{} --socket {{socket}}",
        shell_quote(env!("CARGO_BIN_EXE_reference-server"))
    )
}

/// Boots a guest with one reference device per server and returns its results once it has
/// reported success.
fn boot(name: &str, servers: usize) -> Result<GuestRun> {
    let env = GuestEnv::prepare()?;
    let run = guest::run(
        &env,
        &Boot {
            name: name.to_string(),
            servers: vec![reference_server(); servers],
            script: SCRIPT.to_string(),
            // Shown by `--nocapture`, or when the test fails.
            echo_prefix: Some(format!("[{name}] ")),
            timeout: Duration::from_secs(180),
            ..Boot::default()
        },
    )?;
    run.check()?;
    Ok(run)
}

/// A result the guest printed as a hex number (devmem prints upper case).
fn hex(run: &GuestRun, key: &str) -> Result<u64> {
    let value = run.result(key)?;
    let digits = value.strip_prefix("0x").unwrap_or(value);
    u64::from_str_radix(digits, 16).with_context(|| format!("{key}={value} is not hex"))
}

/// What the kernel enumerated for `devN` and what its MMIO returned, `scratch` being the value
/// the script wrote to that device.
fn check_reference_device(run: &GuestRun, dev: &str, scratch: u64) -> Result<()> {
    let key = |name: &str| format!("{dev}.{name}");
    assert_eq!(hex(run, &key("class"))?, u64::from(reference::CLASS_CODE));
    assert_eq!(hex(run, &key("bar0_size"))?, reference::BAR0_SIZE);
    assert_eq!(run.result(&key("bar0_64bit"))?, "1");
    assert_eq!(hex(run, &key("bar2_size"))?, reference::BAR2_SIZE);
    assert_eq!(run.result(&key("bar2_64bit"))?, "0");
    assert_eq!(
        hex(run, &key("msix_cap"))?,
        reference::MSIX_CAP_OFFSET as u64
    );
    assert_eq!(
        run.result(&key("msix_vectors"))?,
        reference::MSIX_VECTORS.to_string()
    );
    assert_eq!(
        hex(run, &key("bar0_id"))?,
        u64::from(reference::regs::MAGIC)
    );
    assert_eq!(hex(run, &key("bar0_scratch"))?, scratch);
    assert_eq!(hex(run, &key("bar0_scratch_last"))?, scratch);
    assert_eq!(hex(run, &key("bar2_trapped"))?, scratch);
    assert_eq!(hex(run, &key("bar2_mapped"))?, scratch);
    Ok(())
}

#[test]
fn reference_device_enumerates() -> Result<()> {
    let run = boot("reference_device_enumerates", 1)?;
    assert_eq!(run.result("devices")?, "1");
    check_reference_device(&run, "dev0", 0x5a5a_0000)
}

#[test]
fn two_servers_one_guest() -> Result<()> {
    let run = boot("two_servers_one_guest", 2)?;
    assert_eq!(run.result("devices")?, "2");
    assert_ne!(run.result("dev0.address")?, run.result("dev1.address")?);
    check_reference_device(&run, "dev0", 0x5a5a_0000)?;
    check_reference_device(&run, "dev1", 0x5a5a_0001)
}
