//! The Rust half of `scripts/build-ebpf.sh`: records the manifest of a freshly built object and
//! compares a fresh build with the committed one.
//!
//!   ebpf_object manifest REPO OBJECT RUSTC_V LINKER_V BUILD_CMD   (prints the manifest JSON)
//!   ebpf_object compare FRESH COMMITTED                           (exit 1 if they differ in
//!                                                                  programs, maps or license)

use std::path::Path;
use std::process::ExitCode;

use cowfs_kmod::object::{self, Manifest};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["manifest", repo, obj, rustc, linker, build] => {
            print_manifest(Path::new(repo), Path::new(obj), rustc, linker, build)
        }
        ["compare", fresh, committed] => compare(Path::new(fresh), Path::new(committed)),
        _ => Err(
            "usage: ebpf_object manifest REPO OBJECT RUSTC_V LINKER_V BUILD_CMD | \
                  ebpf_object compare FRESH COMMITTED"
                .into(),
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()).into())
}

fn print_manifest(
    repo: &Path,
    obj: &Path,
    rustc: &str,
    linker: &str,
    build: &str,
) -> Result<ExitCode> {
    let (source_blake3, sources) = object::source_hash(repo)?;
    let manifest = Manifest {
        object_blake3: object::object_hash(&read(obj)?),
        source_blake3,
        sources,
        rustc: rustc.into(),
        bpf_linker: linker.into(),
        build: build.into(),
    };
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(ExitCode::SUCCESS)
}

fn compare(fresh: &Path, committed: &Path) -> Result<ExitCode> {
    let (a, b) = (read(fresh)?, read(committed)?);
    if a == b {
        println!("ebpf: the fresh build is bit-identical to the committed object");
        return Ok(ExitCode::SUCCESS);
    }
    let (sa, sb) = (object::summarize(&a)?, object::summarize(&b)?);
    if sa == sb {
        println!(
            "ebpf: the fresh build is NOT bit-identical to the committed object (another \
             rustc/LLVM/bpf-linker?), but its license, {} programs (names, sections) and {} maps \
             (type, key, value, entries, flags) are the same",
            sa.programs.len(),
            sa.maps.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("ebpf: the fresh build differs from the committed object:");
    eprintln!("  fresh:     {}", serde_json::to_string(&sa)?);
    eprintln!("  committed: {}", serde_json::to_string(&sb)?);
    Ok(ExitCode::FAILURE)
}
