// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The cached guest environment: a Debian tree with QEMU, a kernel, its modules and busybox.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::path::Component;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

use super::process::Guarded;

const BUILD_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guest/build-chroot.sh");
/// Written by the build script into a complete tree.
const BUILT_STAMP: &str = ".vfio-user-guest-stamp";
const BUILD_LOG: &str = "build-chroot.log";
/// A cold build takes one to five minutes on two cores; this only catches a hung download.
const BUILD_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The paths of everything a guest boot needs, all inside the cache directory.
#[derive(Debug, Clone)]
pub struct GuestEnv {
    /// The cache directory: the tree, run logs and sockets' logs live under it.
    pub dir: PathBuf,
    /// The Debian tree built by `guest/build-chroot.sh`.
    pub root: PathBuf,
    pub kernel: PathBuf,
    /// `lib/modules/<version>` of `kernel`.
    pub modules: PathBuf,
    /// A static busybox: it runs on the host as well as in the guest.
    pub busybox: PathBuf,
    pub qemu: Qemu,
}

/// How to start the tree's QEMU from the host.
///
/// QEMU runs through the tree's own dynamic loader with the tree's libraries rather than under
/// `chroot`: that needs no mounts and no privileges, keeps the tree read-only after the build,
/// and lets servers' sockets live anywhere on the host. Its firmware and module directories
/// are then passed explicitly, since QEMU would look for them at their absolute paths.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub loader: PathBuf,
    pub library_path: String,
    pub binary: PathBuf,
    /// `-L` directories: QEMU's own data, and SeaBIOS, whose files `usr/share/qemu` links to by
    /// absolute paths that do not resolve on the host.
    pub data_dirs: Vec<PathBuf>,
    /// `$QEMU_MODULE_DIR`: accelerators and some devices are loadable modules.
    pub module_dir: PathBuf,
}

impl GuestEnv {
    /// Returns the cached environment, building it first if needed (one to five minutes; later
    /// calls, from this or any other process, wait for a build under way and then reuse it).
    pub fn prepare() -> Result<GuestEnv> {
        let dir = GuestEnv::cache_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let root = dir.join("chroot");
        build_tree(&dir, &root)?;
        GuestEnv::locate(dir, root)
    }

    /// Where the tree, the build log and the run logs are kept: `$VFIO_USER_GUEST_DIR`, else
    /// `<workspace>/target/guest`.
    pub fn cache_dir() -> PathBuf {
        match std::env::var_os("VFIO_USER_GUEST_DIR") {
            Some(dir) => PathBuf::from(dir),
            // This package's directory is `<workspace>/integration`.
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("/"))
                .join("target")
                .join("guest"),
        }
    }

    /// Whether a complete tree is in the cache already, so that [`GuestEnv::prepare`] will not
    /// build one (unless the recipe changed since).
    pub fn is_built() -> bool {
        GuestEnv::cache_dir()
            .join("chroot")
            .join(BUILT_STAMP)
            .is_file()
    }

    /// The log of the tree's builds.
    pub fn build_log() -> PathBuf {
        GuestEnv::cache_dir().join(BUILD_LOG)
    }

    /// Where the boot named `name` keeps its console, QEMU's stderr and its initramfs; its
    /// servers' output is in the sibling `<name>.servers`.
    pub fn log_dir(&self, name: &str) -> PathBuf {
        self.dir.join("runs").join(name)
    }

    fn locate(dir: PathBuf, root: PathBuf) -> Result<GuestEnv> {
        let (kernel, version) = find_kernel(&root)?;
        let modules = resolve_in_root(&root, &format!("/lib/modules/{version}"))?;
        let busybox = resolve_in_root(&root, "/usr/bin/busybox")?;
        let lib = resolve_in_root(&root, "/usr/lib/x86_64-linux-gnu")?;
        let qemu = Qemu {
            loader: resolve_in_root(&root, "/lib64/ld-linux-x86-64.so.2")?,
            library_path: lib.to_str().context("non-UTF-8 library path")?.to_string(),
            binary: resolve_in_root(&root, "/usr/bin/qemu-system-x86_64")?,
            data_dirs: vec![
                resolve_in_root(&root, "/usr/share/qemu")?,
                resolve_in_root(&root, "/usr/share/seabios")?,
            ],
            module_dir: lib.join("qemu"),
        };
        Ok(GuestEnv {
            dir,
            root,
            kernel,
            modules,
            busybox,
            qemu,
        })
    }

    /// The names of busybox's applets, for the initramfs's symlinks.
    pub fn busybox_applets(&self) -> Result<Vec<String>> {
        let output = Command::new(&self.busybox)
            .arg("--list")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --list", self.busybox.display()))?;
        if !output.status.success() {
            bail!("{} --list: {}", self.busybox.display(), output.status);
        }
        let list = String::from_utf8(output.stdout).context("busybox --list is not UTF-8")?;
        Ok(list
            .lines()
            .map(str::trim)
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(String::from)
            .collect())
    }
}

/// Runs the idempotent build script, which returns at once when the tree is complete.
fn build_tree(dir: &Path, root: &Path) -> Result<()> {
    let log_path = dir.join(BUILD_LOG);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let start = log.metadata()?.len();
    let mut command = Command::new("bash");
    command
        .arg(BUILD_SCRIPT)
        .arg(root)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SIGTERM rather than SIGKILL if the harness dies: the script's trap then undoes the
    // mounts debootstrap makes.
    let mut script =
        Guarded::spawn_with_death_signal("build-chroot.sh", &mut command, libc::SIGTERM)?;
    let status = script.wait_with_deadline(BUILD_TIMEOUT)?;
    let failure = match status {
        Some(status) if status.success() => return Ok(()),
        Some(status) => format!("exited with {status}"),
        None => {
            // SIGTERM first, for the same reason.
            script.terminate_group(Duration::from_secs(20));
            format!("did not finish in {BUILD_TIMEOUT:?}")
        }
    };
    bail!(
        "building the guest tree {}: {BUILD_SCRIPT} {failure}; its log {}:\n{}",
        root.display(),
        log_path.display(),
        tail_of_file(&log_path, start, 4000)
    )
}

/// The last `max` bytes written to `path` after offset `start`.
pub(crate) fn tail_of_file(path: &Path, start: u64, max: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(start.max(len.saturating_sub(max))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// The newest `boot/vmlinuz-<version>` in the tree, and its version.
fn find_kernel(root: &Path) -> Result<(PathBuf, String)> {
    let boot = resolve_in_root(root, "/boot")?;
    let mut versions: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("vmlinuz-").map(String::from)
        })
        .collect();
    // Lexical order is enough: the tree holds the one kernel linux-image-amd64 pulled in.
    versions.sort();
    let version = versions
        .pop()
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    Ok((boot.join(format!("vmlinuz-{version}")), version))
}

/// The host path of `path` as seen inside `root`: symlinks are followed with absolute targets
/// taken relative to `root` (the tree's loader, for one, is an absolute link that would
/// otherwise land on the host's own, incompatible, glibc).
pub fn resolve_in_root(root: &Path, path: &str) -> Result<PathBuf> {
    const MAX_LINKS: usize = 40;
    let mut pending: Vec<String> = components(Path::new(path));
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(resolved.join("/")).join(&part);
        let target = match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::read_link(&candidate)
                .with_context(|| format!("reading link {}", candidate.display()))?,
            Ok(_) => {
                resolved.push(part);
                continue;
            }
            Err(e) => return Err(e).with_context(|| format!("{path} in {}", root.display())),
        };
        links += 1;
        if links > MAX_LINKS {
            bail!("too many symlinks resolving {path} in {}", root.display());
        }
        if target.is_absolute() {
            resolved.clear();
        }
        pending.extend(components(&target).into_iter().rev());
    }
    Ok(root.join(resolved.join("/")))
}

/// Normal and `..` components of `path` as strings; `.` and the root are dropped.
fn components(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn absolute_links_stay_inside_root() {
        let root = std::env::temp_dir().join(format!("guest-env-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::write(root.join("usr/lib/x86_64-linux-gnu/ld.so"), b"").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
        symlink("usr/lib64", root.join("lib64")).unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/ld.so",
            root.join("usr/lib64/ld-linux.so"),
        )
        .unwrap();
        let resolved = resolve_in_root(&root, "/lib64/ld-linux.so").unwrap();
        assert_eq!(resolved, root.join("usr/lib/x86_64-linux-gnu/ld.so"));
        assert!(resolve_in_root(&root, "/missing").is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
