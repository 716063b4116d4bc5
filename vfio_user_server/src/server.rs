// Copyright 2026 The ChromiumOS Authors
// Use of this source code is governed by a BSD-style license that can be
// found in the LICENSE file.

//! The listening socket and the accept loop: one client at a time, and the next one after a
//! disconnect (a guest reboot under cloud-hypervisor is a new connection).

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use log::info;

use crate::capabilities::ServerCapabilities;
use crate::connection::Connection;
use crate::device::Device;
use crate::region::validate;
use crate::region::InvalidDescription;

/// A listening unix socket, bound to a path (removed again on drop) or inherited as an fd
/// (socket activation).
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: Option<PathBuf>,
}

impl Listener {
    /// Binds `path`. A stale socket file left by a previous server is replaced; any other file
    /// at the path is an error.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<Listener> {
        let path = path.as_ref();
        if let Ok(metadata) = std::fs::symlink_metadata(path) {
            if !metadata.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another server listens on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(Listener {
            listener: UnixListener::bind(path)?,
            path: Some(path.to_path_buf()),
        })
    }

    /// Uses an already listening socket, e.g. one passed by a service manager.
    pub fn from_fd(fd: OwnedFd) -> Listener {
        Listener {
            listener: UnixListener::from(fd),
            path: None,
        }
    }

    pub fn accept(&self) -> io::Result<UnixStream> {
        let (stream, _) = self.listener.accept()?;
        Ok(stream)
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves one device on a listener.
pub struct Server<D: Device> {
    listener: Listener,
    device: D,
    capabilities: ServerCapabilities,
    /// The longest spin on a client's socket after a message (see [`crate::AdaptivePoll`]).
    poll_max: Duration,
}

impl<D: Device> Server<D> {
    /// Checks the device's description once, so that a broken device fails here and not when a
    /// client connects.
    pub fn new(
        listener: Listener,
        device: D,
        capabilities: ServerCapabilities,
    ) -> Result<Server<D>, InvalidDescription> {
        validate(device.description())?;
        Ok(Server {
            listener,
            device,
            capabilities,
            poll_max: Duration::ZERO,
        })
    }

    /// Spins on each client's socket for up to `max` after a message before sleeping (adaptive,
    /// see [`crate::AdaptivePoll`]); zero, the default, turns polling off.
    pub fn set_polling(&mut self, max: Duration) {
        self.poll_max = max;
    }

    pub fn device(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Waits for a client and returns its connection, for callers with their own event loop.
    pub fn accept(&mut self) -> io::Result<Connection<'_, UnixStream>> {
        let stream = self.listener.accept()?;
        info!("client connected");
        let mut connection = Connection::new(stream, &mut self.device, self.capabilities.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        connection.set_polling(self.poll_max);
        Ok(connection)
    }

    /// Serves one client until it disconnects; the device is reset afterwards.
    pub fn serve_one(&mut self) -> io::Result<()> {
        let mut connection = self.accept()?;
        connection.run();
        info!("client disconnected");
        Ok(())
    }

    /// Serves clients one after another until accepting fails.
    pub fn serve_forever(&mut self) -> io::Error {
        loop {
            if let Err(e) = self.serve_one() {
                return e;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vfio-user-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn bind_replaces_only_stale_sockets() {
        let stale = temp_path("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(stale.exists(), "std leaves the socket file behind");
        let listener = Listener::bind(&stale).unwrap();
        assert!(
            Listener::bind(&stale).is_err(),
            "a live server is not replaced"
        );
        drop(listener);
        assert!(!stale.exists(), "the path is removed on drop");

        let file = temp_path("regular-file");
        std::fs::write(&file, b"not a socket").unwrap();
        assert!(Listener::bind(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
    }
}
