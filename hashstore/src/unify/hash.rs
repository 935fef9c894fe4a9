//! Phase 2 (read-only): content hash and key of every pending inode, in parallel, largest files
//! first. A file is checked before and after it is read (inode, size, mtime, ctime): if it moved
//! it is skipped as changed. Content hashes remembered from an earlier run are reused while
//! (dev, ino, size, mtime, ctime) still match.

use std::os::fd::AsFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::OFlag;

use super::scan::{InodeState, Scan};
use super::{Job, Options, Report, SkipReason};
use crate::error::Result;
use crate::key::{ContentHash, FileMeta, Key, ctime_of, hash_fd, mtime_of};
use crate::store::unchanged;
use crate::sys::{self, Stat};
use crate::walk::Root;

/// Read buffer per hashing thread: large enough for BLAKE3 to hash many chunks per call with
/// SIMD, small enough to stay in L2.
const BUF_SIZE: usize = 256 * 1024;

enum Outcome {
    Hashed {
        key: Key,
        content: ContentHash,
        st: Stat,
        from_cache: bool,
    },
    Skip(SkipReason, String),
}

/// Hashes every `Pending` inode of `scan`.
pub fn hash(job: Job<'_>, scan: &mut Scan, report: &mut Report) -> Result<()> {
    let Job {
        roots,
        opts,
        io_threads: threads,
        progress,
        ..
    } = job;
    let mut todo: Vec<u32> = (0..scan.inodes.len() as u32)
        .filter(|&i| matches!(scan.inodes[i as usize].state, InodeState::Pending))
        .collect();
    todo.sort_by_key(|&i| std::cmp::Reverse(scan.inodes[i as usize].st.st_size));
    let total: u64 = todo
        .iter()
        .map(|&i| scan.inodes[i as usize].st.st_size as u64)
        .sum();
    progress.phase("hashing", total);

    let cursor = AtomicUsize::new(0);
    let results: Mutex<Vec<(u32, Outcome)>> = Mutex::new(Vec::with_capacity(todo.len()));
    let scan_ref = &*scan;
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; BUF_SIZE];
                let mut mine = Vec::new();
                loop {
                    let n = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(n) else { break };
                    let out = hash_one(roots, scan_ref, i, opts, &mut buf);
                    progress.advance(scan_ref.inodes[i as usize].st.st_size as u64);
                    mine.push((i, out));
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&mut mine);
            });
        }
    });
    for (i, out) in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let inode = &mut scan.inodes[i as usize];
        match out {
            Outcome::Hashed {
                key,
                content,
                st,
                from_cache,
            } => {
                if from_cache {
                    report.hash_cache_hits += 1;
                } else {
                    report.hashed_files += 1;
                    report.hashed_bytes += st.st_size as u64;
                }
                inode.state = InodeState::Hashed {
                    key,
                    content,
                    st: Box::new(st),
                    from_cache,
                };
            }
            Outcome::Skip(reason, detail) => {
                let f = &scan.files[inode.files[0] as usize];
                let path =
                    roots[f.root as usize].display(&scan.dirs[f.dir as usize].rel.join(&f.name));
                report.skip(path, reason, detail);
                inode.state = InodeState::Skipped;
            }
        }
    }
    Ok(())
}

fn io_skip(e: &std::io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ENOENT) => Outcome::Skip(SkipReason::Vanished, "disappeared".into()),
        // A symlink (or something else) now stands where the file was.
        Some(libc::ELOOP) | Some(libc::EXDEV) | Some(libc::ENOTDIR) => Outcome::Skip(
            SkipReason::Changed,
            format!("replaced during the run ({e})"),
        ),
        _ => Outcome::Skip(SkipReason::Unreadable, e.to_string()),
    }
}

fn hash_one(roots: &[Root], scan: &Scan, i: u32, opts: &Options, buf: &mut [u8]) -> Outcome {
    let inode = &scan.inodes[i as usize];
    let f = &scan.files[inode.files[0] as usize];
    let rel = scan.rel_path(f);
    let root = &roots[f.root as usize];
    let fd = match sys::open_beneath(
        root.fd.as_fd(),
        &rel,
        OFlag::O_RDONLY | OFlag::O_NOATIME | OFlag::O_NOCTTY,
    ) {
        Ok(fd) => fd,
        Err(e) => return io_skip(&e),
    };
    let before = match sys::fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => return io_skip(&e),
    };
    if !unchanged(&before, &inode.st) {
        return Outcome::Skip(SkipReason::Changed, "changed since the walk".into());
    }
    let xattrs = match sys::list_xattrs(fd.as_fd()) {
        Ok(x) => x,
        Err(e) => return io_skip(&e),
    };
    let meta = FileMeta::from_stat(&before, xattrs);
    let size = before.st_size as u64;
    let cached = scan
        .cache
        .get(&(before.st_dev, before.st_ino))
        .filter(|c| c.size == size && c.mtime == mtime_of(&before) && c.ctime == ctime_of(&before))
        .map(|c| c.content_hash);
    let (content, from_cache) = match cached {
        Some(c) => (c, true),
        None => {
            if size > BUF_SIZE as u64 {
                sys::advise_sequential(fd.as_fd());
            }
            match hash_fd(fd.as_fd(), size, buf) {
                Ok(Some(c)) => (c, false),
                Ok(None) => {
                    return Outcome::Skip(SkipReason::Changed, "size changed while reading".into());
                }
                Err(e) => return io_skip(&e),
            }
        }
    };
    let after = match sys::fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => return io_skip(&e),
    };
    if !unchanged(&before, &after) {
        return Outcome::Skip(SkipReason::Changed, "changed while it was read".into());
    }
    Outcome::Hashed {
        key: meta.key(opts.policy, &content),
        content,
        st: after,
        from_cache,
    }
}
