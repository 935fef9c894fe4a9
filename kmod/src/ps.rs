//! Processes with their context, for `vps` / `cowfs ps`.
//!
//! A process belongs to a context when its cgroup v2 path is that context's cgroup (or below
//! it); every other process is the host's (xid 0). The listing is the spectator's view (xid 1):
//! all of them, with the context's id and name in front, as `vps aux` printed them.

use std::collections::HashMap;

use procfs::process::Process;
use serde::Serialize;

use crate::Result;
use crate::cgroup::Hierarchy;
use crate::context::XID_HOST;
use crate::lifecycle::StateDir;

#[derive(Debug, Clone, Serialize)]
pub struct ProcessRow {
    pub xid: u32,
    pub context: String,
    pub user: String,
    pub uid: u32,
    pub pid: i32,
    pub ppid: i32,
    pub cpu_percent: f64,
    pub mem_percent: f64,
    /// Virtual and resident size, in bytes.
    pub vsz: u64,
    pub rss: u64,
    pub tty: String,
    pub stat: String,
    /// CPU time used, in seconds.
    pub cpu_seconds: u64,
    pub command: String,
}

/// Which processes to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The spectator's view: every process.
    All,
    /// The processes of one context (0: the host's).
    Xid(u32),
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

fn tty_name(major: i32, minor: i32) -> String {
    match major {
        0 => "?".into(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => format!("{major}:{minor}"),
    }
}

fn read_number(path: &str, field: usize) -> Option<f64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .nth(field)?
        .parse()
        .ok()
}

/// Lists processes with their contexts.
pub fn list(state: &StateDir, filter: Filter) -> Result<Vec<ProcessRow>> {
    let hierarchy = Hierarchy::detect()?;
    let contexts: HashMap<String, (u32, String)> = state
        .registry_ref()
        .list()?
        .into_iter()
        .map(|c| (state.cgroup(&hierarchy, &c).relative(), (c.xid, c.name)))
        .collect();
    let context_of = |cgroup: &str| -> (u32, String) {
        contexts
            .iter()
            .find(|(path, _)| cgroup == path.as_str() || cgroup.starts_with(&format!("{path}/")))
            .map_or((XID_HOST, "host".to_string()), |(_, v)| v.clone())
    };
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    let uptime = read_number("/proc/uptime", 0).unwrap_or(0.0);
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(1.0, |kb| kb * 1024.0);
    let mut rows = Vec::new();
    let all = procfs::process::all_processes()
        .map_err(|e| crate::Error::io("listing /proc", std::io::Error::other(e)))?;
    for process in all.filter_map(|p| p.ok()) {
        // A process may exit while we read it: skip it then.
        let Some(row) = row(&process, &context_of, ticks, page, uptime, mem_total) else {
            continue;
        };
        let keep = match filter {
            Filter::All => true,
            Filter::Xid(x) => row.xid == x,
        };
        if keep {
            rows.push(row);
        }
    }
    rows.sort_by_key(|r| (r.xid, r.pid));
    Ok(rows)
}

fn row(
    p: &Process,
    context_of: &dyn Fn(&str) -> (u32, String),
    ticks: f64,
    page: u64,
    uptime: f64,
    mem_total: f64,
) -> Option<ProcessRow> {
    let stat = p.stat().ok()?;
    let uid = p.uid().ok()?;
    let cgroup = Hierarchy::cgroup_of(p.pid).ok()?;
    let (xid, context) = context_of(&cgroup);
    let cpu_ticks = (stat.utime + stat.stime) as f64;
    let elapsed = uptime - stat.starttime as f64 / ticks;
    let cmdline = p.cmdline().unwrap_or_default();
    let command = if cmdline.is_empty() {
        format!("[{}]", stat.comm)
    } else {
        cmdline.join(" ")
    };
    let rss = stat.rss * page;
    let (major, minor) = stat.tty_nr();
    Some(ProcessRow {
        xid,
        context,
        user: user_name(uid),
        uid,
        pid: p.pid,
        ppid: stat.ppid,
        cpu_percent: if elapsed > 0.0 {
            100.0 * cpu_ticks / ticks / elapsed
        } else {
            0.0
        },
        mem_percent: 100.0 * rss as f64 / mem_total,
        vsz: stat.vsize,
        rss,
        tty: tty_name(major, minor),
        stat: stat.state.to_string(),
        cpu_seconds: (cpu_ticks / ticks) as u64,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_this_process_as_the_hosts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("state dir");
        let rows = list(&state, Filter::Xid(XID_HOST)).expect("list");
        let me = rows
            .iter()
            .find(|r| r.pid == std::process::id() as i32)
            .expect("this process is listed");
        assert_eq!((me.xid, me.context.as_str()), (0, "host"));
        assert!(me.rss > 0 && me.command.contains("cowfs_kmod"), "{me:?}");
        assert!(list(&state, Filter::Xid(77)).expect("list").is_empty());
    }

    #[test]
    fn tty_names() {
        assert_eq!(tty_name(136, 3), "pts/3");
        assert_eq!(tty_name(4, 1), "tty1");
        assert_eq!(tty_name(0, 0), "?");
    }
}
