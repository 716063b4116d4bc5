// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! What the checks of crosvm's served devices need to run them sandboxed, as they are by
//! default: an empty root, the `--jail` options, and, when CROSVM_SECCOMP_POLICIES names crosvm's
//! policy directory, the policies as text with violations logged instead of fatal, and a watch
//! on the kernel's log for those violations.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::bail;
use anyhow::Context;
use anyhow::Result;

/// The devices crosvm serves from a sandbox, which take `--jail` and `--disable-sandbox` (fs
/// jails itself into its shared directory and takes neither).
pub const SANDBOXED_DEVICES: &[&str] = &[
    "rng", "block", "console", "net", "gpu", "snd", "input", "vsock",
];

/// The variable naming crosvm's seccomp policy directory (`jail/seccomp/x86_64` of the tree
/// CROSVM_BIN was built from): when set, the served devices run on those policies as text, with
/// `seccomp-log-failures=true`, and the checks fail on any violation the kernel logs.
pub const POLICIES_VAR: &str = "CROSVM_SECCOMP_POLICIES";

/// An empty directory for the sandbox's root (`--jail pivot-root=`): crosvm's default,
/// /var/empty, is not on every host.
pub fn empty_root() -> Result<PathBuf> {
    let root = std::env::temp_dir().join("vfio-user-empty-root");
    std::fs::create_dir_all(&root)?;
    if std::fs::read_dir(&root)?.next().is_some() {
        bail!("{} is not empty", root.display());
    }
    Ok(root)
}

/// The value of `--jail` for the checks: the empty root, and in logging mode the flattened
/// policies with failures logged.
pub fn jail_value() -> Result<String> {
    let mut value = format!("pivot-root={}", empty_root()?.display());
    if let Some(dir) = logging_policies()? {
        value.push_str(&format!(
            ",seccomp-policy-dir={},seccomp-log-failures=true",
            dir.display()
        ));
    }
    Ok(value)
}

/// The arguments that run `device` in its sandbox with an empty root of ours, if it has one.
pub fn jail_args(device: &str) -> Result<Vec<String>> {
    if !SANDBOXED_DEVICES.contains(&device) {
        return Ok(Vec::new());
    }
    Ok(vec!["--jail".to_string(), jail_value()?])
}

/// In logging mode, the directory of flattened policies (made once per process).
pub fn logging_policies() -> Result<Option<PathBuf>> {
    static FLATTENED: OnceLock<std::result::Result<Option<PathBuf>, String>> = OnceLock::new();
    FLATTENED
        .get_or_init(|| {
            let Some(source) = std::env::var_os(POLICIES_VAR) else {
                return Ok(None);
            };
            let out =
                std::env::temp_dir().join(format!("vfio-user-policies-{}", std::process::id()));
            flatten_policies(Path::new(&source), &out)
                .map(|()| Some(out))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Writes every policy of `source` to `out` as one file without includes, each syscall on one
/// line. crosvm compiles its policies at build time, where a syscall may appear in several
/// included files and the rules add up; minijail's run-time parser (`seccomp-policy-dir` with
/// `seccomp-log-failures`) follows no include outside /usr/share/policy/crosvm and refuses a
/// syscall named twice. So the rules of one syscall are merged: any unconditional `1` wins, else
/// the conditions are joined with `||`, keeping the first `return ERRNO` for what matches none.
pub fn flatten_policies(source: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    for entry in std::fs::read_dir(source)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("policy") {
            continue;
        }
        let mut rules = Vec::new();
        collect_rules(source, &path, &mut rules, 0)?;
        std::fs::write(out.join(path.file_name().unwrap()), merge_rules(&rules))?;
    }
    Ok(())
}

/// The `(syscall, rule)` lines of `path`, its includes expanded in place.
fn collect_rules(
    source: &Path,
    path: &Path,
    rules: &mut Vec<(String, String)>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        bail!("{}: includes nest too deep", path.display());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // A line ending in a backslash continues on the next.
    let text = text.replace("\\\n", " ");
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("@frequency") {
            continue;
        }
        if let Some(included) = line.strip_prefix("@include") {
            let name = Path::new(included.trim())
                .file_name()
                .with_context(|| format!("{}: bad include {line:?}", path.display()))?;
            collect_rules(source, &source.join(name), rules, depth + 1)?;
            continue;
        }
        let (syscall, rule) = line
            .split_once(':')
            .with_context(|| format!("{}: not a rule: {line:?}", path.display()))?;
        let mut rule = rule.split_whitespace().collect::<Vec<_>>().join(" ");
        for (name, value) in RUNTIME_UNKNOWN_CONSTANTS {
            rule = rule.replace(name, value);
        }
        rules.push((syscall.trim().to_string(), rule));
    }
    Ok(())
}

/// Constants crosvm's policies use that the build-time compiler knows and minijail's run-time
/// parser does not, with their values.
const RUNTIME_UNKNOWN_CONSTANTS: &[(&str, &str)] = &[
    // linux/prctl.h (Linux 6.4).
    ("PR_GET_AUXV", "0x41555856"),
];

/// One line per syscall, in the order of first appearance.
fn merge_rules(rules: &[(String, String)]) -> String {
    let mut order = Vec::new();
    let mut by_syscall: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (syscall, rule) in rules {
        by_syscall
            .entry(syscall)
            .or_insert_with(|| {
                order.push(syscall.as_str());
                Vec::new()
            })
            .push(rule);
    }
    let mut text = String::new();
    for syscall in order {
        let rules = &by_syscall[syscall];
        let merged = if rules.contains(&"1") {
            "1".to_string()
        } else {
            let mut conditions: Vec<&str> = Vec::new();
            let mut otherwise = None;
            for rule in rules {
                let (condition, action) = match rule.split_once(';') {
                    Some((c, a)) => (Some(c.trim()), Some(a.trim())),
                    None if rule.starts_with("return") => (None, Some(*rule)),
                    None => (Some(*rule), None),
                };
                if let Some(c) = condition {
                    if !conditions.contains(&c) {
                        conditions.push(c);
                    }
                }
                otherwise = otherwise.or(action);
            }
            match (conditions.is_empty(), otherwise) {
                (true, Some(action)) => action.to_string(),
                (_, Some(action)) => format!("{}; {action}", conditions.join(" || ")),
                (_, None) => conditions.join(" || "),
            }
        };
        text.push_str(&format!("{syscall}: {merged}\n"));
    }
    text
}

/// The kernel's log from the moment of `watch`: what it says of seccomp since then.
pub struct KernelLog {
    kmsg: File,
}

impl KernelLog {
    /// Starts reading the kernel's log at its end. Needs /dev/kmsg readable (root, or
    /// kernel.dmesg_restrict=0).
    pub fn watch() -> Result<KernelLog> {
        let mut kmsg = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .context("opening /dev/kmsg")?;
        kmsg.seek(SeekFrom::End(0))?;
        Ok(KernelLog { kmsg })
    }

    /// The seccomp records (audit type 1326: a syscall a filter logged or refused) since
    /// `watch` or the last call.
    pub fn seccomp_records(&mut self) -> Result<Vec<String>> {
        let mut records = Vec::new();
        // One record per read; EAGAIN at the end, EPIPE when records were overwritten
        // before they were read (then the next read goes on from the oldest left).
        let mut buffer = vec![0u8; 8192];
        loop {
            match self.kmsg.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    let record = String::from_utf8_lossy(&buffer[..n]);
                    if record.contains("type=1326") {
                        let text = record.split_once(';').map_or(&*record, |(_, t)| t);
                        records.push(text.trim().to_string());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(e).context("reading /dev/kmsg"),
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(lines: &[(&str, &str)]) -> String {
        let rules: Vec<_> = lines
            .iter()
            .map(|(s, r)| (s.to_string(), r.to_string()))
            .collect();
        merge_rules(&rules)
    }

    #[test]
    fn rules_of_one_syscall_add_up() {
        assert_eq!(
            merged(&[
                ("ioctl", "arg1 == FIONBIO"),
                ("read", "1"),
                ("ioctl", "arg1 == 0xaa00 || arg1 == 0xc018aa3f"),
                ("ioctl", "arg1 == FIONBIO"),
            ]),
            "ioctl: arg1 == FIONBIO || arg1 == 0xaa00 || arg1 == 0xc018aa3f\nread: 1\n"
        );
    }

    #[test]
    fn an_unconditional_rule_wins_and_errnos_stay_for_the_rest() {
        assert_eq!(
            merged(&[("openat", "return ENOENT"), ("openat", "1")]),
            "openat: 1\n"
        );
        assert_eq!(
            merged(&[("openat", "return ENOENT"), ("open", "return ENOENT")]),
            "openat: return ENOENT\nopen: return ENOENT\n"
        );
        assert_eq!(
            merged(&[
                ("prctl", "arg0 == 15"),
                ("prctl", "arg0 == 1; return EPERM")
            ]),
            "prctl: arg0 == 15 || arg0 == 1; return EPERM\n"
        );
    }

    #[test]
    fn includes_and_continuations_are_followed() {
        let dir = std::env::temp_dir().join(format!("flatten-test-{}", std::process::id()));
        let source = dir.join("source");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(
            source.join("common.policy"),
            "@frequency ./common.frequency\n# a comment\nread: 1\nfcntl: arg1 == 1 || \\\n  arg1 == 2\n",
        )
        .unwrap();
        std::fs::write(
            source.join("device.policy"),
            "@include /usr/share/policy/crosvm/common.policy\n\nfcntl: arg1 == 3\n",
        )
        .unwrap();
        let out = dir.join("out");
        flatten_policies(&source, &out).unwrap();
        let device = std::fs::read_to_string(out.join("device.policy")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            device,
            "read: 1\nfcntl: arg1 == 1 || arg1 == 2 || arg1 == 3\n"
        );
    }
}
