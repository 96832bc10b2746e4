//! Readiness for systemd (`Type=notify`, `sd_notify(3)`): one datagram to the socket named by
//! `NOTIFY_SOCKET` — a path, or `@name` for an abstract socket — sent when the listener is
//! bound and the database open (`READY=1`), and when the drain begins (`STOPPING=1`). Without
//! `NOTIFY_SOCKET` (not under systemd) nothing is sent.
//!
//! The protocol is one `sendto` of `KEY=value` lines, so it is written here with std's
//! `UnixDatagram` rather than taken from a crate. The socket is non-blocking: a full receive
//! queue on systemd's side costs a warning, never a stalled runtime thread.

use std::io;

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=…` lines) to systemd when it listens.
/// Returns whether it was sent (false: no `NOTIFY_SOCKET`); a failure is logged, since the
/// server serves either way and systemd reports a readiness that never came.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET).filter(|s| !s.is_empty()) else {
        return false;
    };
    match send(&socket, state) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, socket = %socket.to_string_lossy(), "could not notify systemd");
            false
        }
    }
}

#[cfg(unix)]
fn send(socket: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let datagram = UnixDatagram::unbound()?;
    datagram.set_nonblocking(true)?;
    let sent = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => send_abstract(&datagram, name, state)?,
        None => datagram.send_to(state.as_bytes(), socket)?,
    };
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::other("the notification was cut short"))
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(
    datagram: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    state: &str,
) -> io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    datagram.send_to_addr(state.as_bytes(), &address)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn send_abstract(_: &std::os::unix::net::UnixDatagram, _: &[u8], _: &str) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

#[cfg(not(unix))]
fn send(_: &std::ffi::OsStr, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "systemd notification needs Unix sockets",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    #[test]
    fn a_datagram_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\n").unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\n");

        let name = format!("ccflare-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        send(format!("@{name}").as_ref(), "STOPPING=1").unwrap();
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1");
    }

    #[test]
    fn no_one_listening_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(send(dir.path().join("absent").as_os_str(), "READY=1").is_err());
    }
}
