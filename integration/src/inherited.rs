// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The listening socket a service manager hands a server as `--fd N`.

use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;

use anyhow::bail;
use anyhow::Context;
use vfio_user_server::Listener;

/// Takes `--fd N`'s value as this process's listening socket, after checking that N is an open
/// unix stream socket that listens: a wrong number is an error here, not a server that reports
/// itself listening and then aborts on an fd it never had.
pub fn inherited_listener(value: &str) -> anyhow::Result<Listener> {
    let fd: RawFd = value.parse().context("--fd takes a number")?;
    if fd < 3 {
        bail!("--fd {fd} is a standard stream");
    }
    // SAFETY: F_GETFD reads the descriptor flags of `fd` and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error()).context(format!("--fd {fd} is not open"));
    }
    for (option, want, what) in [
        (libc::SO_DOMAIN, libc::AF_UNIX, "a unix socket"),
        (libc::SO_TYPE, libc::SOCK_STREAM, "a stream socket"),
        (libc::SO_ACCEPTCONN, 1, "a listening socket"),
    ] {
        let got = socket_option(fd, option).with_context(|| format!("--fd {fd} is not {what}"))?;
        if got != want {
            bail!("--fd {fd} is not {what}");
        }
    }
    // SAFETY: `fd` is open (checked above) and, by the `--fd` convention, handed to this process
    // for the server alone: nothing else in it owns or closes that descriptor.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Clients this server spawns must not inherit the listener.
    // SAFETY: F_SETFD on a descriptor this function now owns; no memory is passed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error()).context("setting close-on-exec");
    }
    Ok(Listener::from_fd(owned))
}

fn socket_option(fd: RawFd, option: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes getsockopt is told; it writes at
    // most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixListener;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn message(result: anyhow::Result<Listener>) -> String {
        match result {
            Ok(_) => panic!("taken, not refused"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn refuses_what_is_not_a_listening_unix_socket() {
        assert!(message(inherited_listener("x")).contains("takes a number"));
        assert!(message(inherited_listener("2")).contains("standard stream"));
        let (a, _b) = UnixStream::pair().unwrap();
        let connected = a.as_raw_fd().to_string();
        assert!(message(inherited_listener(&connected)).contains("not a listening socket"));
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        assert!(message(inherited_listener(&file.as_raw_fd().to_string()))
            .contains("not a unix socket"));
    }

    #[test]
    fn takes_a_listening_unix_socket() {
        let dir = std::env::temp_dir().join(format!("inherited-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.sock");
        let _ = std::fs::remove_file(&path);
        let fd = UnixListener::bind(&path).unwrap().into_raw_fd();
        let listener = inherited_listener(&fd.to_string()).expect("a listening socket");
        assert_eq!(listener.as_raw_fd(), fd);
        let connect = std::thread::spawn(move || UnixStream::connect(&path).unwrap());
        listener.accept().unwrap();
        connect.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
