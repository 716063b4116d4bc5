#!/usr/bin/env bash
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.
#
# Builds the guest test environment: a minimal Debian trixie tree holding QEMU with
# vfio-user-pci (trixie-backports), a Linux kernel and its modules, a static busybox, and two
# Wayland compositors with headless backends for the host side of the GPU checks: weston, and
# cage on wlroots (with wlr-randr to size its output and grim for its screenshots).
#
#     build-chroot.sh DIR
#
# Idempotent and safe to run concurrently: a lock serialises builders, the tree is built in
# DIR.tmp and renamed to DIR only when complete, and a stamp names the recipe it was built
# with, so a half-built or outdated tree is rebuilt. Nothing is mounted by this script; the
# mounts debootstrap makes for itself are undone on any exit.
#
# The mirror is the first Debian mirror named by the host's apt sources, or
# $VFIO_USER_GUEST_MIRROR.
set -euo pipefail

# Bump when the recipe below changes so existing trees are rebuilt.
readonly RECIPE="trixie minbase; qemu-system-x86 from trixie-backports; linux-image-amd64 busybox-static weston cage wlr-randr grim; v3"
readonly SUITE=trixie

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$(realpath -m "$1")
tmp="${dir}.tmp"
stamp="${dir}/.vfio-user-guest-stamp"

log() { printf 'build-chroot: %s\n' "$*" >&2; }

is_built() {
    [[ -f "${stamp}" && "$(cat "${stamp}")" == "${RECIPE}" ]]
}

# Unmounts everything at or below $1, deepest first, so that removing the tree can never reach
# into the host's /proc, /sys or /dev.
unmount_below() {
    local root=$1 mnt
    # Field 5 of mountinfo is the mount point; octal escapes (spaces) are left alone because our
    # paths have none that matter here and a miss is caught by rm's --one-file-system.
    awk -v root="${root}" '$5 == root || index($5, root "/") == 1 { print $5 }' \
        /proc/self/mountinfo | sort -r | while read -r mnt; do
        umount "${mnt}" 2>/dev/null || umount -l "${mnt}" || true
    done
}

remove_tree() {
    [[ -e "$1" ]] || return 0
    unmount_below "$1"
    rm -rf --one-file-system "$1"
}

# The first `deb` URI of the host's apt sources that is a plain Debian archive (not the
# security archive, which has no trixie-backports).
host_mirror() {
    {
        cat /etc/apt/sources.list 2>/dev/null | awk '$1 == "deb" {
            for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break }
        }' || true
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -f "$f" ]] || continue
            # deb822 stanzas: remember the stanza's Types, print its URIs if they include deb.
            awk 'BEGIN { deb = 0 }
                /^[[:space:]]*$/ { deb = 0; uris = ""; next }
                /^Types:/ { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
                /^URIs:/ { uris = $0; sub(/^URIs:[[:space:]]*/, "", uris) }
                deb && uris != "" { n = split(uris, u, /[[:space:]]+/); for (i = 1; i <= n; i++) print u[i]; uris = "" }' "$f"
        done
        for f in /etc/apt/sources.list.d/*.list; do
            [[ -f "$f" ]] || continue
            awk '$1 == "deb" {
                for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break }
            }' "$f"
        done
    } | grep -E '^https?://' | grep -v -- '-security' | grep -E '/debian/?$' | head -n 1
}

ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    log "installing debootstrap on the host"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
}

# Runs a command inside the tree. No /proc or /dev mount is needed for apt and dpkg here:
# debootstrap populates /dev with the basic nodes, and the kernel's postinst hook that would
# build an initrd (the only step that wants /proc) is skipped with INITRD=No.
in_tree() {
    chroot "${tmp}" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive INITRD=No LANG=C.UTF-8 "$@"
}

build() {
    local mirror=${VFIO_USER_GUEST_MIRROR:-$(host_mirror || true)}
    if [[ -z "${mirror}" ]]; then
        log "no Debian mirror in the host's apt sources; set VFIO_USER_GUEST_MIRROR"
        exit 1
    fi
    log "building ${dir} from ${mirror}"
    ensure_debootstrap

    remove_tree "${tmp}"
    debootstrap --variant=minbase "${SUITE}" "${tmp}" "${mirror}"
    unmount_below "${tmp}"

    cat >"${tmp}/etc/apt/sources.list" <<EOF
deb ${mirror} ${SUITE} main
deb ${mirror} ${SUITE}-backports main
EOF
    # Keep the tree small: no docs, man pages or translations.
    cat >"${tmp}/etc/dpkg/dpkg.cfg.d/01-nodoc" <<EOF
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/locale/*
EOF
    in_tree apt-get update -q
    # vfio-user-pci first appears in QEMU 10.1; trixie itself has 10.0.
    in_tree apt-get install -y -q --no-install-recommends -t "${SUITE}-backports" qemu-system-x86
    in_tree apt-get install -y -q --no-install-recommends linux-image-amd64 busybox-static
    in_tree apt-get install -y -q --no-install-recommends weston
    # A second compositor, on wlroots, so the relay is not tuned to weston's ways. cage is a
    # kiosk like weston's kiosk shell; its headless output is sized with wlr-randr (through
    # wlr-output-management) and captured with grim (through wlr-screencopy).
    in_tree apt-get install -y -q --no-install-recommends cage wlr-randr grim
    in_tree apt-get clean
    unmount_below "${tmp}"

    echo "${RECIPE}" >"${tmp}/.vfio-user-guest-stamp"
    remove_tree "${dir}"
    mv "${tmp}" "${dir}"
    log "done"
}

mkdir -p "$(dirname "${dir}")"
# Concurrent test processes share one tree: the first builds it, the others wait here.
exec 9>"${dir}.lock"
flock 9

if is_built; then
    exit 0
fi
trap 'unmount_below "${tmp}"' EXIT
trap 'exit 1' INT TERM HUP
build
