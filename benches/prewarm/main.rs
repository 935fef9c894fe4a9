//! Prewarm benchmark (issue 8): a hot set recorded on one guest makes the cold start of a
//! workload on another guest of the same template (nearly) as fast as a warm one.
//!
//!     cargo build --release --workspace --bins && cargo bench --bench prewarm -- [--runs 5] [--kinds dir,overlayfs,fuse-overlayfs,cowfs]
//!         [--workload "python3 -c 'import json, ssl, sqlite3'"] [--method read]
//!
//! Two private copies of corpus guest g3: `a` records (traced by `cowfs trace` while it runs
//! the workload from a cold cache, through `vcontext run`), `b` is measured. For each root
//! kind (a plain directory, or a union over the copy: kernel overlayfs, fuse-overlayfs — a
//! FUSE mount without passthrough — and cowfs, with passthrough), the workload runs in a
//! chroot of `b`'s root: cold (caches dropped), prewarmed (caches dropped, then `prewarm`
//! through the root; for unions also directly on the backing directory) and warm. Medians of
//! `--runs` runs; the prewarm's own time is reported apart. A traced cold run on `b` gives the
//! bytes the workload really read. Writes docs/benchmarks/prewarm.md. Needs root and the
//! corpus; drops the page cache of the whole machine between runs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cowfs::report::{Table, median};
use cowfs_kmod::access::AccessLog;
use cowfs_kmod::hotset::{self, BuildOptions, HotSet};
use cowfs_kmod::prewarm::{self, Method};

#[derive(Parser, Debug)]
#[command(about = "Cold start with and without prewarm, against warm, on guests of one template")]
struct Args {
    /// Measured runs per state; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Root kinds: dir, overlayfs, fuse-overlayfs, cowfs (union mounts over the guest copy).
    #[arg(long, value_delimiter = ',', default_value = "dir")]
    kinds: Vec<String>,
    /// The workload, run with `sh -c` inside the guest.
    #[arg(long, default_value = "python3 -c 'import json, ssl, sqlite3'")]
    workload: String,
    /// Prewarm method (read, readahead).
    #[arg(long, default_value = "read")]
    method: Method,
    /// Scratch directory (on the file system under test).
    #[arg(long, default_value = "/var/tmp/cowfs-bench-prewarm")]
    dir: PathBuf,
    /// Where the Markdown report goes.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    Overlayfs,
    FuseOverlayfs,
    Cowfs,
}

impl Kind {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "dir" => Kind::Dir,
            "overlayfs" => Kind::Overlayfs,
            "fuse-overlayfs" => Kind::FuseOverlayfs,
            "cowfs" => Kind::Cowfs,
            _ => bail!("unknown root kind {s:?} (dir, overlayfs, fuse-overlayfs, cowfs)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::Overlayfs => "overlayfs",
            Kind::FuseOverlayfs => "fuse-overlayfs",
            Kind::Cowfs => "cowfs",
        }
    }
}

/// A guest root of some kind over a guest copy (`backing`), unmounted on drop.
struct Root {
    root: PathBuf,
    backing: PathBuf,
    mnt: Option<PathBuf>,
    scratch: PathBuf,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Root {
    fn new(kind: Kind, backing: &Path, scratch: &Path) -> Result<Root> {
        if scratch.exists() {
            let _ = Command::new("umount").arg(scratch.join("mnt")).status();
            std::fs::remove_dir_all(scratch)?;
        }
        let (upper, work, mnt) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("mnt"),
        );
        for d in [&upper, &work, &mnt] {
            std::fs::create_dir_all(d)?;
        }
        let layers = format!(
            "lowerdir={},upperdir={},workdir={}",
            backing.display(),
            upper.display(),
            work.display()
        );
        match kind {
            Kind::Dir => {
                return Ok(Root {
                    root: backing.to_path_buf(),
                    backing: backing.to_path_buf(),
                    mnt: None,
                    scratch: scratch.to_path_buf(),
                });
            }
            Kind::Overlayfs => run(Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &layers])
                .arg(&mnt))?,
            Kind::FuseOverlayfs => run(Command::new("fuse-overlayfs")
                .args(["-o", &layers])
                .arg(&mnt))?,
            Kind::Cowfs => run(Command::new(cowfs::bin("cowfs"))
                .args(["mount", "-o"])
                .arg(format!(
                    "dirs={}=rw:{}=ro",
                    upper.display(),
                    backing.display()
                ))
                .arg("none")
                .arg(&mnt))?,
        }
        Ok(Root {
            root: mnt.clone(),
            backing: backing.to_path_buf(),
            mnt: Some(mnt),
            scratch: scratch.to_path_buf(),
        })
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(mnt) = &self.mnt
            && !Command::new("umount")
                .arg(mnt)
                .status()
                .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn drop_caches() -> Result<()> {
    run(&mut Command::new("sync"))?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches (needs root)")
}

/// Runs the workload chrooted into `root`; returns its wall time in seconds.
fn workload(root: &Path, script: &str) -> Result<f64> {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/root")
        .stdout(Stdio::null());
    let dir = root.to_path_buf();
    // SAFETY: chroot and chdir are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::chroot(&dir)?;
            nix::unistd::chdir("/")?;
            Ok(())
        });
    }
    let clock = Instant::now();
    let status = cmd.status().context("running the workload")?;
    let secs = clock.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the workload failed in {}: {status}", root.display());
    }
    Ok(secs)
}

/// A private copy of corpus guest `guest` in `dir` (restored once, reused after).
fn guest_copy(dir: &Path, guest: &str) -> Result<PathBuf> {
    let done = dir.join(".restored");
    if !done.exists() {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        cowfs::restore_guest(guest, dir)
            .with_context(|| format!("restoring {guest} into {}", dir.display()))?;
        std::fs::write(&done, b"")?;
    }
    Ok(dir.to_path_buf())
}

/// Contexts of the benchmark in a private state directory, destroyed on drop.
struct Contexts {
    state: tempfile::TempDir,
    names: Vec<String>,
}

impl Contexts {
    fn vcontext(&self) -> Command {
        let mut c = Command::new(cowfs::bin("vcontext"));
        c.arg("--state-dir").arg(self.state.path());
        c
    }

    fn create(&mut self, xid: u32, name: &str, root: &Path) -> Result<()> {
        run(self
            .vcontext()
            .args([
                "create",
                "--xid",
                &xid.to_string(),
                "--name",
                name,
                "--root",
            ])
            .arg(root))?;
        self.names.push(name.to_string());
        Ok(())
    }

    /// `cowfs trace NAME --out LOG -- sh -c SCRIPT` from a cold cache.
    fn trace(&self, name: &str, branch: &Path, script: &str, log: &Path) -> Result<AccessLog> {
        drop_caches()?;
        run(Command::new(cowfs::bin("cowfs"))
            .arg("trace")
            .arg(name)
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--branch")
            .arg(branch)
            .arg("--out")
            .arg(log)
            .args(["--", "sh", "-c", script]))?;
        AccessLog::load(log).map_err(Into::into)
    }
}

impl Drop for Contexts {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self.vcontext().args(["destroy", n]).output();
        }
    }
}

struct Row {
    kind: Kind,
    cold: f64,
    prewarmed: f64,
    prewarm: f64,
    backing: Option<f64>,
    warm: f64,
    hot_bytes: u64,
    prewarmed_bytes: u64,
    skipped: usize,
    rec: AccessLog,
    tgt: AccessLog,
}

fn measure(kind: Kind, args: &Args, a: &Path, b: &Path, ctxs: &mut Contexts) -> Result<Row> {
    let scratch = args.dir.join("scratch");
    let ra = Root::new(kind, a, &scratch.join(format!("a-{}", kind.name())))?;
    let rb = Root::new(kind, b, &scratch.join(format!("b-{}", kind.name())))?;
    let xid = 900 + kind as u32 * 2;
    let (rec_name, tgt_name) = (
        format!("rec-{}", kind.name()),
        format!("tgt-{}", kind.name()),
    );
    ctxs.create(xid, &rec_name, &ra.root)?;
    ctxs.create(xid + 1, &tgt_name, &rb.root)?;

    let logs = args.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let rec = ctxs.trace(
        &rec_name,
        &ra.backing,
        &args.workload,
        &logs.join(format!("rec-{}.json", kind.name())),
    )?;
    let hot: HotSet = hotset::build(std::slice::from_ref(&rec), &BuildOptions::default());
    hotset::write_json_atomic(&logs.join(format!("hot-{}.json", kind.name())), &hot)?;
    let opts = prewarm::Options {
        method: args.method,
        ..Default::default()
    };

    let (mut cold, mut prewarmed, mut prewarm_t, mut backing, mut warm) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut last = None;
    for i in 0..args.runs {
        drop_caches()?;
        cold.push(workload(&rb.root, &args.workload)?);

        drop_caches()?;
        let report = prewarm::prewarm(&rb.root, &hot, &opts)?;
        prewarm_t.push(report.elapsed_ms as f64 / 1000.0);
        prewarmed.push(workload(&rb.root, &args.workload)?);
        last = Some(report);

        if kind != Kind::Dir {
            drop_caches()?;
            prewarm::prewarm(&rb.backing, &hot, &opts)?;
            backing.push(workload(&rb.root, &args.workload)?);
        }

        workload(&rb.root, &args.workload)?;
        warm.push(workload(&rb.root, &args.workload)?);
        eprintln!(
            "{:>14} run {}: cold {:.3} s, prewarm {:.3} s then {:.3} s, warm {:.3} s",
            kind.name(),
            i + 1,
            cold[i],
            prewarm_t[i],
            prewarmed[i],
            warm[i]
        );
    }
    let tgt = ctxs.trace(
        &tgt_name,
        &rb.backing,
        &args.workload,
        &logs.join(format!("tgt-{}.json", kind.name())),
    )?;
    let m = |v: &[f64]| median(v).unwrap_or(f64::NAN);
    let last = last.context("no run")?;
    Ok(Row {
        kind,
        cold: m(&cold),
        prewarmed: m(&prewarmed),
        prewarm: m(&prewarm_t),
        backing: (!backing.is_empty()).then(|| m(&backing)),
        warm: m(&warm),
        hot_bytes: hot.bytes,
        prewarmed_bytes: last.bytes,
        skipped: last.skipped.len(),
        rec,
        tgt,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn render(rows: &[Row], args: &Args) -> String {
    let mut times = Table::new(&[
        "root",
        "cold",
        "prewarmed (workload)",
        "prewarm itself",
        "warm",
        "prewarmed / warm",
        "cold / prewarmed",
        "prewarmed on the backing dir",
    ]);
    for r in rows {
        times.row(&[
            r.kind.name().to_string(),
            format!("{:.3} s", r.cold),
            format!("{:.3} s", r.prewarmed),
            format!("{:.3} s", r.prewarm),
            format!("{:.3} s", r.warm),
            format!("{:.2} ×", r.prewarmed / r.warm),
            format!("{:.2} ×", r.cold / r.prewarmed),
            r.backing.map_or("–".into(), |b| format!("{b:.3} s")),
        ]);
    }
    let mut bytes = Table::new(&[
        "root",
        "hot set",
        "prewarmed",
        "workload read (accessed)",
        "workload from disk (cold, readahead included)",
        "files",
        "records / dropped (recording)",
        "records / dropped (measuring)",
    ]);
    for r in rows {
        bytes.row(&[
            r.kind.name().to_string(),
            mib(r.hot_bytes),
            format!(
                "{}{}",
                mib(r.prewarmed_bytes),
                if r.skipped > 0 {
                    format!(" ({} files skipped)", r.skipped)
                } else {
                    String::new()
                }
            ),
            mib(r.tgt.read_bytes()),
            mib(r.tgt.cached_bytes()),
            r.tgt.files.len().to_string(),
            format!("{} / {}", r.rec.records, r.rec.dropped),
            format!("{} / {}", r.tgt.records, r.tgt.dropped),
        ]);
    }
    let mut md = format!(
        "# Prewarm benchmark\n\n`cargo bench --bench prewarm -- --runs {} --kinds {} --method {}`\n\n\
         Workload, in a chroot of a private copy of corpus guest g3 (`b`): `{}`. The hot set was \
         recorded by `cowfs trace` on another copy (`a`) running the same workload from a cold \
         cache. Medians of {} runs. *cold*: page cache dropped (`sync; echo 3 > \
         /proc/sys/vm/drop_caches`); *prewarmed*: dropped, then `prewarm` of the hot set through \
         the guest's root (its own time in the next column), then the workload; *warm*: the \
         workload again right after a run. *prewarmed on the backing dir*: the prewarm reads the \
         copy under the union instead of the mount.\n\n{}\n## Bytes\n\n\
         *workload read*: the ranges the workload accessed on `b` (a traced cold run); *from \
         disk*: what entered the page cache during that run (kernel readahead included).\n\n{}",
        args.runs,
        args.kinds.join(","),
        match args.method {
            Method::Read => "read",
            Method::Readahead => "readahead",
        },
        args.workload,
        args.runs,
        times.to_markdown(),
        bytes.to_markdown()
    );
    let mut targets = Table::new(&["root", "prewarmed ≤ 1.3 × warm", "cold ≥ 2 × prewarmed"]);
    for r in rows {
        let verdict =
            |v: f64, ok: bool| format!("{v:.2} × {}", if ok { "met" } else { "**not met**" });
        let (pw, cp) = (r.prewarmed / r.warm, r.cold / r.prewarmed);
        targets.row(&[
            r.kind.name().to_string(),
            verdict(pw, pw <= 1.3),
            verdict(cp, cp >= 2.0),
        ]);
    }
    md.push_str(&format!(
        "\n## Targets (issue 8)\n\n{}",
        targets.to_markdown()
    ));
    md
}

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let kinds = args
        .kinds
        .iter()
        .map(|k| Kind::parse(k))
        .collect::<Result<Vec<_>>>()?;
    let a = guest_copy(&args.dir.join("a"), "g3")?;
    let b = guest_copy(&args.dir.join("b"), "g3")?;
    let mut ctxs = Contexts {
        state: tempfile::tempdir()?,
        names: vec![],
    };
    let mut rows = Vec::new();
    for kind in kinds {
        rows.push(measure(kind, &args, &a, &b, &mut ctxs).with_context(|| kind.name())?);
    }
    let md = render(&rows, &args);
    println!("{md}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("prewarm.md"), &md)?;
    Ok(())
}
