// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The guest's whole root file system: busybox, our `/init`, the caller's test script and the
//! kernel modules it asked for, in load order.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::path::PathBuf;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::cpio::CpioWriter;
use super::env::GuestEnv;

/// Mounts the pseudo file systems, loads `/etc/modules`, runs `/test.sh` and powers off.
const INIT: &str = include_str!("../../guest/init");

/// Writes the initramfs for one boot to `out`, with `files` (`(path in the guest, host file)`)
/// added as executables.
pub fn write(
    env: &GuestEnv,
    script: &str,
    modules: &[String],
    files: &[(String, PathBuf)],
    out: &Path,
) -> Result<()> {
    let modules = load_order(&env.modules, modules)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(file));
    for dir in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
        "run",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    // The kernel opens /dev/console for init's standard streams before init can mount
    // devtmpfs, so the node must be in the archive.
    cpio.char_device("dev/console", 0o600, 5, 1)?;

    let busybox = std::fs::read(&env.busybox)
        .with_context(|| format!("reading {}", env.busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &busybox)?;
    for applet in env.busybox_applets()? {
        if applet != "busybox" {
            cpio.symlink(&format!("bin/{applet}"), "busybox")?;
        }
    }

    cpio.file("init", 0o755, INIT.as_bytes())?;
    cpio.file("test.sh", 0o755, script.as_bytes())?;

    let mut list = String::new();
    for module in &modules {
        let name = module
            .file_name()
            .and_then(|name| name.to_str())
            .context("module file name")?;
        let data = std::fs::read(env.modules.join(module))
            .with_context(|| format!("reading module {}", module.display()))?;
        cpio.file(&format!("lib/modules/{name}"), 0o644, &data)?;
        list.push_str(name);
        list.push('\n');
    }
    cpio.file("etc/modules", 0o644, list.as_bytes())?;
    for (guest_path, host_path) in files {
        let data =
            std::fs::read(host_path).with_context(|| format!("reading {}", host_path.display()))?;
        cpio.file(guest_path.trim_start_matches('/'), 0o755, &data)?;
    }
    cpio.finish()?
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The module files (relative to `modules_dir`) to load for `names`, each after the modules it
/// depends on, as `modules.dep` lists them. Built-in modules are skipped.
pub fn load_order(modules_dir: &Path, names: &[String]) -> Result<Vec<PathBuf>> {
    let deps_path = modules_dir.join("modules.dep");
    let deps_text = std::fs::read_to_string(&deps_path)
        .with_context(|| format!("reading {}", deps_path.display()))?;
    let deps = parse_modules_dep(&deps_text);
    let builtin_path = modules_dir.join("modules.builtin");
    let builtin: BTreeSet<String> = std::fs::read_to_string(&builtin_path)
        .with_context(|| format!("reading {}", builtin_path.display()))?
        .lines()
        .map(module_name)
        .collect();
    let by_name: BTreeMap<String, &str> =
        deps.keys().map(|path| (module_name(path), *path)).collect();

    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in names {
        let name = normalize(name);
        if builtin.contains(&name) {
            continue;
        }
        let Some(path) = by_name.get(&name) else {
            bail!("no module {name} in {}", deps_path.display());
        };
        visit(path, &deps, &mut seen, &mut order);
    }
    Ok(order.into_iter().map(PathBuf::from).collect())
}

/// `modules.dep`: `path: dependency dependency ...`, one module a line.
fn parse_modules_dep(text: &str) -> BTreeMap<&str, Vec<&str>> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(module, deps)| (module.trim(), deps.split_whitespace().collect()))
        .collect()
}

/// Depth first, dependencies before dependents; `modules.dep` has no cycles.
fn visit<'a>(
    path: &'a str,
    deps: &BTreeMap<&'a str, Vec<&'a str>>,
    seen: &mut BTreeSet<&'a str>,
    order: &mut Vec<&'a str>,
) {
    if !seen.insert(path) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten() {
        visit(dep, deps, seen, order);
    }
    order.push(path);
}

/// The module name of a path such as `kernel/drivers/gpu/drm/virtio/virtio-gpu.ko.xz`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// The kernel treats `-` and `_` in module names as the same character.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/gpu/drm/virtio/virtio-gpu.ko.xz: kernel/drivers/virtio/virtio_dma_buf.ko.xz kernel/drivers/gpu/drm/drm_kms_helper.ko.xz kernel/drivers/gpu/drm/drm.ko.xz
kernel/drivers/gpu/drm/drm_kms_helper.ko.xz: kernel/drivers/gpu/drm/drm.ko.xz
kernel/drivers/gpu/drm/drm.ko.xz:
kernel/drivers/virtio/virtio_dma_buf.ko.xz:
kernel/drivers/block/virtio_blk.ko.xz:
";

    #[test]
    fn dependencies_come_first_once() {
        let dir = std::env::temp_dir().join(format!("guest-modules-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("modules.dep"), DEP).unwrap();
        std::fs::write(
            dir.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\n",
        )
        .unwrap();
        let names = ["virtio_pci", "virtio_gpu", "drm", "virtio-blk"].map(String::from);
        let order = load_order(&dir, &names).unwrap();
        let order: Vec<String> = order
            .iter()
            .map(|p| module_name(p.to_str().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                "virtio_dma_buf",
                "drm",
                "drm_kms_helper",
                "virtio_gpu",
                "virtio_blk"
            ]
        );
        assert!(load_order(&dir, &["nonexistent".to_string()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
