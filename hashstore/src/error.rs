//! Typed errors of the hash store. Every variant names the path involved so that a CLI can print
//! it as is; the ones a user can fix say how.

use std::io;
use std::path::{Path, PathBuf};

/// Result type of the hash store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in the hash store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory has no `format` file: it was never initialised as a store.
    #[error("{} is not a cowfs store (no format file); create one with `cowfs store init`", .0.display())]
    NotAStore(PathBuf),
    /// The store was written by a different (newer or unknown) on-disk format.
    #[error("{}: store format {found:?}, this cowfs understands {expected:?}", path.display())]
    FormatVersion {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// Another process holds the store lock in a conflicting mode (fsck holds it exclusively).
    #[error("store {} is locked by another process (a running `cowfs store fsck`?); try again when it has finished", .0.display())]
    Locked(PathBuf),
    /// `index.db` does not exist.
    #[error("index {} is missing; rebuild it from the objects with `cowfs store fsck`", .0.display())]
    IndexMissing(PathBuf),
    /// SQLite says the index file is damaged or is not a database.
    #[error("index {} is corrupt ({detail}); rebuild it with `cowfs store fsck`", path.display())]
    IndexCorrupt { path: PathBuf, detail: String },
    /// Another process held a write transaction on the index for longer than the busy timeout.
    #[error("index {} stayed locked by another process for too long", .0.display())]
    IndexBusy(PathBuf),
    /// The index has a schema version newer than this program knows.
    #[error("index {} has schema version {found}; this cowfs understands up to {supported}", path.display())]
    IndexTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// Any other SQLite failure.
    #[error("index {}: {source}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A file lives on another filesystem than the store: hard links cannot reach it.
    #[error("{} is on another filesystem than the store {}: hard links cannot cross filesystems (use copy mode)", path.display(), store.display())]
    CrossDevice { path: PathBuf, store: PathBuf },
    /// The filesystem refused another hard link to `path` (its link count is at the maximum).
    #[error("{}: too many links", .0.display())]
    TooManyLinks(PathBuf),
    /// The file changed (size, mtime, ctime or inode) while it was being read.
    #[error("{} changed while it was being read", .0.display())]
    Changed(PathBuf),
    /// The file is open for writing by some process, so it cannot become an immutable object.
    #[error("{} is open for writing by another process", .0.display())]
    Busy(PathBuf),
    /// An object's content or metadata no longer matches its key.
    #[error("object {} does not match its key", .0.display())]
    Corrupt(PathBuf),
    /// A line of an exclude list could not be parsed.
    #[error("{}:{line}: {message}", file.display())]
    ExcludeSyntax {
        file: PathBuf,
        line: usize,
        message: String,
    },
    /// The caller asked for something that cannot be done (bad arguments).
    #[error("{0}")]
    InvalidInput(String),
}

impl Error {
    /// The I/O error behind this error, if it is one (to look at its errno).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The raw errno of an I/O error, if any.
    pub fn errno(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }

    /// Maps a SQLite error on the index at `path` to the most helpful variant.
    pub(crate) fn from_sqlite(path: &Path, source: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode;
        if let rusqlite::Error::SqliteFailure(ref e, ref msg) = source {
            match e.code {
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                    return Error::IndexCorrupt {
                        path: path.to_path_buf(),
                        detail: msg.clone().unwrap_or_else(|| e.to_string()),
                    };
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                    return Error::IndexBusy(path.to_path_buf());
                }
                _ => {}
            }
        }
        Error::Index {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Attaches a path to an `io::Error` (or a nix `Errno`).
pub(crate) trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        })
    }
}

impl<T> IoContext<T> for Result<T, nix::errno::Errno> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|errno| Error::Io {
            path: path.as_ref().to_path_buf(),
            source: io::Error::from(errno),
        })
    }
}
