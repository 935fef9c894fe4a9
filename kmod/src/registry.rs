//! The context registry: one SQLite database under the state directory.
//!
//! Every change is one transaction, so a refused `create` (duplicate xid, name or address)
//! leaves the registry exactly as it was. The database also names the registry *instance*: a
//! random id that keeps the cgroups and pins of two state directories apart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::caps::CapSet;
use crate::context::ContextSpec;
use crate::{Error, Result};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contexts (
    xid INTEGER PRIMARY KEY CHECK (xid >= 2),
    name TEXT NOT NULL UNIQUE,
    root TEXT NOT NULL,
    branches TEXT,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    caps TEXT NOT NULL,
    loopback TEXT NOT NULL,
    devices TEXT NOT NULL,
    hostname TEXT NOT NULL,
    require_isolation INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS addresses (
    addr TEXT PRIMARY KEY,
    xid INTEGER NOT NULL REFERENCES contexts(xid) ON DELETE CASCADE,
    position INTEGER NOT NULL
);
";

pub struct Registry {
    conn: Connection,
    path: PathBuf,
    instance: String,
}

impl Registry {
    /// Opens (creating if needed) the registry database `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |source| Error::Registry {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        let version: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        match version {
            None => {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(err)?;
            }
            Some(v) if v == SCHEMA_VERSION.to_string() => {}
            Some(v) => {
                return Err(Error::BadValue {
                    what: "registry schema version",
                    value: v,
                    why: format!("this cowfs knows version {SCHEMA_VERSION}"),
                });
            }
        }
        let instance: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = 'instance'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        let instance = match instance {
            Some(i) => i,
            None => {
                let i = new_instance_id();
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('instance', ?1)",
                    [&i],
                )
                .map_err(err)?;
                i
            }
        };
        tx.commit().map_err(err)?;
        Ok(Registry {
            conn,
            path: path.to_path_buf(),
            instance,
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Registry {
            path: self.path.clone(),
            source,
        }
    }

    /// The id of this registry instance (names its cgroups and bpffs pins).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Adds a context, or changes nothing and says why.
    pub fn create(&mut self, spec: &ContextSpec) -> Result<()> {
        let path = self.path.clone();
        let err = |source| Error::Registry {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let by_xid: Option<String> = tx
            .query_row(
                "SELECT name FROM contexts WHERE xid = ?1",
                [spec.xid],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(name) = by_xid {
            return Err(Error::DuplicateXid {
                xid: spec.xid,
                name,
            });
        }
        let by_name: Option<u32> = tx
            .query_row(
                "SELECT xid FROM contexts WHERE name = ?1",
                [&spec.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if by_name.is_some() {
            return Err(Error::DuplicateName(spec.name.clone()));
        }
        for addr in &spec.addrs {
            let owner: Option<String> = tx
                .query_row(
                    "SELECT c.name FROM addresses a JOIN contexts c ON a.xid = c.xid WHERE a.addr = ?1",
                    [addr.to_string()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            if let Some(name) = owner {
                return Err(Error::AddressTaken { addr: *addr, name });
            }
        }
        let devices = serde_json::to_string(&spec.devices).map_err(|e| Error::BadValue {
            what: "device list",
            value: format!("{:?}", spec.devices),
            why: e.to_string(),
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        tx.execute(
            "INSERT INTO contexts (xid, name, root, branches, uid, gid, caps, loopback, devices,
                 hostname, require_isolation, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                spec.xid,
                spec.name,
                spec.root.to_string_lossy(),
                spec.branches,
                spec.uid,
                spec.gid,
                spec.caps.to_canonical(),
                spec.loopback.to_string(),
                devices,
                spec.hostname,
                spec.require_isolation,
                now
            ],
        )
        .map_err(err)?;
        for (i, addr) in spec.addrs.iter().enumerate() {
            tx.execute(
                "INSERT INTO addresses (addr, xid, position) VALUES (?1, ?2, ?3)",
                params![addr.to_string(), spec.xid, i as i64],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn load(&self, row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ContextSpec>> {
        let xid: u32 = row.get(0)?;
        let caps: String = row.get(6)?;
        let loopback: String = row.get(7)?;
        let devices: String = row.get(8)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT addr FROM addresses WHERE xid = ?1 ORDER BY position")?;
        let addrs: Vec<String> = stmt
            .query_map([xid], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let spec = (|| -> Result<ContextSpec> {
            let corrupt = |what: &'static str, value: String, why: String| Error::BadValue {
                what,
                value,
                why: format!("stored in {}: {why}", self.path.display()),
            };
            Ok(ContextSpec {
                xid,
                name: row.get(1).map_err(self.err())?,
                root: PathBuf::from(row.get::<_, String>(2).map_err(self.err())?),
                branches: row.get(3).map_err(self.err())?,
                uid: row.get(4).map_err(self.err())?,
                gid: row.get(5).map_err(self.err())?,
                caps: CapSet::from_canonical(&caps)?,
                addrs: addrs
                    .iter()
                    .map(|a| {
                        a.parse::<IpAddr>()
                            .map_err(|e| corrupt("address", a.clone(), e.to_string()))
                    })
                    .collect::<Result<_>>()?,
                loopback: loopback.parse()?,
                devices: serde_json::from_str(&devices)
                    .map_err(|e| corrupt("device list", devices.clone(), e.to_string()))?,
                hostname: row.get(9).map_err(self.err())?,
                require_isolation: row.get(10).map_err(self.err())?,
            })
        })();
        Ok(spec)
    }

    const COLUMNS: &str = "xid, name, root, branches, uid, gid, caps, loopback, devices, hostname,
        require_isolation";

    /// The context named `name` (or with xid `name`, when it is a number).
    pub fn get(&self, name: &str) -> Result<ContextSpec> {
        let (clause, key): (&str, rusqlite::types::Value) = match name.parse::<i64>() {
            Ok(xid) => ("xid = ?1", xid.into()),
            Err(_) => ("name = ?1", name.to_string().into()),
        };
        let sql = format!("SELECT {} FROM contexts WHERE {clause}", Self::COLUMNS);
        self.conn
            .query_row(&sql, [key], |r| self.load(r))
            .optional()
            .map_err(self.err())?
            .ok_or_else(|| Error::NotFound(name.to_string()))?
    }

    /// Every context, by xid.
    pub fn list(&self) -> Result<Vec<ContextSpec>> {
        let sql = format!("SELECT {} FROM contexts ORDER BY xid", Self::COLUMNS);
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| self.load(r))
            .map_err(self.err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())?;
        rows.into_iter().collect()
    }

    /// Removes context `xid` (and its addresses).
    pub fn remove(&mut self, xid: u32) -> Result<()> {
        self.conn
            .execute("DELETE FROM contexts WHERE xid = ?1", [xid])
            .map_err(self.err())
            .map(drop)
    }
}

/// 8 hex digits from the kernel's random pool.
fn new_instance_id() -> String {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    if bytes == [0; 4] {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        bytes = (nanos ^ std::process::id()).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::CreateRequest;

    fn spec(root: &Path, xid: u32, name: &str, addrs: &[&str]) -> ContextSpec {
        CreateRequest {
            xid,
            name: name.into(),
            root: root.to_path_buf(),
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            caps: Some("+net_raw".into()),
            devices: vec!["fuse".into()],
            ..Default::default()
        }
        .validate()
        .expect("valid")
    }

    #[test]
    fn create_get_list_remove_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::open(&dir.path().join("r.db")).expect("open");
        let a = spec(dir.path(), 10, "a", &["127.0.0.2", "fd00::2"]);
        reg.create(&a).expect("create");
        assert_eq!(reg.get("a").expect("by name"), a);
        assert_eq!(reg.get("10").expect("by xid"), a);
        let instance = reg.instance().to_string();
        assert_eq!(instance.len(), 8);
        drop(reg);
        let mut reg = Registry::open(&dir.path().join("r.db")).expect("reopen");
        assert_eq!(reg.instance(), instance, "the instance id is stable");
        assert_eq!(reg.list().expect("list"), vec![a]);
        reg.remove(10).expect("remove");
        assert!(matches!(reg.get("a"), Err(Error::NotFound(_))));
        // The address is free again.
        reg.create(&spec(dir.path(), 11, "b", &["127.0.0.2"]))
            .expect("reuse address");
    }

    #[test]
    fn duplicates_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut reg = Registry::open(&dir.path().join("r.db")).expect("open");
        reg.create(&spec(dir.path(), 10, "a", &["127.0.0.2"]))
            .expect("create");
        let before = reg.list().expect("list");
        let dup_xid = reg.create(&spec(dir.path(), 10, "b", &[]));
        assert!(matches!(dup_xid, Err(Error::DuplicateXid { xid: 10, ref name }) if name == "a"));
        let dup_name = reg.create(&spec(dir.path(), 11, "a", &[]));
        assert!(matches!(dup_name, Err(Error::DuplicateName(_))));
        let dup_addr = reg.create(&spec(dir.path(), 12, "c", &["127.0.0.3", "127.0.0.2"]));
        assert!(
            matches!(dup_addr, Err(Error::AddressTaken { .. })),
            "{dup_addr:?}"
        );
        assert_eq!(reg.list().expect("list"), before);
        let reserved = reg.conn.execute(
            "INSERT INTO contexts VALUES (1, 'spy', '/x', NULL, 0, 0, '', 'deny', '[]', 'spy', 0, 0)",
            [],
        );
        assert!(reserved.is_err(), "the schema itself refuses xid 1");
    }
}
