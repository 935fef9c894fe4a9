//! A full listing of a tree — type, mode, owner, size, mtime, rdev, symlink target, content hash
//! and xattrs of every path, directories included — to prove that an operation (vhashify, a
//! mount) changed nothing a guest can see. Written independently of the code it checks (std and
//! libc only), so it is an oracle rather than a mirror.
//!
//! xattrs in the `trusted.cowfs.` namespace are cowfs's own bookkeeping (the unified-file mark),
//! hidden from guests by the mount, and are left out of every listing.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Prefix of the xattrs left out of listings (cowfs's own, hidden by the mount).
pub const COWFS_XATTR_PREFIX: &[u8] = b"trusted.cowfs.";

/// What to compare.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListingOptions {
    /// Leave regular files' mtimes out (for `vhashify --ignore-mtime`, which by definition gives
    /// unified files the mtime of their object). Directory mtimes are always listed.
    pub ignore_file_mtime: bool,
    /// Leave entries whose name starts with `.cowfs.tmp.` out (after a killed run, before the
    /// recovery that removes them).
    pub ignore_cowfs_temps: bool,
    /// Leave directory mtimes out (after a killed run, before the recovery that restores them).
    pub ignore_dir_mtime: bool,
}

/// Path (relative to the root) → one canonical line describing it.
pub type Listing = BTreeMap<PathBuf, String>;

fn xattrs(path: &Path) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: size query with a null buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    let mut names = vec![0u8; n as usize + 256];
    // SAFETY: names is valid for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(COWFS_XATTR_PREFIX) {
            continue;
        }
        let cn = CString::new(name)?;
        let mut buf = vec![0u8; 65536];
        // SAFETY: buf is valid for its length; both strings are NUL-terminated.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if len < 0 {
            return Err(std::io::Error::last_os_error());
        }
        buf.truncate(len as usize);
        out.push((name.to_vec(), buf));
    }
    out.sort();
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn describe(path: &Path, meta: &fs::Metadata, opts: ListingOptions) -> std::io::Result<String> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        'f'
    } else if ft.is_symlink() {
        'l'
    } else if ft.is_char_device() {
        'c'
    } else if ft.is_block_device() {
        'b'
    } else if ft.is_fifo() {
        'p'
    } else {
        's'
    };
    let mut line = format!(
        "{kind} mode={:o} uid={} gid={} rdev={}",
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.rdev()
    );
    let hide_mtime =
        (kind == 'f' && opts.ignore_file_mtime) || (kind == 'd' && opts.ignore_dir_mtime);
    if !hide_mtime {
        line.push_str(&format!(" mtime={}.{:09}", meta.mtime(), meta.mtime_nsec()));
    }
    match kind {
        'f' => {
            let mut f = fs::File::open(path)?;
            let mut h = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            line.push_str(&format!(
                " size={} blake3={}",
                meta.len(),
                h.finalize().to_hex()
            ));
        }
        'l' => {
            let target = fs::read_link(path)?;
            line.push_str(&format!(" target={}", hex(target.as_os_str().as_bytes())));
        }
        _ => {}
    }
    for (name, value) in xattrs(path)? {
        line.push_str(&format!(
            " xattr:{}={}",
            String::from_utf8_lossy(&name),
            hex(&value)
        ));
    }
    Ok(line)
}

/// Lists every path under `root` (the root itself as "").
pub fn list_tree(root: &Path, opts: ListingOptions) -> std::io::Result<Listing> {
    let mut out = Listing::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let meta = fs::symlink_metadata(&abs)?;
        out.insert(rel.clone(), describe(&abs, &meta, opts)?);
        if meta.is_dir() {
            for ent in fs::read_dir(&abs)? {
                let ent = ent?;
                let name = ent.file_name();
                if opts.ignore_cowfs_temps && name.as_bytes().starts_with(b".cowfs.tmp.") {
                    continue;
                }
                stack.push(rel.join(name));
            }
        }
    }
    Ok(out)
}

/// The differences between two listings, one line each, at most `max` of them (empty: equal).
pub fn diff(before: &Listing, after: &Listing, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (path, b) in before {
        match after.get(path) {
            None => out.push(format!("missing after: /{}", path.display())),
            Some(a) if a != b => out.push(format!(
                "changed: /{}\n  before: {b}\n  after:  {a}",
                path.display()
            )),
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("new after: /{}", path.display()));
    }
    out.truncate(max);
    out
}
