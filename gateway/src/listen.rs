//! Where the fronts accept connections: a TCP address or a Unix socket (`unix:/path`), bound by
//! root before privileges are dropped, or inherited from systemd (socket activation).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use crate::cgi_env::Connection;

/// A connection accepted by either kind of listener.
pub type Stream = Either<TcpStream, UnixStream>;

/// A `--listen` or `--fastcgi` value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// An absolute path for a Unix stream socket.
    Unix(PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            let path = Path::new(path);
            if !path.is_absolute() || path.file_name().is_none() {
                return Err(format!(
                    "`{text}`: a Unix socket needs an absolute path, unix:/run/x.sock"
                ));
            }
            return Ok(ListenAddr::Unix(path.to_owned()));
        }
        text.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!("`{text}` is neither HOST:PORT (127.0.0.1:8080, [::1]:8080) nor unix:/path")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(address) => write!(f, "{address}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Who may connect to a Unix socket we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SocketAccess {
    /// Permission bits of the socket file (only write permission matters for connecting).
    pub mode: u32,
    /// Group of the socket file (say, nginx's), or root's.
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    /// Owner and group may connect, as php-fpm's `listen.mode` default.
    fn default() -> SocketAccess {
        SocketAccess {
            mode: 0o660,
            group: None,
        }
    }
}

/// A bound, listening socket, not yet registered with a runtime: it crosses the fork into the
/// front as it is.
#[derive(Debug)]
pub enum Bound {
    Tcp(std::net::TcpListener),
    /// `path` is `None` for an inherited socket: whoever created its file removes it.
    Unix(UnixListener, Option<PathBuf>),
}

impl Bound {
    /// Binds `address`. A Unix socket file is created with `access`; a stale one (nobody
    /// accepting on it) is replaced, a live one or any other file is an error.
    pub fn bind(address: &ListenAddr, access: SocketAccess) -> Result<Bound, String> {
        match address {
            ListenAddr::Tcp(socket) => std::net::TcpListener::bind(socket)
                .map(Bound::Tcp)
                .map_err(|error| format!("cannot listen on {socket}: {error}")),
            ListenAddr::Unix(path) => bind_unix(path, access)
                .map(|listener| Bound::Unix(listener, Some(path.clone())))
                .map_err(|error| format!("cannot listen on unix:{}: {error}", path.display())),
        }
    }

    /// Takes over a listening socket inherited as descriptor `fd` (systemd's LISTEN_FDS).
    pub fn inherit(fd: OwnedFd) -> Result<Bound, String> {
        use nix::sys::socket::{
            getsockname, getsockopt, sockopt, AddressFamily, SockaddrLike, SockaddrStorage,
        };
        let raw = fd.as_raw_fd();
        let listening = getsockopt(&fd, sockopt::AcceptConn)
            .map_err(|error| format!("inherited descriptor {raw}: not a socket: {error}"))?;
        if !listening {
            return Err(format!(
                "inherited descriptor {raw}: socket is not listening"
            ));
        }
        let family = getsockname::<SockaddrStorage>(fd.as_fd().as_raw_fd())
            .ok()
            .and_then(|address| address.family());
        match family {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => {
                Ok(Bound::Tcp(std::net::TcpListener::from(fd)))
            }
            Some(AddressFamily::Unix) => Ok(Bound::Unix(UnixListener::from(fd), None)),
            other => Err(format!(
                "inherited descriptor {raw}: a socket of family {other:?}, not TCP or Unix"
            )),
        }
    }

    /// The address as `--listen` would name it.
    pub fn address(&self) -> String {
        match self {
            Bound::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "tcp:?".to_owned(), |address| address.to_string()),
            Bound::Unix(listener, path) => {
                let named = listener
                    .local_addr()
                    .ok()
                    .and_then(|address| address.as_pathname().map(|path| path.to_owned()));
                match named.or_else(|| path.clone()) {
                    Some(path) => format!("unix:{}", path.display()),
                    None => "unix:(unnamed)".to_owned(),
                }
            }
        }
    }

    /// The socket file this process created, to remove when it stops.
    pub fn created_file(&self) -> Option<&Path> {
        match self {
            Bound::Unix(_, path) => path.as_deref(),
            Bound::Tcp(_) => None,
        }
    }

    /// Registers with the current tokio runtime.
    pub fn into_listener(self) -> std::io::Result<Listener> {
        match self {
            Bound::Tcp(listener) => {
                listener.set_nonblocking(true)?;
                Ok(Listener::Tcp(tokio::net::TcpListener::from_std(listener)?))
            }
            Bound::Unix(listener, _) => {
                listener.set_nonblocking(true)?;
                Ok(Listener::Unix(tokio::net::UnixListener::from_std(
                    listener,
                )?))
            }
        }
    }
}

fn bind_unix(path: &Path, access: SocketAccess) -> std::io::Result<UnixListener> {
    use std::io::{Error, ErrorKind};
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            // Left by a gateway that was killed, unless one is still accepting on it.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::new(
                    ErrorKind::AddrInUse,
                    "another process is accepting on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(path)?;
    // Set the access before anyone can be told the socket exists; until then, the umask's.
    let result = (|| {
        if let Some(group) = access.group {
            nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(group)))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    Ok(listener)
}

/// A listener registered with the runtime.
#[derive(Debug)]
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Accepts one connection, with what the CGI environment needs to know about it.
    pub async fn accept(&self) -> std::io::Result<(Stream, Connection)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, remote) = listener.accept().await?;
                let local = stream.local_addr()?;
                let _ = stream.set_nodelay(true);
                Ok((Either::Left(stream), Connection::Tcp { local, remote }))
            }
            Listener::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok((Either::Right(stream), Connection::Unix))
            }
        }
    }
}

/// Descriptors systemd passed us (sd_listen_fds(3)): `LISTEN_PID` is ours, `LISTEN_FDS` of
/// them start at 3, `LISTEN_FDNAMES` names them. Takes them (the variables are removed, so no
/// child inherits the claim) and returns them with their names.
pub fn take_inherited() -> Result<Vec<(String, OwnedFd)>, String> {
    const FIRST: i32 = 3;
    let Some(pid) = std::env::var_os("LISTEN_PID") else {
        return Ok(Vec::new());
    };
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    // Called before any thread exists, so changing the environment races with nothing.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    if pid.to_str() != Some(std::process::id().to_string().as_str()) {
        // Meant for another process (our parent, say): not ours to use.
        return Ok(Vec::new());
    }
    let count: i32 = count
        .parse()
        .map_err(|_| format!("LISTEN_FDS={count:?} is not a number"))?;
    if !(1..=16).contains(&count) {
        return Err(format!("LISTEN_FDS={count}: expected 1 to 16 sockets"));
    }
    let mut names = names.split(':');
    let mut inherited = Vec::new();
    for fd in FIRST..FIRST + count {
        // SAFETY: F_GETFD only reads the descriptor's flags; on a closed one it fails, EBADF.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(format!(
                "LISTEN_FDS={count}, but descriptor {fd} is not open"
            ));
        }
        // SAFETY: systemd's protocol hands descriptors 3..3+LISTEN_FDS to this process, we
        // checked it is open, and nothing else in the process owns it: we take it once, here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Keep it from leaking into workers.
        nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|error| format!("descriptor {fd}: {error}"))?;
        let name = names.next().unwrap_or("").to_owned();
        inherited.push((name, owned));
    }
    Ok(inherited)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for text in ["127.0.0.1:8080", "[::1]:9000", "unix:/run/jailgate.sock"] {
            assert_eq!(text.parse::<ListenAddr>().unwrap().to_string(), text);
        }
        for bad in [
            "unix:relative.sock",
            "unix:",
            "unix:/",
            "localhost",
            "8080",
            "",
        ] {
            let error = bad.parse::<ListenAddr>().unwrap_err();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn unix_socket_gets_its_mode_replaces_a_stale_file_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let address = ListenAddr::Unix(path.clone());
        let access = SocketAccess {
            mode: 0o600,
            group: None,
        };
        let first = Bound::bind(&address, access).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(first.address(), format!("unix:{}", path.display()));
        let live = Bound::bind(&address, access).unwrap_err();
        assert!(live.contains("another process is accepting"), "{live}");
        drop(first);
        // The file stays behind when the listener is closed: a stale socket, replaced.
        assert!(path.exists());
        let second = Bound::bind(&address, SocketAccess::default()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert_eq!(second.created_file(), Some(path.as_path()));
        drop(second);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        let blocked = Bound::bind(&address, access).unwrap_err();
        assert!(blocked.contains("not a socket"), "{blocked}");
    }

    #[test]
    fn an_inherited_listening_socket_is_recognised() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        let bound = Bound::inherit(OwnedFd::from(tcp)).unwrap();
        assert_eq!(bound.address(), format!("127.0.0.1:{port}"));
        let dir = tempfile::tempdir().unwrap();
        let unix = UnixListener::bind(dir.path().join("s")).unwrap();
        let bound = Bound::inherit(OwnedFd::from(unix)).unwrap();
        assert!(matches!(bound, Bound::Unix(_, None)));
        assert_eq!(bound.created_file(), None);
        let file = std::fs::File::open("/dev/null").unwrap();
        let error = Bound::inherit(OwnedFd::from(file)).unwrap_err();
        assert!(error.contains("not a socket"), "{error}");
    }
}
