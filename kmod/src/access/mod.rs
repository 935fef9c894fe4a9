//! Per-context access log: what a context's processes read, by path and byte range.
//!
//! - [`tracer`]: loads the access programs (`kmod/ebpf/src/access.rs`) for one session and
//!   reads their ring buffer; [`layout`]: the kernel struct offsets they need, from BTF.
//! - [`walk`]: (dev, ino) → paths by walking the guest root and its branches.
//! - [`log`]: folding records per inode, resolving them to paths (renamed and deleted files
//!   reported as such), the versioned log format.
//! - [`session`]: `cowfs trace CONTEXT` from start to log.
//!
//! See docs/architecture/kmod.md, "Access log and prewarm".

pub mod layout;
pub mod log;
pub mod ranges;
pub mod session;
pub mod tracer;
pub mod walk;

pub use log::{AccessLog, FileAccess, Status};
pub use ranges::RangeSet;
pub use session::{TraceOptions, TraceSession};
pub use tracer::Tracer;

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::time::Duration;

    use super::walk::kernel_dev;
    use super::*;
    use crate::abi::{ACCESS_CACHE_ADD, ACCESS_READ, AccessRecord};
    use crate::cgroup::{ContextCgroup, Hierarchy};

    /// A context-shaped cgroup of this test, removed even when the test fails.
    pub(crate) struct TestCgroup(pub ContextCgroup);

    impl TestCgroup {
        pub(crate) fn new(tag: &str) -> Self {
            let h = Hierarchy::detect().expect("cgroup2 is mounted on the test machines");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let cg = h.context(&format!("test-{tag}-{}-{nanos:x}", std::process::id()), 9);
            cg.create().expect("create the test cgroup");
            TestCgroup(cg)
        }

        /// Runs `cmd` to completion inside the cgroup.
        pub(crate) fn run(&self, cmd: &mut std::process::Command) {
            let procs = self.0.path().join("cgroup.procs");
            // SAFETY: only a write(2) of our own pid before exec.
            unsafe {
                cmd.pre_exec(move || std::fs::write(&procs, b"0"));
            }
            let status = cmd.status().expect("spawn");
            assert!(status.success(), "{cmd:?}: {status}");
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = self.0.kill_all("test", Duration::from_secs(5));
            let _ = self.0.remove();
        }
    }

    /// A file of `len` bytes whose pages are not in the page cache.
    pub(crate) fn cold_file(path: &Path, len: usize) -> (u32, u64) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(path, &data).expect("write");
        evict(path);
        let meta = std::fs::metadata(path).expect("stat");
        let dev = meta.dev();
        (kernel_dev(libc::major(dev), libc::minor(dev)), meta.ino())
    }

    /// Writes back and drops the cached pages of one file (never the whole page cache).
    pub(crate) fn evict(path: &Path) {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(path).expect("open");
        f.sync_all().expect("fsync");
        // SAFETY: a valid fd.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }

    fn drain_all(tracer: &mut Tracer) -> Vec<AccessRecord> {
        let mut out = Vec::new();
        tracer.wait(Duration::from_millis(50)).expect("poll");
        tracer.drain(|r| out.push(r));
        out
    }

    #[test]
    fn records_reads_inside_the_cgroup_and_nothing_outside() {
        let cg = TestCgroup::new("access");
        let dir = tempfile::tempdir().expect("tempdir");
        let inside = cold_file(&dir.path().join("inside"), 256 << 10);
        let outside = cold_file(&dir.path().join("outside"), 256 << 10);
        let mut tracer = Tracer::start(1 << 20, 3).expect("load and attach");
        assert!(
            tracer.hooks().iter().all(|h| h.attached),
            "{:?}",
            tracer.hooks()
        );
        tracer.trace_cgroup(cg.0.id().expect("id")).expect("trace");
        cg.run(
            std::process::Command::new("cat")
                .arg(dir.path().join("inside"))
                .stdout(std::process::Stdio::null()),
        );
        let status = std::process::Command::new("cat")
            .arg(dir.path().join("outside"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("cat");
        assert!(status.success());
        let records = drain_all(&mut tracer);
        let of = |key: (u32, u64), kind: u32| {
            records
                .iter()
                .filter(|r| (r.dev, r.ino) == key && r.kind == kind)
                .count()
        };
        assert!(of(inside, ACCESS_READ) > 0, "{records:?}");
        assert!(of(inside, ACCESS_CACHE_ADD) > 0, "{records:?}");
        let pages: u64 = records
            .iter()
            .filter(|r| (r.dev, r.ino) == inside && r.kind == ACCESS_CACHE_ADD)
            .map(|r| u64::from(r.pages))
            .sum();
        assert!(
            pages >= 64,
            "256 KiB read from disk is 64 pages, saw {pages}: {records:?}"
        );
        assert!(
            records.iter().all(|r| (r.dev, r.ino) != outside),
            "a read outside the cgroup was recorded: {records:?}"
        );
        assert_eq!(tracer.stats().expect("stats").dropped, 0);
    }
}
