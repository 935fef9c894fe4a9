//! Read-path benchmark (issue 5): the same guest root and 1 GiB file served by a native
//! directory, kernel overlayfs, fuse-overlayfs and cowfs, cold and warm, medians of N runs.
//!
//!     cargo bench --bench read_path -- [--runs 5] [--targets a,b] [--workloads a,b] [--no-cold]
//!
//! Prints a Markdown table and writes it with an SVG chart under `docs/benchmarks/`.
//! Needs root, the corpus (`scripts/install-deps.sh --bench`) and fio, fuse-overlayfs.

mod data;
mod roundtrip;
mod targets;
mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use cowfs::report::{self, BarGroup, Table};

use crate::targets::Target;
use crate::workloads::{Metric, Workload};

#[derive(Parser, Debug)]
#[command(about = "Read-path benchmark of cowfs against native, overlayfs and fuse-overlayfs")]
struct Args {
    /// Measured runs per (target, workload, cache state); the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Only these targets (native, overlayfs, fuse-overlayfs, cowfs, cowfs-nopt).
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,
    /// Only these workloads (seqread, randread, walk, smallread, untar, copyup, dpkg).
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Skip the cold-cache runs.
    #[arg(long)]
    no_cold: bool,
    /// Scratch directory for the data set and the mounts (on the filesystem under test).
    #[arg(long, default_value = "/var/tmp/cowfs-bench-read")]
    dir: PathBuf,
    /// Where the Markdown report and the chart go.
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Medians keyed by (workload, cold?) then target name.
type Results = BTreeMap<(String, bool), BTreeMap<String, f64>>;

/// Requests a cowfs daemon received during one run, keyed like `Results`, then by kind.
type Requests = BTreeMap<(String, bool), BTreeMap<String, BTreeMap<String, u64>>>;

fn main() -> Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let data = data::DataSet::prepare(&args.dir).context("preparing the data set")?;
    let targets: Vec<Target> = targets::all()
        .into_iter()
        .filter(|t| selected(&args.targets, t.name))
        .collect();
    let workloads: Vec<Workload> = workloads::all()
        .into_iter()
        .filter(|w| selected(&args.workloads, w.name))
        .collect();

    let load_at_start = load_average();
    let mut results = Results::new();
    let mut requests = Requests::new();
    for target in &targets {
        for workload in &workloads {
            if workload.writes() && !target.is_writable() {
                continue;
            }
            for cold in [true, false] {
                if cold && args.no_cold {
                    continue;
                }
                let measured = workloads::measure(target, workload, &data, cold, args.runs)
                    .with_context(|| {
                        format!("{} on {} ({})", workload.name, target.name, state(cold))
                    })?;
                let samples = measured.samples;
                if let Some(r) = measured.requests {
                    requests
                        .entry((workload.name.to_string(), cold))
                        .or_default()
                        .insert(target.name.to_string(), r);
                }
                let median = report::median(&samples).unwrap_or(f64::NAN);
                eprintln!(
                    "{:>14} {:>9} {:>4}: {} (runs: {})",
                    target.name,
                    workload.name,
                    state(cold),
                    workload.metric.format(median),
                    samples
                        .iter()
                        .map(|s| workload.metric.format(*s))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                results
                    .entry((workload.name.to_string(), cold))
                    .or_default()
                    .insert(target.name.to_string(), median);
            }
        }
    }

    let mut markdown = render(&results, &targets, &workloads, args.runs);
    markdown.push_str(&format!(
        "\nMachine: Linux {}, {} CPUs; load average {} at the start, {} at the end (other \
         jobs may share this machine). Command: `cargo bench --bench read_path -- --runs {}`.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_at_start,
        load_average(),
        args.runs
    ));
    let rt = if targets.iter().any(|t| targets::cowfs_options(t).is_some()) {
        Some(roundtrip::measure(&data).context("measuring a FUSE round trip")?)
    } else {
        None
    };
    markdown.push_str(&render_requests(
        &requests, &results, &targets, &workloads, rt,
    ));
    let (memory, rss) = daemon_memory(&targets, &data)?;
    markdown.push_str(&render_targets(
        &results,
        &requests,
        rss.get("cowfs").copied(),
    ));
    markdown.push_str(&memory);
    println!("{markdown}");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("read-path.md"), &markdown)?;
    for cold in [false, true] {
        let groups = chart_groups(&results, &targets, &workloads, cold);
        if groups.is_empty() {
            continue;
        }
        let path = args.out.join(format!("read-path-{}.svg", state(cold)));
        report::grouped_bar_chart(
            &path,
            &format!(
                "Read path, {} cache: time relative to native (lower is better)",
                state(cold)
            ),
            "× native",
            &groups,
        )
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Peak RSS of each FUSE daemon after a metadata walk of all three corpus guests: the report
/// section, and the figures by target.
fn daemon_memory(
    targets: &[Target],
    data: &data::DataSet,
) -> Result<(String, BTreeMap<String, u64>)> {
    let mut table = Table::new(&["target", "daemon peak RSS after walking g1, g2, g3"]);
    let mut by_target = BTreeMap::new();
    for target in targets {
        let mounted = target.mount(data)?;
        if mounted.daemon.is_none() {
            continue;
        }
        for guest in ["g1", "g2", "g3"] {
            workloads::walk_tree(&mounted.root.join(guest))?;
        }
        let rss = mounted
            .daemon_peak_rss()
            .with_context(|| format!("reading the peak RSS of {}'s daemon", target.name))?;
        table.row(&[
            target.name.to_string(),
            format!("{:.1} MiB", rss as f64 / 1048576.0),
        ]);
        by_target.insert(target.name.to_string(), rss);
    }
    Ok((
        format!("\n## Daemon memory\n\n{}", table.to_markdown()),
        by_target,
    ))
}

/// The targets of issue 5, checked against the default cowfs mount of this run.
fn render_targets(results: &Results, requests: &Requests, rss: Option<u64>) -> String {
    let get = |w: &str, cold: bool, t: &str| {
        results
            .get(&(w.to_string(), cold))
            .and_then(|m| m.get(t))
            .copied()
    };
    let mut table = Table::new(&["target", "measured", ""]);
    let mut row = |what: String, measured: Option<f64>, ok: &dyn Fn(f64) -> bool, unit: &str| {
        let (m, verdict) = match measured {
            Some(v) if v.is_finite() => (
                format!("{v:.2}{unit}"),
                if ok(v) { "met" } else { "**not met**" },
            ),
            _ => ("–".to_string(), "not measured"),
        };
        table.row(&[what, m, verdict.to_string()]);
    };
    for (w, label) in [
        ("seqread", "sequential read"),
        ("randread", "random 4 KiB read"),
    ] {
        for cold in [true, false] {
            let ratio = get(w, cold, "cowfs")
                .zip(get(w, cold, "native"))
                .map(|(c, n)| c / n);
            row(
                format!("{label}, {}: ≥ 0.9 × native", state(cold)),
                ratio,
                &|r| r >= 0.9,
                " ×",
            );
            let reads = requests
                .get(&(w.to_string(), cold))
                .and_then(|m| m.get("cowfs"))
                .map(|r| r.get("read").copied().unwrap_or(0) as f64);
            row(
                format!("{label}, {}: READ requests = 0", state(cold)),
                reads,
                &|n| n == 0.0,
                "",
            );
        }
    }
    for (w, cold, limit, label) in [
        ("walk", false, 1.2, "metadata walk, warm: ≤ 1.2 × overlayfs"),
        ("walk", true, 1.5, "metadata walk, cold: ≤ 1.5 × overlayfs"),
        (
            "smallread",
            false,
            2.0,
            "small-file read, warm: ≤ 2 × overlayfs",
        ),
        ("untar", false, 2.0, "untar, warm: ≤ 2 × overlayfs"),
        ("untar", true, 2.0, "untar, cold: ≤ 2 × overlayfs"),
    ] {
        let ratio = get(w, cold, "cowfs")
            .zip(get(w, cold, "overlayfs"))
            .map(|(c, o)| c / o);
        row(label.to_string(), ratio, &|r| r <= limit, " ×");
    }
    row(
        "daemon peak RSS after walking g1, g2, g3: ≤ 100 MiB".to_string(),
        rss.map(|b| b as f64 / 1048576.0),
        &|m| m <= 100.0,
        " MiB",
    );
    format!(
        "\n## Targets (issue 5), default cowfs mount\n\n{}",
        table.to_markdown()
    )
}

/// The first three fields of /proc/loadavg.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn selected(filter: &Option<Vec<String>>, name: &str) -> bool {
    filter
        .as_ref()
        .is_none_or(|names| names.iter().any(|n| n == name))
}

fn state(cold: bool) -> &'static str {
    if cold { "cold" } else { "warm" }
}

fn render(results: &Results, targets: &[Target], workloads: &[Workload], runs: usize) -> String {
    let mut headers = vec!["workload".to_string(), "cache".to_string()];
    headers.extend(targets.iter().map(|t| t.name.to_string()));
    headers.push("vs native / vs overlayfs (last target)".to_string());
    let mut table = Table::new(&headers);
    for workload in workloads {
        for cold in [false, true] {
            let Some(by_target) = results.get(&(workload.name.to_string(), cold)) else {
                continue;
            };
            let mut row = vec![workload.name.to_string(), state(cold).to_string()];
            for t in targets {
                row.push(
                    by_target
                        .get(t.name)
                        .map_or("–".into(), |v| workload.metric.format(*v)),
                );
            }
            let last = targets.last().and_then(|t| by_target.get(t.name)).copied();
            let rel = |base: &str| match (last, by_target.get(base)) {
                (Some(v), Some(b)) => {
                    report::ratio_cell(workload.metric.as_time(v), workload.metric.as_time(*b))
                }
                _ => "–".to_string(),
            };
            row.push(format!("{} / {}", rel("native"), rel("overlayfs")));
            table.row(&row);
        }
    }
    format!(
        "# Read-path benchmark\n\nMedians of {runs} runs. Time-like metrics: lower is better; \
         MB/s and IOPS: higher is better. Ratios compare the last target's time to native's and \
         overlayfs's (for throughput, the inverse ratio of throughputs).\n\n{}",
        table.to_markdown()
    )
}

fn chart_groups(
    results: &Results,
    targets: &[Target],
    workloads: &[Workload],
    cold: bool,
) -> Vec<BarGroup> {
    workloads
        .iter()
        .filter_map(|w| {
            let by_target = results.get(&(w.name.to_string(), cold))?;
            let native = w.metric.as_time(*by_target.get("native")?);
            let values = targets
                .iter()
                .filter_map(|t| {
                    let v = w.metric.as_time(*by_target.get(t.name)?);
                    Some((t.name.to_string(), v / native))
                })
                .collect();
            Some(BarGroup {
                label: w.name.to_string(),
                values,
            })
        })
        .collect()
}

/// Per workload: the requests each cowfs variant's daemon received in one run, the READ and
/// WRITE requests among them (zero when passthrough serves the data), and how much of the
/// measured time round trips explain (requests × the measured cost of one).
fn render_requests(
    requests: &Requests,
    results: &Results,
    targets: &[Target],
    workloads: &[Workload],
    rt: Option<roundtrip::RoundTrip>,
) -> String {
    let cowfs: Vec<&Target> = targets
        .iter()
        .filter(|t| targets::cowfs_options(t).is_some())
        .collect();
    if cowfs.is_empty() {
        return String::new();
    }
    let mut headers = vec!["workload".to_string(), "cache".to_string()];
    for t in &cowfs {
        headers.push(format!("{}: requests (read/write)", t.name));
        headers.push(format!("{}: round-trip share", t.name));
    }
    let mut table = Table::new(&headers);
    for w in workloads {
        for cold in [false, true] {
            let Some(by_target) = requests.get(&(w.name.to_string(), cold)) else {
                continue;
            };
            let mut row = vec![w.name.to_string(), state(cold).to_string()];
            for t in &cowfs {
                let Some(r) = by_target.get(t.name) else {
                    row.extend(["–".to_string(), "–".to_string()]);
                    continue;
                };
                let total: u64 = r
                    .iter()
                    .filter(|(k, _)| cowfs_fs::stats::is_request_name(k))
                    .map(|(_, v)| *v)
                    .sum();
                let get = |k: &str| r.get(k).copied().unwrap_or(0);
                row.push(format!("{total} ({}/{})", get("read"), get("write")));
                let time = results
                    .get(&(w.name.to_string(), cold))
                    .and_then(|m| m.get(t.name))
                    .filter(|_| matches!(w.metric, Metric::Seconds));
                row.push(match (rt, time) {
                    (Some(rt), Some(secs)) if *secs > 0.0 => format!(
                        "{:.0} %",
                        100.0 * total as f64 * rt.getattr_us * 1e-6 / secs
                    ),
                    _ => "–".to_string(),
                });
            }
            table.row(&row);
        }
    }
    let mut out = String::from("\n## Requests the cowfs daemon received (one run)\n\n");
    if let Some(rt) = rt {
        out.push_str(&format!(
            "One FUSE round trip here (GETATTR of one file with attribute caching off, {} \
             calls): **{:.1} µs**; an open+close through passthrough: {:.1} µs (a native \
             open+close: {:.1} µs). The round-trip share is requests × {:.1} µs over the \
             median time of the workload (for throughput workloads it is not computed).\n\n",
            rt.calls, rt.getattr_us, rt.open_close_us, rt.native_open_close_us, rt.getattr_us
        ));
    }
    out.push_str(&table.to_markdown());
    out
}

impl Metric {
    /// Turns throughput into something that grows with time, so ratios read the same way.
    fn as_time(self, value: f64) -> f64 {
        match self {
            Metric::Seconds => value,
            Metric::MegabytesPerSecond | Metric::Iops => 1.0 / value,
        }
    }
}
