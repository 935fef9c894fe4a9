//! `cowfs mount`: mounts a union and serves it, detached once the mount is ready (or in the
//! foreground with `-f`). Also the mount-helper form mount(8) and fstab use:
//! `cowfs SOURCE MNT -o OPTS` (what fuse3's mount.fuse runs for `-t fuse.cowfs`) and
//! `mount.fuse.cowfs SOURCE MNT -o OPTS [-n] [-s] [-v] [-t TYPE]` (a link to this binary).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use cowfs_fs::mount::Daemon;
use cowfs_fs::options;
use cowfs_fs::watchdog::Watchdog;

/// Mount a union of branches (UnionFS `dirs=`, or overlayfs `lowerdir=`/`upperdir=`/`workdir=`).
///
/// Example: cowfs mount -o dirs=/g/vs04diff=rw:/g/noportage=ro:/g/master=ro none /vservers/vs04
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Mount options, comma-separated (repeatable): dirs=BRANCH[=rw|ro]:…, or
    /// lowerdir=DIR[:DIR…],upperdir=DIR,workdir=DIR; and ro, nodev, nosuid, noexec, noatime,
    /// allow_root, fsname=NAME, threads=N, noclone_fd, entry_timeout=SECS, attr_timeout=SECS
    /// and negative_timeout=SECS (default one day: the daemon tells the kernel what changes;
    /// don't change branches behind a mount's back, use unionctl). Kernel
    /// fast path, each on by default and off with the "no" form: passthrough (file data served
    /// by the kernel; passthrough_min=SIZE, default 64K, is the smallest file a read-only open
    /// passes through), keep_cache, cache_dir, readdirplus, cache_symlinks, parallel_dirops;
    /// opendir (off by default: the kernel then reads directories without opening them);
    /// noopen, for unions without a writable branch only: the kernel reads files without
    /// opening them (no round trip for a warm open, but no passthrough either).
    /// Multi-threaded: threads=N (default: the CPUs, 2 to 8) and noclone_fd. The kernel always
    /// checks permissions (default_permissions): the daemon relies on it.
    #[arg(short = 'o', value_name = "OPTIONS", required = true)]
    pub options: Vec<String>,
    /// Stay in the foreground, logging to stderr, instead of detaching once mounted.
    #[arg(short, long)]
    pub foreground: bool,
    /// Log file of the detached daemon (otherwise its log is discarded).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Source shown in /proc/mounts ("none" shows "cowfs").
    pub source: String,
    /// Where to mount.
    pub mountpoint: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(read_only) = remount_request(&args.options) {
        cowfs_fs::mount::remount(&args.mountpoint, read_only)?;
        return Ok(ExitCode::SUCCESS);
    }
    let refs: Vec<&str> = args.options.iter().map(String::as_str).collect();
    let opts = options::parse(&args.source, &refs).context("invalid mount options")?;
    if args.foreground {
        // SAFETY: no thread has been started yet (argument parsing and logging setup start
        // none).
        let mut watchdog = start_watchdog();
        let daemon = Daemon::mount(&opts, &args.mountpoint, true)?;
        guard(&mut watchdog, &daemon);
        eprintln!("cowfs: mounted on {}", daemon.mountpoint().display());
        daemon.serve()?;
        if let Some(w) = watchdog {
            w.release();
        }
        return Ok(ExitCode::SUCCESS);
    }
    daemonize(&opts, &args)
}

/// Forks the watchdog that ends the connection of a daemon killed mid-request (see
/// `cowfs_fs::watchdog`). Call while single-threaded.
fn start_watchdog() -> Option<Watchdog> {
    // SAFETY: the callers are single-threaded (see their comments).
    match unsafe { Watchdog::start() } {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!(
                "cowfs: no watchdog for this mount ({e}): a killed daemon may need `cowfs umount --force`"
            );
            None
        }
    }
}

fn guard(watchdog: &mut Option<Watchdog>, daemon: &Daemon) {
    if let Some(w) = watchdog
        && let Err(e) = w.guard(daemon.mountpoint())
    {
        tracing::warn!(error = %e, "the watchdog does not know the mount: it cannot end a dead daemon's connection");
    }
}

/// `-o remount,ro|rw` (what `mount -o remount,ro MNT` passes on): `Some(read_only)`.
fn remount_request(options: &[String]) -> Option<bool> {
    let words: Vec<&str> = options.iter().flat_map(|o| o.split(',')).collect();
    if !words.contains(&"remount") {
        return None;
    }
    // The last of ro/rw wins, as in mount(8); a remount without either keeps rw.
    Some(words.iter().rev().find(|w| **w == "ro" || **w == "rw") == Some(&"ro"))
}

/// Forks; the child mounts, reports success or its error through a pipe, detaches from the
/// terminal and serves. The parent exits only once the mount is ready, with the child's error
/// if there was one, so `cowfs mount && ls MNT` and mount(8) behave.
fn daemonize(opts: &options::MountOptions, args: &Args) -> anyhow::Result<ExitCode> {
    let log = match &args.log_file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?,
        ),
        None => None,
    };
    let (read_end, write_end) = nix::unistd::pipe().context("pipe")?;
    // SAFETY: no thread has been started yet (argument parsing and logging setup start none),
    // so the child is a faithful single-threaded copy.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut report = String::new();
            std::fs::File::from(read_end)
                .read_to_string(&mut report)
                .context("reading the daemon's report")?;
            if report.starts_with("ok") {
                return Ok(ExitCode::SUCCESS);
            }
            let _ = nix::sys::wait::waitpid(child, None);
            if report.is_empty() {
                bail!("the cowfs daemon died before the mount was ready");
            }
            bail!("{}", report.trim_end())
        }
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let code = daemon_child(opts, args, write_end, log);
            std::process::exit(code)
        }
    }
}

fn daemon_child(
    opts: &options::MountOptions,
    args: &Args,
    report: OwnedFd,
    log: Option<std::fs::File>,
) -> i32 {
    let mut report = std::fs::File::from(report);
    let _ = nix::unistd::setsid();
    // Still single-threaded (see `daemonize`); the mount below starts the threads.
    let mut watchdog = start_watchdog();
    let daemon = match Daemon::mount(opts, &args.mountpoint, true) {
        Ok(d) => d,
        Err(e) => {
            let _ = write!(report, "{e:#}");
            return 1;
        }
    };
    guard(&mut watchdog, &daemon);
    // Detach: no terminal, no cwd pinned, log to the file if any.
    let _ = std::env::set_current_dir("/");
    if let Err(e) = redirect_stdio(log) {
        let _ = write!(report, "cannot detach from the terminal: {e}");
        return 1;
    }
    let _ = report.write_all(b"ok\n");
    drop(report);
    let code = match daemon.serve() {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "the session ended with an error");
            1
        }
    };
    if let Some(w) = watchdog {
        w.release();
    }
    code
}

fn redirect_stdio(log: Option<std::fs::File>) -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let err_target = log.as_ref().map_or(null.as_fd(), |l| l.as_fd());
    nix::unistd::dup2_stdin(null.as_fd())?;
    nix::unistd::dup2_stdout(null.as_fd())?;
    nix::unistd::dup2_stderr(err_target)?;
    Ok(())
}

/// Recognises the mount-helper command lines and turns them into [`Args`]:
/// `mount.fuse.cowfs SOURCE MNT [-o OPTS]… [-n] [-s] [-v] [-f] [-t TYPE]`, and the same
/// after plain `cowfs` when the first word is not a subcommand (fuse3's mount.fuse runs
/// `cowfs SOURCE MNT -o OPTS`). Returns `None` for ordinary command lines.
pub fn helper_invocation(
    argv: &[OsString],
    subcommands: &[String],
) -> Option<anyhow::Result<Args>> {
    let prog = argv.first()?;
    let prog = std::path::Path::new(prog).file_name()?.to_string_lossy();
    let as_helper = prog.starts_with("mount.");
    let first = argv.get(1)?.to_string_lossy();
    if !as_helper && (first.starts_with('-') || subcommands.iter().any(|s| *s == first)) {
        return None;
    }
    Some(parse_helper_args(&argv[1..]))
}

fn parse_helper_args(args: &[OsString]) -> anyhow::Result<Args> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a
            .to_str()
            .with_context(|| format!("argument {a:?} is not valid UTF-8"))?;
        match s {
            "-o" => {
                let v = it.next().context("-o needs an argument")?;
                options.push(
                    v.to_str()
                        .context("mount options must be valid UTF-8")?
                        .to_string(),
                );
            }
            "-t" => {
                let t = it.next().context("-t needs an argument")?;
                let t = t.to_string_lossy();
                if t != "fuse.cowfs" && t != "cowfs" {
                    bail!("this helper mounts fuse.cowfs, not {t}");
                }
            }
            // mount(8)'s "no mtab", "sloppy" and "verbose" flags.
            "-n" | "-s" | "-v" => {}
            "-f" => foreground = true,
            _ if s.starts_with("-o") && s.len() > 2 => options.push(s[2..].to_string()),
            _ if s.starts_with('-') => bail!("unknown mount helper flag {s}"),
            _ => positional.push(a.clone()),
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        bail!("usage: mount.fuse.cowfs SOURCE MOUNTPOINT -o OPTIONS");
    };
    if options.is_empty() {
        bail!("no mount options: give -o dirs=… or -o lowerdir=…");
    }
    Ok(Args {
        options,
        foreground,
        log_file: None,
        source: source.to_string_lossy().into_owned(),
        mountpoint: PathBuf::from(mountpoint),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn remounts_are_recognised() {
        let o = |s: &str| vec![s.to_string()];
        assert_eq!(remount_request(&o("rw,remount,ro,dev,suid")), Some(true));
        assert_eq!(remount_request(&o("ro,remount,rw")), Some(false));
        assert_eq!(remount_request(&o("dirs=/a,ro")), None);
    }

    #[test]
    fn helper_forms_are_recognised() {
        let subs = vec!["mount".to_string(), "umount".to_string()];
        assert!(
            helper_invocation(
                &argv(&["cowfs", "mount", "-o", "dirs=/a", "none", "/m"]),
                &subs
            )
            .is_none()
        );
        assert!(helper_invocation(&argv(&["cowfs", "--help"]), &subs).is_none());
        let a = helper_invocation(
            &argv(&[
                "/usr/bin/cowfs",
                "none",
                "/mnt",
                "-o",
                "rw,dirs=/a=rw,dev,suid",
            ]),
            &subs,
        )
        .expect("helper")
        .expect("args");
        assert_eq!(
            (a.source.as_str(), a.mountpoint.to_str()),
            ("none", Some("/mnt"))
        );
        assert_eq!(a.options, vec!["rw,dirs=/a=rw,dev,suid"]);
        let a = helper_invocation(
            &argv(&[
                "/sbin/mount.fuse.cowfs",
                "src",
                "/m",
                "-n",
                "-o",
                "dirs=/a",
                "-t",
                "fuse.cowfs",
                "-v",
            ]),
            &subs,
        )
        .expect("helper")
        .expect("args");
        assert_eq!(a.source, "src");
        assert!(
            helper_invocation(&argv(&["mount.fuse.cowfs", "src", "/m"]), &subs)
                .expect("helper")
                .is_err()
        );
        assert!(
            helper_invocation(
                &argv(&["mount.fuse.cowfs", "a", "/m", "-o", "x", "-t", "ext4"]),
                &subs
            )
            .expect("helper")
            .is_err()
        );
    }
}
