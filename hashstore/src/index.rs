//! The SQLite index: a cache of what the object tree says, plus the bookkeeping vhashify needs to
//! be fast on re-runs (content hashes of files by inode identity) and safe across crashes (a
//! journal of directories whose times must be restored). `cowfs store fsck` rebuilds it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tracing::warn;

use crate::error::{Error, Result};
use crate::key::{ContentHash, Key, Timestamp};
use crate::layout::ObjectId;

/// The object columns in `row_to_object` order, optionally followed by a clause.
macro_rules! select_objects {
    ($($tail:literal)?) => {
        concat!(
            "SELECT key, seq, content_hash, size, dev, ino, mode, uid, gid, mtime_sec, mtime_nsec,
             ignore_mtime FROM objects"
            $(, " ", $tail)?
        )
    };
}

/// Schema migrations, in order; `PRAGMA user_version` counts how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE objects (
        key BLOB NOT NULL,
        seq INTEGER NOT NULL,
        content_hash BLOB NOT NULL,
        size INTEGER NOT NULL,
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        mode INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        gid INTEGER NOT NULL,
        mtime_sec INTEGER NOT NULL,
        mtime_nsec INTEGER NOT NULL,
        ignore_mtime INTEGER NOT NULL,
        PRIMARY KEY (key, seq)
     ) WITHOUT ROWID;
     CREATE INDEX objects_by_size ON objects(size);
     CREATE INDEX objects_by_inode ON objects(dev, ino);
     CREATE TABLE file_hashes (
        dev INTEGER NOT NULL,
        ino INTEGER NOT NULL,
        size INTEGER NOT NULL,
        mtime_sec INTEGER NOT NULL,
        mtime_nsec INTEGER NOT NULL,
        ctime_sec INTEGER NOT NULL,
        ctime_nsec INTEGER NOT NULL,
        content_hash BLOB NOT NULL,
        PRIMARY KEY (dev, ino)
     ) WITHOUT ROWID;
     CREATE TABLE dir_journal (
        root BLOB NOT NULL,
        rel BLOB NOT NULL,
        atime_sec INTEGER NOT NULL,
        atime_nsec INTEGER NOT NULL,
        mtime_sec INTEGER NOT NULL,
        mtime_nsec INTEGER NOT NULL,
        PRIMARY KEY (root, rel)
     ) WITHOUT ROWID;",
    // 2: no secondary indexes on objects. Every reader that matters (vhashify's catalog, fsck,
    // verify) reads the whole table once and looks up in memory; lookups by key use the primary
    // key. The two indexes served nothing hot and were almost half of the file: each entry
    // repeats the 32-byte key, so they cost ~80 bytes per object next to the row's ~95.
    "DROP INDEX IF EXISTS objects_by_size;
     DROP INDEX IF EXISTS objects_by_inode;",
];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// One object as the index remembers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRow {
    pub id: ObjectId,
    pub content_hash: ContentHash,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    /// The key was derived without the mtime.
    pub ignore_mtime: bool,
}

impl ObjectRow {
    /// The row of object `id`: an inode with this `stat` and metadata, and this content.
    pub fn new(
        id: ObjectId,
        meta: &crate::key::FileMeta,
        st: &crate::sys::Stat,
        content_hash: ContentHash,
        ignore_mtime: bool,
    ) -> ObjectRow {
        ObjectRow {
            id,
            content_hash,
            size: meta.size,
            dev: st.st_dev,
            ino: st.st_ino,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            ignore_mtime,
        }
    }
}

/// A remembered content hash of a file, valid while (dev, ino, size, mtime, ctime) match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHashRow {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub content_hash: ContentHash,
}

/// A directory whose times vhashify must restore (journaled before its entries are touched).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirTimes {
    /// The guest root, absolute.
    pub root: PathBuf,
    /// The directory relative to the root ("" for the root itself).
    pub rel: PathBuf,
    pub atime: Timestamp,
    pub mtime: Timestamp,
}

/// An open connection to `index.db`. Each thread that writes opens its own.
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

fn blob_path(p: &Path) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes()
}

fn path_blob(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

impl Index {
    /// Opens an existing index (migrating it if its schema is older).
    pub fn open(path: &Path) -> Result<Index> {
        if !path.exists() {
            return Err(Error::IndexMissing(path.to_path_buf()));
        }
        Self::open_with(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    /// Creates the index file if needed and brings it to the current schema.
    pub fn create(path: &Path) -> Result<Index> {
        Self::open_with(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )
    }

    fn open_with(path: &Path, flags: OpenFlags) -> Result<Index> {
        let err = |e| Error::from_sqlite(path, e);
        let conn = Connection::open_with_flags(
            path,
            flags | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(err)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(err)?;
        // WAL: readers never block the writer; NORMAL: a commit survives a killed process (it is
        // in the WAL file), only a power cut may lose the last ones, and the index is a cache.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        let mut index = Index {
            conn,
            path: path.to_path_buf(),
        };
        index.migrate()?;
        Ok(index)
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::from_sqlite(&self.path, e)
    }

    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > SCHEMA_VERSION {
            return Err(Error::IndexTooNew {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Error::from_sqlite(&path, e))?;
        // Another process may have migrated while we waited for the write lock.
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| Error::from_sqlite(&path, e))?;
        let mut ran = 0;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql)
                .map_err(|e| Error::from_sqlite(&path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| Error::from_sqlite(&path, e))?;
            ran += 1;
        }
        tx.commit().map_err(|e| Error::from_sqlite(&path, e))?;
        if ran == 0 {
            return Ok(());
        }
        // A migration that dropped something leaves its pages on SQLite's free list, where they
        // still count as the store's disk usage; hand them back to the filesystem once. A failure
        // (no room for VACUUM's copy, a reader in the way) leaves a larger but valid index.
        if let Err(e) = self.compact_if_free() {
            warn!(
                "{}: not compacted after migration: {e}",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Pages SQLite keeps for reuse instead of returning them to the filesystem.
    pub fn free_pages(&self) -> Result<u64> {
        self.conn
            .pragma_query_value(None, "freelist_count", |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// Rewrites the database file densely (`VACUUM`): frees the pages on the free list and packs
    /// the B-trees, whose pages random-keyed inserts leave partly empty. It rewrites the whole
    /// file, so it is for rare moments (after a migration, after fsck rebuilt the table), not for
    /// every run.
    pub fn compact(&self) -> Result<()> {
        self.conn.execute_batch("VACUUM").map_err(|e| self.err(e))
    }

    /// [`Index::compact`] when there are free pages to return.
    pub fn compact_if_free(&self) -> Result<()> {
        if self.free_pages()? > 0 {
            self.compact()?;
        }
        Ok(())
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs SQLite's own consistency check; `Ok(())` if it says "ok".
    pub fn integrity_check(&self) -> Result<()> {
        let res: String = self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if res == "ok" {
            Ok(())
        } else {
            Err(Error::IndexCorrupt {
                path: self.path.clone(),
                detail: res,
            })
        }
    }

    /// Runs `sql` once per item, binding it with `bind`, all in one transaction.
    fn batch<T>(
        &mut self,
        sql: &str,
        items: &[T],
        bind: impl Fn(&mut rusqlite::CachedStatement<'_>, &T) -> rusqlite::Result<usize>,
    ) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let e = |e| Error::from_sqlite(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx.prepare_cached(sql).map_err(e)?;
            for item in items {
                bind(&mut st, item).map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    /// Adds or replaces object rows, all in one transaction.
    pub fn put_objects(&mut self, rows: &[ObjectRow]) -> Result<()> {
        self.batch(
            "INSERT OR REPLACE INTO objects (key, seq, content_hash, size, dev, ino, mode, uid,
             gid, mtime_sec, mtime_nsec, ignore_mtime)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            rows,
            |st, r| {
                st.execute(params![
                    &r.id.key.0[..],
                    r.id.seq,
                    &r.content_hash.0[..],
                    r.size as i64,
                    r.dev as i64,
                    r.ino as i64,
                    r.mode,
                    r.uid,
                    r.gid,
                    r.mtime.sec,
                    r.mtime.nsec,
                    r.ignore_mtime,
                ])
            },
        )
    }

    /// Forgets an object.
    pub fn remove_object(&self, id: &ObjectId) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM objects WHERE key = ?1 AND seq = ?2")
            .and_then(|mut st| st.execute(params![&id.key.0[..], id.seq]))
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Forgets every object (fsck rebuilds the table from the tree).
    pub fn clear_objects(&self) -> Result<()> {
        self.conn
            .execute_batch("DELETE FROM objects; DELETE FROM file_hashes;")
            .map_err(|e| self.err(e))
    }

    fn object_rows(&self, sql: &str, arg: impl rusqlite::Params) -> Result<Vec<ObjectRow>> {
        let mut st = self.conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(arg, row_to_object)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// The objects with this key (usually one; more after EMLINK or a collector race).
    pub fn objects_by_key(&self, key: &Key) -> Result<Vec<ObjectRow>> {
        self.object_rows(
            select_objects!("WHERE key = ?1 ORDER BY seq"),
            params![&key.0[..]],
        )
    }

    /// The objects of this size: the only ones a file of that size can be unified with. A scan
    /// of the whole table (there is no index by size, see migration 2): for occasional queries;
    /// bulk users load [`Index::all_objects`] once.
    pub fn objects_by_size(&self, size: u64) -> Result<Vec<ObjectRow>> {
        self.object_rows(select_objects!("WHERE size = ?1"), params![size as i64])
    }

    /// Every object row.
    pub fn all_objects(&self) -> Result<Vec<ObjectRow>> {
        self.object_rows(select_objects!(), [])
    }

    /// Number of object rows and of distinct contents among them.
    pub fn object_counts(&self) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT content_hash) FROM objects",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// The distinct sizes of all objects.
    pub fn object_sizes(&self) -> Result<Vec<u64>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT DISTINCT size FROM objects")
            .map_err(|e| self.err(e))?;
        let v = st
            .query_map([], |r| r.get::<_, i64>(0))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(v.into_iter().map(|s| s as u64).collect())
    }

    /// Remembered content hashes of files on the given devices.
    pub fn file_hashes(&self, devs: &[u64]) -> Result<Vec<FileHashRow>> {
        let mut out = Vec::new();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT dev, ino, size, mtime_sec, mtime_nsec, ctime_sec, ctime_nsec, content_hash
                 FROM file_hashes WHERE dev = ?1",
            )
            .map_err(|e| self.err(e))?;
        for dev in devs {
            let rows = st
                .query_map(params![*dev as i64], |r| {
                    let hash: Vec<u8> = r.get(7)?;
                    let row = FileHashRow {
                        dev: r.get::<_, i64>(0)? as u64,
                        ino: r.get::<_, i64>(1)? as u64,
                        size: r.get::<_, i64>(2)? as u64,
                        mtime: ts(r, 3)?,
                        ctime: ts(r, 5)?,
                        content_hash: ContentHash([0; 32]),
                    };
                    Ok(
                        ContentHash::from_slice(&hash).map(|content_hash| FileHashRow {
                            content_hash,
                            ..row
                        }),
                    )
                })
                .map_err(|e| self.err(e))?;
            for row in rows {
                if let Some(row) = row.map_err(|e| self.err(e))? {
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    /// Remembers content hashes of files (one transaction).
    pub fn put_file_hashes(&mut self, rows: &[FileHashRow]) -> Result<()> {
        self.batch(
            "INSERT OR REPLACE INTO file_hashes (dev, ino, size, mtime_sec, mtime_nsec,
             ctime_sec, ctime_nsec, content_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rows,
            |st, r| {
                st.execute(params![
                    r.dev as i64,
                    r.ino as i64,
                    r.size as i64,
                    r.mtime.sec,
                    r.mtime.nsec,
                    r.ctime.sec,
                    r.ctime.nsec,
                    &r.content_hash.0[..],
                ])
            },
        )
    }

    /// Journals directory times before their entries are touched (one transaction, committed
    /// before this returns). An entry that is already there keeps its (older, original) times.
    pub fn journal_dirs(&mut self, dirs: &[DirTimes]) -> Result<()> {
        self.batch(
            "INSERT OR IGNORE INTO dir_journal (root, rel, atime_sec, atime_nsec, mtime_sec,
             mtime_nsec) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            dirs,
            |st, d| {
                st.execute(params![
                    blob_path(&d.root),
                    blob_path(&d.rel),
                    d.atime.sec,
                    d.atime.nsec,
                    d.mtime.sec,
                    d.mtime.nsec
                ])
            },
        )
    }

    /// Drops journal entries once their directories' times are restored.
    pub fn clear_journal(&mut self, dirs: &[(PathBuf, PathBuf)]) -> Result<()> {
        self.batch(
            "DELETE FROM dir_journal WHERE root = ?1 AND rel = ?2",
            dirs,
            |st, (root, rel)| st.execute(params![blob_path(root), blob_path(rel)]),
        )
    }

    /// Journaled directories (left over by a run that was killed), optionally only those under
    /// guest root `root`.
    pub fn journaled_dirs(&self, root: Option<&Path>) -> Result<Vec<DirTimes>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT root, rel, atime_sec, atime_nsec, mtime_sec, mtime_nsec FROM dir_journal",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(DirTimes {
                    root: path_blob(r.get(0)?),
                    rel: path_blob(r.get(1)?),
                    atime: ts(r, 2)?,
                    mtime: ts(r, 4)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter(|d| root.is_none_or(|r| d.root == r))
            .collect())
    }

    /// A value from the small key/value settings (none yet; reserved for format changes).
    pub fn user_version(&self) -> Result<i64> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .optional()
            .map(|v| v.unwrap_or(0))
            .map_err(|e| self.err(e))
    }
}

/// A timestamp from columns `i` (seconds) and `i + 1` (nanoseconds).
fn ts(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp {
        sec: r.get(i)?,
        nsec: r.get(i + 1)?,
    })
}

fn row_to_object(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<ObjectRow>> {
    let key: Vec<u8> = r.get(0)?;
    let hash: Vec<u8> = r.get(2)?;
    let (Some(key), Some(content_hash)) = (Key::from_slice(&key), ContentHash::from_slice(&hash))
    else {
        // A malformed row is skipped: the tree is the truth and fsck rewrites the table.
        return Ok(None);
    };
    Ok(Some(ObjectRow {
        id: ObjectId {
            key,
            seq: r.get(1)?,
        },
        content_hash,
        size: r.get::<_, i64>(3)? as u64,
        dev: r.get::<_, i64>(4)? as u64,
        ino: r.get::<_, i64>(5)? as u64,
        mode: r.get(6)?,
        uid: r.get(7)?,
        gid: r.get(8)?,
        mtime: ts(r, 9)?,
        ignore_mtime: r.get(11)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u32, size: u64) -> ObjectRow {
        ObjectRow {
            id: ObjectId {
                key: Key([seq as u8; 32]),
                seq,
            },
            content_hash: ContentHash([9; 32]),
            size,
            dev: 1,
            ino: 100 + seq as u64,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime: Timestamp { sec: 1, nsec: 2 },
            ignore_mtime: false,
        }
    }

    #[test]
    fn objects_round_trip_and_queries() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let path = dir.path().join("index.db");
        assert!(matches!(Index::open(&path), Err(Error::IndexMissing(_))));
        let mut idx = Index::create(&path)?;
        assert_eq!(idx.user_version()?, SCHEMA_VERSION);
        idx.put_objects(&[row(1, 10), row(2, 10), row(3, 20)])?;
        assert_eq!(idx.objects_by_size(10)?.len(), 2);
        assert_eq!(idx.objects_by_key(&Key([3; 32]))?, vec![row(3, 20)]);
        idx.remove_object(&row(2, 10).id)?;
        assert_eq!(idx.object_counts()?, (2, 1));
        let mut sizes = idx.object_sizes()?;
        sizes.sort();
        assert_eq!(sizes, vec![10, 20]);
        drop(idx);
        // Reopening keeps the data and does not re-run migrations.
        let idx = Index::open(&path)?;
        assert_eq!(idx.all_objects()?.len(), 2);
        Ok(())
    }

    /// `n` object rows with keys in hash order (as real keys are), sizes from a small set.
    fn rows(n: u32) -> Vec<ObjectRow> {
        (0..n)
            .map(|i| ObjectRow {
                id: ObjectId {
                    key: Key(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                    seq: i % 3,
                },
                content_hash: ContentHash(*blake3::hash(&(i / 2).to_le_bytes()).as_bytes()),
                size: 100 + (i % 50) as u64,
                dev: 64768,
                ino: 1_000_000 + i as u64,
                ..row(0, 0)
            })
            .collect()
    }

    fn sorted(mut v: Vec<ObjectRow>) -> Vec<ObjectRow> {
        v.sort_by_key(|r| r.id);
        v
    }

    fn secondary_indexes(idx: &Index) -> Result<Vec<String>> {
        let mut st = idx
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL")
            .map_err(|e| idx.err(e))?;
        let names = st
            .query_map([], |r| r.get(0))
            .map_err(|e| idx.err(e))?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| idx.err(e))?;
        Ok(names)
    }

    #[test]
    fn a_new_index_is_compact() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let idx = Index::create(&dir.path().join("index.db"))?;
        assert_eq!(idx.user_version()?, SCHEMA_VERSION);
        assert!(secondary_indexes(&idx)?.is_empty());
        assert_eq!(idx.free_pages()?, 0);
        Ok(())
    }

    #[test]
    fn schema_1_is_migrated_and_compacted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let path = dir.path().join("index.db");
        let want = rows(3000);
        {
            // An index as the first release wrote it: schema 1, with its two secondary indexes.
            let conn = Connection::open(&path).map_err(|e| Error::from_sqlite(&path, e))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .and_then(|()| conn.execute_batch(MIGRATIONS[0]))
                .and_then(|()| conn.pragma_update(None, "user_version", 1))
                .map_err(|e| Error::from_sqlite(&path, e))?;
            let mut v1 = Index {
                conn,
                path: path.clone(),
            };
            assert_eq!(secondary_indexes(&v1)?.len(), 2);
            v1.put_objects(&want)?;
            v1.journal_dirs(&[DirTimes {
                root: PathBuf::from("/g1"),
                rel: PathBuf::from("etc"),
                atime: Timestamp { sec: 3, nsec: 4 },
                mtime: Timestamp { sec: 5, nsec: 6 },
            }])?;
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&path);

        let idx = Index::open(&path)?;
        assert_eq!(idx.user_version()?, SCHEMA_VERSION);
        assert!(secondary_indexes(&idx)?.is_empty());
        assert_eq!(idx.free_pages()?, 0);
        // Every row survives and every query still answers.
        assert_eq!(sorted(idx.all_objects()?), sorted(want.clone()));
        for r in want.iter().step_by(97) {
            assert_eq!(idx.objects_by_key(&r.id.key)?, vec![r.clone()]);
        }
        let of_size = |s| sorted(want.iter().filter(|r| r.size == s).cloned().collect());
        assert_eq!(sorted(idx.objects_by_size(117)?), of_size(117));
        assert_eq!(idx.object_counts()?, (3000, 1500));
        assert_eq!(idx.journaled_dirs(None)?.len(), 1);
        drop(idx);

        // The file lost the two indexes' pages; the next open does not migrate again.
        let after = size(&path);
        assert!(after * 10 < before * 6, "{before} -> {after} bytes");
        let idx = Index::open(&path)?;
        assert_eq!(idx.all_objects()?.len(), 3000);
        drop(idx);
        assert_eq!(size(&path), after);
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let path = dir.path().join("index.db");
        let idx = Index::create(&path)?;
        idx.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .map_err(|e| idx.err(e))?;
        drop(idx);
        match Index::open(&path) {
            Err(Error::IndexTooNew {
                found, supported, ..
            }) => assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
            other => panic!("expected IndexTooNew, got {:?}", other.err()),
        }
        Ok(())
    }

    #[test]
    fn journal_keeps_the_first_times() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let mut idx = Index::create(&dir.path().join("index.db"))?;
        let d = |sec| DirTimes {
            root: PathBuf::from("/g1"),
            rel: PathBuf::from("usr/bin"),
            atime: Timestamp { sec, nsec: 0 },
            mtime: Timestamp { sec, nsec: 1 },
        };
        idx.journal_dirs(&[d(5)])?;
        idx.journal_dirs(&[d(6)])?;
        assert_eq!(idx.journaled_dirs(None)?, vec![d(5)]);
        assert!(idx.journaled_dirs(Some(Path::new("/g2")))?.is_empty());
        idx.clear_journal(&[(PathBuf::from("/g1"), PathBuf::from("usr/bin"))])?;
        assert!(idx.journaled_dirs(None)?.is_empty());
        Ok(())
    }

    #[test]
    fn garbage_file_is_reported_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.db");
        std::fs::write(&path, vec![0x55u8; 8192]).expect("write");
        match Index::open(&path) {
            Err(Error::IndexCorrupt { .. }) => {}
            other => panic!("expected IndexCorrupt, got {:?}", other.err()),
        }
    }
}
