//! Exclude lists in util-vserver's format (`vunify-exclude`): one shell glob per line, matched
//! like `fnmatch(3)` without flags (so `*` also matches `/`) against the path relative to the
//! guest root written with a leading `/`. A `+` prefix includes, `-` or no prefix excludes, `~`
//! skips; the first matching line wins; blank lines and `#` comments are ignored. As in
//! util-vserver's vhashify, an excluded or skipped directory is not descended into. The two differ
//! only in reporting: skipped paths (pseudo filesystems, runtime directories) are not counted as
//! excluded.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// What the list says about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Unify it (and descend into it).
    Include,
    /// Do not unify it, do not descend; counted as excluded.
    Exclude,
    /// Do not unify it, do not descend, silently.
    Skip,
}

/// The built-in policy: util-vserver's `vunify-exclude` adapted to a Debian-style guest, where
/// `/var` holds much static package data (apt lists, dpkg info) that is safe to share, so only its
/// run-time parts are left out. Copy-on-write through the mount makes unifying a file that a
/// guest later writes safe; these are left out because they are private to each guest (identity,
/// accounts, keys) or change constantly.
pub const DEFAULT_EXCLUDES: &str = "\
# cowfs default unification policy (util-vserver vunify-exclude format).
# Pseudo and run-time file systems: never unified, not even looked at.
~/dev
~/proc
~/sys
~/run
~/tmp
~/var/tmp
~/var/run
~/var/lock
~/lost+found
# Data that changes while a guest runs.
/var/log
/var/spool
/var/cache
/var/mail
/var/backups
/var/lib/systemd
/var/lib/dhcp
# Private data of the guest's users.
/home
/root
/mnt
/media
# The writable parts of /etc: accounts, host identity, generated files, keys.
/etc/passwd*
/etc/shadow*
/etc/group*
/etc/gshadow*
/etc/subuid*
/etc/subgid*
/etc/.pwd.lock
/etc/hostname
/etc/hosts
/etc/mailname
/etc/resolv.conf
/etc/mtab
/etc/machine-id
/etc/adjtime
/etc/fstab
/etc/timezone
/etc/localtime
/etc/ld.so.cache
/etc/ssh/ssh_host_*
/etc/ssl/private
";

/// A compiled exclude list.
#[derive(Clone, Debug)]
pub struct ExcludeList {
    set: GlobSet,
    rules: Vec<Rule>,
    sources: Vec<String>,
}

impl Default for ExcludeList {
    /// The empty list: everything is included.
    fn default() -> Self {
        ExcludeList {
            set: GlobSet::empty(),
            rules: Vec::new(),
            sources: Vec::new(),
        }
    }
}

impl ExcludeList {
    /// Parses `text`; errors name `origin` and the line.
    pub fn parse(text: &str, origin: &Path) -> Result<ExcludeList> {
        let mut list = ExcludeList::default();
        list.append(text, origin)?;
        Ok(list)
    }

    /// The built-in default list.
    pub fn defaults() -> ExcludeList {
        // The built-in text is covered by a unit test; failing to parse it is a bug.
        ExcludeList::parse(DEFAULT_EXCLUDES, Path::new("<built-in default excludes>"))
            .unwrap_or_default()
    }

    /// Reads and appends the lines of `file` (after the rules already present: those win).
    pub fn append_file(&mut self, file: &Path) -> Result<()> {
        let text = std::fs::read(file).map_err(|source| Error::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(text).map_err(|_| Error::ExcludeSyntax {
            file: file.to_path_buf(),
            line: 0,
            message: "not valid UTF-8".into(),
        })?;
        self.append(&text, file)
    }

    /// Appends the lines of `text` (read from `origin`).
    pub fn append(&mut self, text: &str, origin: &Path) -> Result<()> {
        let mut builder = GlobSetBuilder::new();
        let mut rules = self.rules.clone();
        let mut sources = self.sources.clone();
        for src in &self.sources {
            builder.add(compile(src).map_err(|m| syntax(origin, 0, m))?);
        }
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim_end();
            if line.trim_start().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (rule, pattern) = match line.as_bytes()[0] {
                b'+' => (Rule::Include, &line[1..]),
                b'~' => (Rule::Skip, &line[1..]),
                b'-' => (Rule::Exclude, &line[1..]),
                _ => (Rule::Exclude, line),
            };
            if pattern.is_empty() {
                return Err(syntax(origin, line_no, "empty pattern".into()));
            }
            if !pattern.starts_with('/') {
                return Err(syntax(
                    origin,
                    line_no,
                    format!(
                        "pattern {pattern:?} must start with '/' (paths are relative to the guest root, written as /etc/...)"
                    ),
                ));
            }
            let pattern = if pattern.len() > 1 {
                pattern.trim_end_matches('/')
            } else {
                pattern
            };
            builder.add(compile(pattern).map_err(|m| syntax(origin, line_no, m))?);
            rules.push(rule);
            sources.push(pattern.to_string());
        }
        self.set = builder
            .build()
            .map_err(|e| syntax(origin, 0, e.to_string()))?;
        self.rules = rules;
        self.sources = sources;
        Ok(())
    }

    /// What the list says about `rel` (relative to the guest root, without a leading `/`).
    pub fn rule_for(&self, rel: &Path) -> Rule {
        if self.rules.is_empty() {
            return Rule::Include;
        }
        let mut abs = PathBuf::from("/");
        abs.push(rel);
        self.set
            .matches(&abs)
            .into_iter()
            .min()
            .map_or(Rule::Include, |i| self.rules[i])
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// No rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn compile(pattern: &str) -> std::result::Result<globset::Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("invalid pattern {pattern:?}: {}", e.kind()))
}

fn syntax(origin: &Path, line: usize, message: String) -> Error {
    Error::ExcludeSyntax {
        file: origin.to_path_buf(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> ExcludeList {
        ExcludeList::parse(text, Path::new("t")).expect("valid list")
    }

    #[test]
    fn prefixes_and_first_match_wins() {
        let l = list("# comment\n\n+/etc/termcap\n~/etc/shadow\n/etc/*\n-/var\n");
        assert_eq!(l.rule_for(Path::new("etc/termcap")), Rule::Include);
        assert_eq!(l.rule_for(Path::new("etc/shadow")), Rule::Skip);
        assert_eq!(l.rule_for(Path::new("etc/passwd")), Rule::Exclude);
        // `*` crosses `/`, as fnmatch without FNM_PATHNAME does.
        assert_eq!(l.rule_for(Path::new("etc/ssh/sshd_config")), Rule::Exclude);
        assert_eq!(l.rule_for(Path::new("etc")), Rule::Include);
        assert_eq!(l.rule_for(Path::new("var")), Rule::Exclude);
        assert_eq!(l.rule_for(Path::new("usr/bin/ls")), Rule::Include);
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line) in [("/ok\nrelative/path\n", 2), ("\n\n+\n", 3), ("/a[\n", 1)] {
            match ExcludeList::parse(text, Path::new("my.list")) {
                Err(Error::ExcludeSyntax { file, line: l, .. }) => {
                    assert_eq!(file, Path::new("my.list"));
                    assert_eq!(l, line, "{text:?}");
                }
                other => panic!("{text:?}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn default_list_parses_and_covers_the_required_paths() {
        let l = ExcludeList::parse(DEFAULT_EXCLUDES, Path::new("default")).expect("parses");
        for p in [
            "dev",
            "proc",
            "sys",
            "tmp",
            "var/run",
            "var/lock",
            "var/log",
            "var/spool",
            "var/cache",
            "etc/shadow",
            "etc/passwd",
            "etc/hostname",
            "etc/ssh/ssh_host_rsa_key",
        ] {
            assert_ne!(l.rule_for(Path::new(p)), Rule::Include, "{p}");
        }
        for p in [
            "usr/bin/ls",
            "var/lib/dpkg/info/bash.list",
            "etc/bash.bashrc",
        ] {
            assert_eq!(l.rule_for(Path::new(p)), Rule::Include, "{p}");
        }
    }

    #[test]
    fn appended_rules_come_after_existing_ones() {
        let mut l = list("+/usr/share/doc\n");
        l.append("/usr/share/*\n", Path::new("second"))
            .expect("valid");
        assert_eq!(l.rule_for(Path::new("usr/share/doc")), Rule::Include);
        assert_eq!(l.rule_for(Path::new("usr/share/man")), Rule::Exclude);
    }
}
