//! The control socket through which `unionctl` changes a mounted union's branches.
//!
//! One Unix socket per mount, at `$COWFS_RUN_DIR/<hash of the mountpoint>.sock` (default
//! `/run/cowfs`), so a client finds it from the mountpoint alone. Only root may talk to it
//! (checked with `SO_PEERCRED`, and the socket file is 0600).
//!
//! Protocol, version 1: one JSON object per line each way.
//! - requests: `{"version":1,"command":"list"}`,
//!   `{"version":1,"command":"add","path":"/b","mode":"ro","position":{"before":"/a"}}`
//!   (`position`: `"first"` (default), `"last"`, `{"before":P}` or `{"after":P}`),
//!   `{"version":1,"command":"remove","path":"/b"}`, `{"version":1,"command":"stats"}`;
//! - replies: `{"version":1,"ok":true,"mountpoint":"/mnt","branches":[{"path":"/a","mode":"rw"},…]}`
//!   (`stats` adds `"stats":{"lookup":12,…}`: requests received per kind, fast-path events,
//!   known nodes and open handles) or `{"version":1,"ok":false,"error":"…"}`.
//!
//! A malformed line gets an error reply and the connection stays usable.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::branch::BranchMode;
use crate::unionfs::{BranchInfo, Position, UnionFs};

pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line accepted (a path is at most 4 KiB; this leaves room for JSON).
const MAX_LINE: u64 = 64 * 1024;

/// Where a new branch goes, as sent over the socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionSpec {
    #[default]
    First,
    Last,
    Before(PathBuf),
    After(PathBuf),
}

impl From<PositionSpec> for Position {
    fn from(p: PositionSpec) -> Position {
        match p {
            PositionSpec::First => Position::First,
            PositionSpec::Last => Position::Last,
            PositionSpec::Before(p) => Position::Before(p),
            PositionSpec::After(p) => Position::After(p),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    List,
    Add {
        path: PathBuf,
        mode: BranchMode,
        #[serde(default)]
        position: PositionSpec,
    },
    Remove {
        path: PathBuf,
    },
    /// Request counters (see `stats.rs`).
    Stats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub command: Command,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<BranchInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<BTreeMap<String, u64>>,
}

impl Response {
    fn error(msg: impl Into<String>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: false,
            error: Some(msg.into()),
            mountpoint: None,
            branches: None,
            stats: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no cowfs daemon serves {mountpoint} (no control socket at {socket}); is it mounted with cowfs?"
    )]
    NotServed {
        mountpoint: PathBuf,
        socket: PathBuf,
    },
    #[error("cannot resolve mountpoint {path}: {source}")]
    Mountpoint { path: PathBuf, source: io::Error },
    #[error("control socket {socket}: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("the daemon sent something unreadable: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

/// Directory of the control sockets.
pub fn run_dir() -> PathBuf {
    std::env::var_os("COWFS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/cowfs"))
}

/// The control socket of the union mounted at `mountpoint` (canonical path).
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let hash = blake3::hash(mountpoint.as_os_str().as_encoded_bytes());
    run_dir().join(format!("{}.sock", &hash.to_hex()[..24]))
}

/// The server side: a thread answering requests until stopped.
pub struct ControlServer {
    path: PathBuf,
    /// (dev, ino) of our socket file, to never remove a successor's.
    identity: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Binds the socket for `mountpoint` (replacing a stale one) and starts serving `fs`.
    pub fn start(fs: Arc<UnionFs>, mountpoint: &Path) -> io::Result<ControlServer> {
        let path = socket_path(mountpoint);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
        // The caller made sure nothing is mounted at `mountpoint`, so whoever owned this socket
        // is gone or on its way out (a daemon finishing after `umount`): take the name over.
        // That daemon removes the name only while it still points at its own socket.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let identity = std::fs::symlink_metadata(&path).map(|m| (m.dev(), m.ino()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mnt = mountpoint.to_path_buf();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("cowfs-control".into())
                .spawn(move || serve(listener, fs, mnt, stop))?
        };
        Ok(ControlServer {
            path,
            identity,
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only our own socket: a successor may have taken the name over meanwhile.
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

fn serve(listener: UnixListener, fs: Arc<UnionFs>, mountpoint: PathBuf, stop: Arc<AtomicBool>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    while !stop.load(Ordering::SeqCst) {
        // Wake up now and then to notice `stop` (the socket name may belong to a successor).
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "control socket poll failed");
                break;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                // One thread per client: an idle client must not hold the others up.
                let (fs, mountpoint) = (fs.clone(), mountpoint.clone());
                let spawned = std::thread::Builder::new()
                    .name("cowfs-control-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle(stream, &fs, &mountpoint) {
                            tracing::debug!(error = %e, "control connection ended");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot serve a control connection");
                }
            }
            Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
        }
    }
}

fn peer_is_root(stream: &UnixStream) -> bool {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map(|c| c.uid() == 0)
        .unwrap_or(false)
}

fn handle(stream: UnixStream, fs: &UnionFs, mountpoint: &Path) -> io::Result<()> {
    // A client that stalls must not block the next one for long.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    if !peer_is_root(&stream) {
        return send(
            &mut writer,
            &Response::error("permission denied: only root may change a union's branches"),
        );
    }
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = Vec::new();
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if !line.ends_with(b"\n") && n as u64 == MAX_LINE {
            return send(&mut writer, &Response::error("request too long"));
        }
        send(&mut writer, &respond(fs, mountpoint, &line))?;
    }
}

/// The answer to one request line (any bytes: a malformed one gets an error reply). Public so
/// that the protocol can be fuzzed without a socket.
pub fn respond(fs: &UnionFs, mountpoint: &Path, line: &[u8]) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Err(e) => Response::error(format!("malformed request: {e}")),
        Ok(req) if req.version != PROTOCOL_VERSION => Response::error(format!(
            "protocol version {} not supported (this daemon speaks {PROTOCOL_VERSION})",
            req.version
        )),
        Ok(req) => execute(fs, mountpoint, req.command),
    }
}

fn execute(fs: &UnionFs, mountpoint: &Path, command: Command) -> Response {
    let mut stats = None;
    let result = match command {
        Command::List => Ok(()),
        Command::Stats => {
            let mut s = fs.stats().snapshot();
            let (nodes, files, dirs) = fs.counts();
            s.insert("nodes".into(), nodes as u64);
            s.insert("open_files".into(), files as u64);
            s.insert("open_dirs".into(), dirs as u64);
            stats = Some(s);
            Ok(())
        }
        Command::Add {
            path,
            mode,
            position,
        } => fs.add_branch(&path, mode, position.into()),
        Command::Remove { path } => fs.remove_branch(&path),
    };
    // The client's next look at the mount must see the new view.
    fs.sync_invalidations(Duration::from_secs(10));
    match result {
        Ok(()) => Response {
            version: PROTOCOL_VERSION,
            ok: true,
            error: None,
            mountpoint: Some(mountpoint.to_path_buf()),
            branches: Some(fs.branches()),
            stats,
        },
        Err(e) => Response::error(e.to_string()),
    }
}

fn send(w: &mut impl Write, response: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// A connection to the daemon of a mounted union.
pub struct Client {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the daemon serving `mountpoint`.
    pub fn connect(mountpoint: &Path) -> Result<Client, ControlError> {
        let canonical = mountpoint
            .canonicalize()
            .map_err(|source| ControlError::Mountpoint {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        let socket = socket_path(&canonical);
        let stream = UnixStream::connect(&socket).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ControlError::NotServed {
                mountpoint: canonical.clone(),
                socket: socket.clone(),
            },
            _ => ControlError::Io {
                socket: socket.clone(),
                source,
            },
        })?;
        let io_err = |source| ControlError::Io {
            socket: socket.clone(),
            source,
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io_err)?;
        let writer = stream.try_clone().map_err(io_err)?;
        Ok(Client {
            socket,
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one command and returns the daemon's successful reply.
    pub fn call(&mut self, command: Command) -> Result<Response, ControlError> {
        let io_err = |source| ControlError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&Request {
            version: PROTOCOL_VERSION,
            command,
        })
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).map_err(io_err)?;
        let mut reply = String::new();
        self.reader.read_line(&mut reply).map_err(io_err)?;
        if reply.is_empty() {
            return Err(ControlError::Protocol(
                "the daemon closed the connection".into(),
            ));
        }
        let response: Response =
            serde_json::from_str(&reply).map_err(|e| ControlError::Protocol(e.to_string()))?;
        if !response.ok {
            return Err(ControlError::Refused(
                response
                    .error
                    .unwrap_or_else(|| "refused without a reason".into()),
            ));
        }
        Ok(response)
    }

    pub fn list(&mut self) -> Result<Vec<BranchInfo>, ControlError> {
        Ok(self.call(Command::List)?.branches.unwrap_or_default())
    }

    pub fn add(
        &mut self,
        path: &Path,
        mode: BranchMode,
        position: PositionSpec,
    ) -> Result<Vec<BranchInfo>, ControlError> {
        Ok(self
            .call(Command::Add {
                path: path.to_path_buf(),
                mode,
                position,
            })?
            .branches
            .unwrap_or_default())
    }

    /// The daemon's request counters (see [`Command::Stats`]).
    pub fn stats(&mut self) -> Result<BTreeMap<String, u64>, ControlError> {
        self.call(Command::Stats)?
            .stats
            .ok_or_else(|| ControlError::Protocol("the daemon sent no counters".into()))
    }

    pub fn remove(&mut self, path: &Path) -> Result<Vec<BranchInfo>, ControlError> {
        Ok(self
            .call(Command::Remove {
                path: path.to_path_buf(),
            })?
            .branches
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_round_trips() {
        let req = Request {
            version: 1,
            command: Command::Add {
                path: "/b".into(),
                mode: BranchMode::Ro,
                position: PositionSpec::Before("/a".into()),
            },
        };
        let json = serde_json::to_string(&req).expect("json");
        assert_eq!(
            json,
            r#"{"version":1,"command":"add","path":"/b","mode":"ro","position":{"before":"/a"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).expect("parse"), req);
        let list: Request =
            serde_json::from_str(r#"{"version":1,"command":"list"}"#).expect("parse");
        assert_eq!(list.command, Command::List);
        let add: Request =
            serde_json::from_str(r#"{"version":1,"command":"add","path":"/x","mode":"rw"}"#)
                .expect("parse");
        assert!(matches!(
            add.command,
            Command::Add {
                position: PositionSpec::First,
                ..
            }
        ));
        assert!(serde_json::from_str::<Request>(r#"{"version":1,"command":"format"}"#).is_err());
    }

    #[test]
    fn server_answers_lists_and_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // SAFETY: tests in this crate that read COWFS_RUN_DIR all set it to a private dir first.
        unsafe { std::env::set_var("COWFS_RUN_DIR", tmp.path().join("run")) };
        let branch = tmp.path().join("b");
        std::fs::create_dir(&branch).expect("mkdir");
        // No kernel to tell: without a receiver, branch changes do not wait for one.
        let (fs, _) = UnionFs::new(
            vec![crate::branch::Branch::open(&branch, BranchMode::Ro, None).expect("branch")],
            crate::unionfs::FsConfig::default(),
        );
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir");
        let mnt = mnt.canonicalize().expect("canonical");
        let server = ControlServer::start(fs, &mnt).expect("start");
        let mut client = Client::connect(&mnt).expect("connect");
        let list = client.list().expect("list");
        assert_eq!(list.len(), 1);
        let err = client.remove(&branch).expect_err("last branch");
        assert!(err.to_string().contains("only branch"), "{err}");
        // Garbage gets an error and the connection keeps working.
        let mut raw = UnixStream::connect(server.path()).expect("connect");
        raw.write_all(b"{not json\n").expect("write");
        let mut reply = String::new();
        BufReader::new(raw.try_clone().expect("clone"))
            .read_line(&mut reply)
            .expect("read");
        assert!(reply.contains("malformed"), "{reply}");
        assert!(client.list().is_ok());
        server.stop();
        assert!(matches!(
            Client::connect(&mnt),
            Err(ControlError::NotServed { .. })
        ));
    }
}
