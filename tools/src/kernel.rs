//! `cowfs kernel probe`: what this kernel allows cowfs to do, asked of the kernel itself.

use std::process::ExitCode;

use cowfs_kmod::probe::{self, ProgramLoad};

use crate::common;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Try each feature: FUSE passthrough, every BPF program type, Landlock, cgroup2, namespaces.
    Probe {
        /// Print one JSON document (every probe and its outcome) on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn program_line(p: &ProgramLoad) -> String {
    if p.loaded {
        return format!("  {:<17} {:<16} loaded", p.program_type, p.program);
    }
    let mut line = format!(
        "  {:<17} {:<16} REFUSED: {}",
        p.program_type,
        p.program,
        p.error.as_deref().unwrap_or("?")
    );
    if p.errno == Some(EPERM) && matches!(p.program_type.as_str(), "lsm" | "fentry" | "fexit") {
        line.push_str(
            " (refused by this kernel before the verifier ran; cowfs does not depend on it)",
        );
    }
    line
}

/// errno 1: what this kernel answers for LSM, fentry and fexit programs.
const EPERM: i32 = 1;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Probe { json } = args.command;
    let r = probe::run();
    if json {
        common::print_json(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("kernel       {}", r.kernel);
    let f = &r.fuse;
    let flag = |b: Option<bool>| b.map_or("unknown", yes);
    println!(
        "FUSE         /dev/fuse {}; protocol {}; passthrough {}; io_uring {} ({})",
        if f.dev_fuse { "present" } else { "missing" },
        f.protocol.as_deref().unwrap_or("unknown"),
        flag(f.passthrough),
        flag(f.io_uring),
        f.detail
    );
    match &r.cgroup2 {
        Some(m) => println!(
            "cgroup2      {} (this process: {})",
            m.display(),
            r.own_cgroup.as_deref().unwrap_or("?")
        ),
        None => println!("cgroup2      NOT MOUNTED: contexts cannot run"),
    }
    match &r.bpffs {
        Some(m) => println!("bpffs        {}", m.display()),
        None => println!(
            "bpffs        not mounted (cowfs mounts it on /sys/fs/bpf when a context starts)"
        ),
    }
    match &r.tracefs {
        Some(m) => println!("tracefs      {}", m.display()),
        None => println!(
            "tracefs      not mounted (classic tracepoints cannot attach; cowfs uses raw_tp)"
        ),
    }
    println!("kernel BTF   {}", yes(r.kernel_btf));
    let l = &r.landlock;
    println!(
        "Landlock     {}: filesystem {}, network {}, scopes (signals, abstract sockets) {}",
        l.detail,
        yes(l.filesystem),
        yes(l.network),
        yes(l.scopes)
    );
    let ns: Vec<String> = r
        .namespaces
        .iter()
        .map(|n| format!("{} {}", n.kind, yes(n.available)))
        .collect();
    println!("namespaces   {}", ns.join(", "));
    println!("BPF program types (a minimal program of each type, loaded by this kernel):");
    for p in &r.program_types {
        println!("{}", program_line(p));
    }
    println!("cowfs programs (verified by this kernel):");
    for p in &r.cowfs_programs {
        println!("{}", program_line(p));
    }
    let a = &r.access_log;
    match (&a.layout, &a.error) {
        (Some(l), None) => {
            let at = |f: &str| l.get(f).copied().unwrap_or(cowfs_kmod::abi::OFFSET_NONE);
            println!(
                "access log   kernel struct offsets from BTF: folio.mapping {}, folio.index {}, inode.i_ino {}, super_block.s_dev {}{}",
                at("folio.mapping"),
                at("folio.index"),
                at("inode.i_ino"),
                at("super_block.s_dev"),
                if at("PG_head") == cowfs_kmod::abi::OFFSET_NONE {
                    " (large folios counted as one page)"
                } else {
                    ""
                }
            )
        }
        (_, Some(e)) => println!("access log   UNAVAILABLE: {e}"),
        (None, None) => println!("access log   UNAVAILABLE"),
    }
    for h in &a.hooks {
        match &h.error {
            None => println!("  raw_tp {:<28} {:<16} attached", h.tracepoint, h.program),
            Some(e) => println!(
                "  raw_tp {:<28} {:<16} NOT ATTACHED: {e}",
                h.tracepoint, h.program
            ),
        }
    }
    if let Some(h) = &r.ebpf_source_blake3 {
        println!("eBPF object  built from sources with BLAKE3 {h}");
    }
    Ok(ExitCode::SUCCESS)
}
