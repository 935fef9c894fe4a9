//! Mount options, in the three dialects a union gets mounted with:
//! - UnionFS: `dirs=/g/vs04diff=rw:/g/noportage=ro:/g/master=ro` (leftmost first; a branch
//!   without `=rw`/`=ro` is writable, as in UnionFS — writes still go to the leftmost one);
//! - overlayfs: `lowerdir=/l1:/l2,upperdir=/u,workdir=/w` (`upperdir` becomes the writable
//!   leftmost branch, then the lower dirs left to right);
//! - FUSE / mount(8): `ro`, `allow_other`, `nodev`, `fsname=`, … plus the options mount(8) and
//!   fstab add that mean nothing to a filesystem (`defaults`, `noauto`, `_netdev`, …).
//!
//! `\` escapes `,` `:` `=` and itself inside values, as overlayfs does for `:`.

use std::path::PathBuf;
use std::time::Duration;

use crate::branch::BranchMode;
use crate::fuse::KernelCache;

/// Default entry and attribute timeout.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A branch as named in the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchSpec {
    pub path: PathBuf,
    pub mode: BranchMode,
}

/// Everything `cowfs mount` and the mount helper accept.
#[derive(Clone, Debug, PartialEq)]
pub struct MountOptions {
    /// The source shown in /proc/mounts (`fsname=` or the mount source).
    pub fsname: String,
    pub branches: Vec<BranchSpec>,
    /// overlayfs-style `workdir=` for the writable branch.
    pub workdir: Option<PathBuf>,
    pub read_only: bool,
    /// Let every user (not only root) use the mount: guests have many users.
    pub allow_other: bool,
    pub dev: bool,
    pub suid: bool,
    pub exec: bool,
    pub noatime: bool,
    pub sync: bool,
    pub dirsync: bool,
    /// Request-serving threads (`threads=N`).
    pub threads: usize,
    /// One /dev/fuse descriptor per thread (`clone_fd`, default on).
    pub clone_fd: bool,
    pub entry_timeout: Duration,
    pub attr_timeout: Duration,
    pub negative_timeout: Duration,
    /// The kernel shortcuts (`passthrough`, `keep_cache`, `cache_dir`, `opendir`,
    /// `readdirplus`, `cache_symlinks`, `parallel_dirops`, each with a `no` form).
    pub kernel: KernelCache,
}

impl MountOptions {
    fn defaults(source: &str) -> MountOptions {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        MountOptions {
            fsname: if source.is_empty() || source == "none" {
                "cowfs".to_string()
            } else {
                source.to_string()
            },
            branches: Vec::new(),
            workdir: None,
            read_only: false,
            allow_other: true,
            dev: true,
            suid: true,
            exec: true,
            noatime: false,
            sync: false,
            dirsync: false,
            threads: cores.clamp(2, 8),
            clone_fd: true,
            // The daemon is the only writer and tells the kernel whenever the view changes
            // behind its back (copy-up, link break, branch change), so cached names and
            // attributes stay right for as long as the kernel cares to keep them.
            entry_timeout: LONG_TIMEOUT,
            attr_timeout: LONG_TIMEOUT,
            negative_timeout: LONG_TIMEOUT,
            kernel: KernelCache::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error(
        "no branches given: use -o dirs=BRANCH[=rw|ro]:BRANCH… or -o lowerdir=DIR[:DIR…][,upperdir=DIR,workdir=DIR]"
    )]
    NoBranches,
    #[error("dirs= cannot be combined with lowerdir=/upperdir=/workdir=")]
    MixedSyntax,
    #[error("unknown mount option '{0}'")]
    Unknown(String),
    #[error("mount option '{option}': {reason}")]
    Invalid { option: String, reason: String },
    #[error("{0}= given twice")]
    Repeated(&'static str),
    #[error("workdir= needs upperdir= (the work directory belongs to the writable branch)")]
    WorkdirWithoutUpper,
    #[error("branch {0} is listed twice")]
    DuplicateBranch(PathBuf),
    #[error(
        "noopen needs a union without a writable branch ({0} is writable): files read without being opened cannot be copied up before a write"
    )]
    NoOpenWithWritableBranch(PathBuf),
}

/// Splits at unescaped `sep`, keeping escapes (they are resolved at the leaves).
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(next) = chars.next() {
                cur.push(next);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn invalid(option: &str, reason: impl Into<String>) -> OptionsError {
    OptionsError::Invalid {
        option: option.to_string(),
        reason: reason.into(),
    }
}

fn path_list(option: &str, value: &str) -> Result<Vec<PathBuf>, OptionsError> {
    split_escaped(value, ':')
        .iter()
        .map(|p| one_path(option, p))
        .collect()
}

/// An unescaped path, which must not be empty: `\` alone escapes nothing and leaves nothing.
fn one_path(option: &str, value: &str) -> Result<PathBuf, OptionsError> {
    let path = unescape(value);
    if path.is_empty() {
        return Err(invalid(option, "empty directory in the list"));
    }
    Ok(PathBuf::from(path))
}

/// `dirs=` entries: `PATH`, `PATH=rw` or `PATH=ro`.
fn unionfs_dirs(option: &str, value: &str) -> Result<Vec<BranchSpec>, OptionsError> {
    let mut out = Vec::new();
    for (i, entry) in split_escaped(value, ':').iter().enumerate() {
        let (path, mode) = match split_escaped(entry, '=').as_slice() {
            [path] => (
                path.clone(),
                if i == 0 {
                    BranchMode::Rw
                } else {
                    BranchMode::Ro
                },
            ),
            [path, mode] => (
                path.clone(),
                mode.parse::<BranchMode>().map_err(|e| invalid(option, e))?,
            ),
            _ => {
                return Err(invalid(
                    option,
                    format!("cannot read branch '{entry}' (escape '=' in paths as '\\=')"),
                ));
            }
        };
        if unescape(&path).is_empty() {
            return Err(invalid(option, "empty branch path"));
        }
        out.push(BranchSpec {
            path: PathBuf::from(unescape(&path)),
            mode,
        });
    }
    Ok(out)
}

fn need_value<'v>(option: &str, value: Option<&'v str>) -> Result<&'v str, OptionsError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(option, "needs a value"))
}

/// A size in bytes, with an optional K, M or G suffix (powers of 1024).
fn bytes(option: &str, value: &str) -> Result<u64, OptionsError> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, 'k' | 'K')) => (&value[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&value[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&value[..i], 1 << 30),
        _ => (value, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            invalid(
                option,
                format!("'{value}' is not a size (bytes, or with K/M/G)"),
            )
        })
}

fn seconds(option: &str, value: &str) -> Result<Duration, OptionsError> {
    let secs: f64 = value
        .parse()
        .map_err(|_| invalid(option, format!("'{value}' is not a number of seconds")))?;
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(invalid(option, "out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Options that mount(8), fstab or mount.fuse pass along and that mean nothing here.
fn is_ignored(option: &str) -> bool {
    matches!(
        option,
        "defaults"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "_netdev"
            | "nofail"
            | "default_permissions"
            | "relatime"
            | "strictatime"
            | "lazytime"
            | "nodiratime"
            | "diratime"
            | "async"
            | "subtype=cowfs"
    ) || option.starts_with("x-")
        || option.starts_with("comment=")
}

/// Parses the mount source and the `-o` strings (several `-o` are joined, as mount(8) does).
pub fn parse(source: &str, option_strings: &[&str]) -> Result<MountOptions, OptionsError> {
    let mut o = MountOptions::defaults(source);
    let mut dirs: Option<Vec<BranchSpec>> = None;
    let mut lower: Option<Vec<PathBuf>> = None;
    let mut upper: Option<PathBuf> = None;
    for s in option_strings {
        for opt in split_escaped(s, ',') {
            if opt.is_empty() || is_ignored(&opt) {
                continue;
            }
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            let need = |v| need_value(key, v);
            match key {
                "dirs" | "br" => {
                    if dirs.is_some() {
                        return Err(OptionsError::Repeated("dirs"));
                    }
                    dirs = Some(unionfs_dirs(key, need(value)?)?);
                }
                "lowerdir" => {
                    if lower.is_some() {
                        return Err(OptionsError::Repeated("lowerdir"));
                    }
                    lower = Some(path_list(key, need(value)?)?);
                }
                "upperdir" => {
                    if upper.is_some() {
                        return Err(OptionsError::Repeated("upperdir"));
                    }
                    upper = Some(one_path(key, need(value)?)?);
                }
                "workdir" => {
                    if o.workdir.is_some() {
                        return Err(OptionsError::Repeated("workdir"));
                    }
                    o.workdir = Some(one_path(key, need(value)?)?);
                }
                "fsname" => o.fsname = unescape(need(value)?),
                "ro" => o.read_only = true,
                "rw" => o.read_only = false,
                "allow_other" => o.allow_other = true,
                "allow_root" => o.allow_other = false,
                "dev" => o.dev = true,
                "nodev" => o.dev = false,
                "suid" => o.suid = true,
                "nosuid" => o.suid = false,
                "exec" => o.exec = true,
                "noexec" => o.exec = false,
                "atime" => o.noatime = false,
                "noatime" => o.noatime = true,
                "sync" => o.sync = true,
                "dirsync" => o.dirsync = true,
                "clone_fd" => o.clone_fd = true,
                "noclone_fd" => o.clone_fd = false,
                "threads" | "max_threads" => {
                    let v = need(value)?;
                    o.threads = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=256).contains(n))
                        .ok_or_else(|| {
                            invalid(key, format!("'{v}' is not a thread count (1–256)"))
                        })?;
                }
                "passthrough" => o.kernel.passthrough = true,
                "nopassthrough" => o.kernel.passthrough = false,
                "keep_cache" => o.kernel.keep_cache = true,
                "nokeep_cache" => o.kernel.keep_cache = false,
                "cache_dir" => o.kernel.cache_dir = true,
                "nocache_dir" => o.kernel.cache_dir = false,
                "opendir" => o.kernel.opendir = true,
                "noopendir" => o.kernel.opendir = false,
                "open" => o.kernel.open = true,
                "noopen" => o.kernel.open = false,
                "passthrough_min" => o.kernel.passthrough_min = bytes(key, need(value)?)?,
                "cache_symlinks" => o.kernel.cache_symlinks = true,
                "nocache_symlinks" => o.kernel.cache_symlinks = false,
                "parallel_dirops" => o.kernel.parallel_dirops = true,
                "noparallel_dirops" => o.kernel.parallel_dirops = false,
                "readdirplus" => o.kernel.readdirplus = true,
                "noreaddirplus" => o.kernel.readdirplus = false,
                "entry_timeout" => o.entry_timeout = seconds(key, need(value)?)?,
                "attr_timeout" => o.attr_timeout = seconds(key, need(value)?)?,
                "negative_timeout" => o.negative_timeout = seconds(key, need(value)?)?,
                _ => return Err(OptionsError::Unknown(opt.clone())),
            }
        }
    }
    let overlay = lower.is_some() || upper.is_some();
    o.branches = match (dirs, overlay) {
        (Some(_), true) => return Err(OptionsError::MixedSyntax),
        (Some(d), false) => {
            if o.workdir.is_some() {
                return Err(OptionsError::MixedSyntax);
            }
            d
        }
        (None, true) => {
            if o.workdir.is_some() && upper.is_none() {
                return Err(OptionsError::WorkdirWithoutUpper);
            }
            let mut b: Vec<BranchSpec> = upper
                .into_iter()
                .map(|path| BranchSpec {
                    path,
                    mode: BranchMode::Rw,
                })
                .collect();
            b.extend(
                lower
                    .unwrap_or_default()
                    .into_iter()
                    .map(|path| BranchSpec {
                        path,
                        mode: BranchMode::Ro,
                    }),
            );
            b
        }
        (None, false) => return Err(OptionsError::NoBranches),
    };
    if o.branches.is_empty() {
        return Err(OptionsError::NoBranches);
    }
    for (i, b) in o.branches.iter().enumerate() {
        if o.branches[..i].iter().any(|p| p.path == b.path) {
            return Err(OptionsError::DuplicateBranch(b.path.clone()));
        }
    }
    if !o.kernel.open
        && let Some(rw) = o.branches.iter().find(|b| b.mode == BranchMode::Rw)
    {
        return Err(OptionsError::NoOpenWithWritableBranch(rw.path.clone()));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(o: &MountOptions) -> Vec<(String, BranchMode)> {
        o.branches
            .iter()
            .map(|b| (b.path.display().to_string(), b.mode))
            .collect()
    }

    #[test]
    fn unionfs_syntax() {
        let o = parse(
            "none",
            &["dirs=/g/vs04diff=rw:/g/noportage=ro:/g/master=ro"],
        )
        .expect("parse");
        assert_eq!(
            paths(&o),
            vec![
                ("/g/vs04diff".into(), BranchMode::Rw),
                ("/g/noportage".into(), BranchMode::Ro),
                ("/g/master".into(), BranchMode::Ro)
            ]
        );
        assert_eq!(o.fsname, "cowfs");
        let o = parse("guest4", &["dirs=/a:/b"]).expect("parse");
        assert_eq!(
            paths(&o),
            vec![("/a".into(), BranchMode::Rw), ("/b".into(), BranchMode::Ro)]
        );
        assert_eq!(o.fsname, "guest4");
    }

    #[test]
    fn overlay_syntax() {
        let o = parse("overlay", &["lowerdir=/l1:/l2,upperdir=/u,workdir=/w"]).expect("parse");
        assert_eq!(
            paths(&o),
            vec![
                ("/u".into(), BranchMode::Rw),
                ("/l1".into(), BranchMode::Ro),
                ("/l2".into(), BranchMode::Ro)
            ]
        );
        assert_eq!(o.workdir, Some(PathBuf::from("/w")));
        let o = parse("x", &["lowerdir=/only"]).expect("read-only union");
        assert_eq!(paths(&o), vec![("/only".into(), BranchMode::Ro)]);
    }

    #[test]
    fn escapes_and_fuse_options() {
        let o = parse(
            "x",
            &["dirs=/with\\:colon=rw:/with\\,comma\\=eq=ro", "ro,nodev,nosuid,threads=4,noclone_fd,entry_timeout=2.5,_netdev,x-systemd.automount"],
        )
        .expect("parse");
        assert_eq!(
            paths(&o),
            vec![
                ("/with:colon".into(), BranchMode::Rw),
                ("/with,comma=eq".into(), BranchMode::Ro)
            ]
        );
        assert!(o.read_only && !o.dev && !o.suid && !o.clone_fd);
        assert_eq!(o.threads, 4);
        assert_eq!(o.entry_timeout, Duration::from_millis(2500));
        let o = parse(
            "none",
            &["dirs=/a,nopassthrough,passthrough_min=4M,opendir,noreaddirplus,nocache_symlinks,noparallel_dirops"],
        )
        .expect("kernel options");
        assert!(!o.kernel.passthrough && o.kernel.opendir && !o.kernel.readdirplus);
        assert!(!o.kernel.cache_symlinks && !o.kernel.parallel_dirops);
        assert_eq!(o.kernel.passthrough_min, 4 << 20);
        let o = parse("none", &["dirs=/a=ro:/b=ro,noopen"]).expect("noopen, read-only");
        assert!(!o.kernel.open);
        for writable in [
            "dirs=/a=rw:/b=ro,noopen",
            "dirs=/a:/b=ro,noopen",
            "lowerdir=/b,upperdir=/a,workdir=/w,noopen",
        ] {
            let e = parse("none", &[writable]).expect_err(writable);
            assert!(
                matches!(e, OptionsError::NoOpenWithWritableBranch(_)),
                "{writable}: {e}"
            );
        }
        for bad in [
            "passthrough_min=",
            "passthrough_min=4X",
            "passthrough_min=-1",
        ] {
            assert!(
                parse("none", &["dirs=/a", bad]).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn clear_errors() {
        assert_eq!(parse("x", &["ro"]), Err(OptionsError::NoBranches));
        assert_eq!(
            parse("x", &["dirs=/a,lowerdir=/b"]),
            Err(OptionsError::MixedSyntax)
        );
        assert_eq!(
            parse("x", &["dirs=/a,bogus"]),
            Err(OptionsError::Unknown("bogus".into()))
        );
        assert_eq!(
            parse("x", &["lowerdir=/a,workdir=/w"]),
            Err(OptionsError::WorkdirWithoutUpper)
        );
        assert_eq!(
            parse("x", &["dirs=/a:/a"]),
            Err(OptionsError::DuplicateBranch("/a".into()))
        );
        assert!(matches!(
            parse("x", &["dirs=/a=rx"]),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            parse("x", &["dirs=/a::/b"]),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            parse("x", &["dirs=/a,threads=0"]),
            Err(OptionsError::Invalid { .. })
        ));
        assert!(matches!(
            parse("x", &["dirs="]),
            Err(OptionsError::Invalid { .. })
        ));
        assert_eq!(
            parse("x", &["dirs=/a,dirs=/b"]),
            Err(OptionsError::Repeated("dirs"))
        );
        // Found by fuzzing (fuzz/mount_options): a lone escape is no path.
        for bad in [
            "dirs=\\",
            "dirs=/a:\\",
            "lowerdir=\\",
            "lowerdir=/a,upperdir=\\",
            "lowerdir=/a,upperdir=/u,workdir=\\",
        ] {
            assert!(
                matches!(parse("x", &[bad]), Err(OptionsError::Invalid { .. })),
                "{bad}"
            );
        }
        let msg = parse("x", &["nodev"]).expect_err("no branches").to_string();
        assert!(msg.contains("dirs="), "{msg}");
    }

    #[test]
    fn mount_helper_extras_are_accepted() {
        // What mount(8) + mount.fuse3 pass for an fstab line.
        let o = parse(
            "none",
            &["rw,dirs=/a=rw:/b=ro,dev,suid,defaults,noauto,nofail"],
        )
        .expect("parse");
        assert!(o.dev && o.suid && !o.read_only);
    }
}
