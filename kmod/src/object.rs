//! The eBPF object the loader embeds, where it came from, and how to tell whether it is stale.
//!
//! The object is built by `scripts/build-ebpf.sh` (a nightly-only `build-std` step with
//! bpf-linker) and committed, so that building cowfs never needs that toolchain. Its manifest
//! records the BLAKE3 of the sources it was built from; a unit test recomputes that hash from the
//! working tree, so a source change without a rebuild fails CI even where the toolchain cannot be
//! installed. Where it can, `scripts/build-ebpf.sh --check` rebuilds and compares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The committed object, 8-byte aligned as the ELF parser wants it.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../ebpf-obj/cowfs-kmod.bpf.o");
const MANIFEST_JSON: &str = include_str!("../ebpf-obj/cowfs-kmod.bpf.json");

/// Path of the object and of its manifest relative to the repository root.
pub const OBJECT_PATH: &str = "kmod/ebpf-obj/cowfs-kmod.bpf.o";
pub const MANIFEST_PATH: &str = "kmod/ebpf-obj/cowfs-kmod.bpf.json";

/// What the build step recorded about the committed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// BLAKE3 of the object file.
    pub object_blake3: String,
    /// BLAKE3 over the sources (see [`source_hash`]).
    pub source_blake3: String,
    /// The files that went into `source_blake3`, relative to the repository root.
    pub sources: Vec<String>,
    /// `rustc -V` and `bpf-linker --version` of the build.
    pub rustc: String,
    pub bpf_linker: String,
    /// The command that built it (in `kmod/ebpf`).
    pub build: String,
}

/// The manifest embedded with the object.
pub fn manifest() -> Result<Manifest> {
    serde_json::from_str(MANIFEST_JSON).map_err(|e| Error::BadValue {
        what: "eBPF object manifest",
        value: MANIFEST_PATH.into(),
        why: e.to_string(),
    })
}

/// The files whose content determines the object, relative to the repository root, sorted:
/// the eBPF crate's manifest, lock file, cargo config and Rust sources, and the build script.
pub fn source_files(repo: &Path) -> Result<Vec<String>> {
    let mut files = vec![
        "kmod/ebpf/.cargo/config.toml".to_string(),
        "kmod/ebpf/Cargo.lock".to_string(),
        "kmod/ebpf/Cargo.toml".to_string(),
        "scripts/build-ebpf.sh".to_string(),
    ];
    let mut stack = vec![PathBuf::from("kmod/ebpf/src")];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(repo.join(&dir))
            .map_err(|e| Error::io(format!("listing {}", repo.join(&dir).display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            let rel = dir.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(|e| Error::io(format!("stat {}", rel.display()), e))?;
            if kind.is_dir() {
                stack.push(rel);
            } else if rel.extension().is_some_and(|e| e == "rs") {
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// BLAKE3 over `(path, length, content)` of every source file, in sorted order, so that
/// renaming, moving or editing any of them changes the hash.
pub fn source_hash(repo: &Path) -> Result<(String, Vec<String>)> {
    let files = source_files(repo)?;
    let mut hasher = blake3::Hasher::new();
    for rel in &files {
        let content = std::fs::read(repo.join(rel))
            .map_err(|e| Error::io(format!("reading {}", repo.join(rel).display()), e))?;
        hasher.update(rel.as_bytes());
        hasher.update(&[0]);
        hasher.update(&(content.len() as u64).to_le_bytes());
        hasher.update(&content);
    }
    Ok((hasher.finalize().to_hex().to_string(), files))
}

/// BLAKE3 of an object file's bytes.
pub fn object_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// What can be compared between two builds that are not bit-identical: the license, each
/// program's name and section, each map's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub license: String,
    /// program name → section kind (e.g. `CgroupDevice`, `RawTracePoint`).
    pub programs: BTreeMap<String, String>,
    /// map name → (type, key size, value size, max entries, flags).
    pub maps: BTreeMap<String, (u32, u32, u32, u32, u32)>,
}

/// Parses an object the way aya does and lists its programs and maps.
pub fn summarize(bytes: &[u8]) -> Result<Summary> {
    let obj = aya_obj::Object::parse(bytes).map_err(|e| Error::bpf("parsing the object", e))?;
    let programs = obj
        .programs
        .iter()
        .map(|(name, p)| {
            let section = format!("{:?}", p.section);
            let kind = section
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .to_string();
            (name.clone(), kind)
        })
        .collect();
    let maps = obj
        .maps
        .iter()
        .map(|(name, m)| {
            let def = (
                m.map_type(),
                m.key_size(),
                m.value_size(),
                m.max_entries(),
                m.map_flags(),
            );
            (name.clone(), def)
        })
        .collect();
    Ok(Summary {
        license: obj.license.to_string_lossy().into_owned(),
        programs,
        maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("kmod/ has a parent")
            .to_path_buf()
    }

    #[test]
    fn committed_object_is_built_from_current_sources() {
        let manifest = manifest().expect("manifest parses");
        let (hash, files) = source_hash(&repo()).expect("sources readable");
        assert_eq!(
            files, manifest.sources,
            "the set of eBPF source files changed since {OBJECT_PATH} was built: \
             run scripts/build-ebpf.sh and commit the object"
        );
        assert_eq!(
            hash, manifest.source_blake3,
            "kmod/ebpf changed since {OBJECT_PATH} was built: run scripts/build-ebpf.sh and \
             commit the object"
        );
    }

    #[test]
    fn committed_object_is_the_one_the_manifest_describes() {
        let manifest = manifest().expect("manifest parses");
        assert_eq!(object_hash(OBJECT), manifest.object_blake3);
    }

    #[test]
    fn object_has_every_program_and_map_the_loader_uses() {
        let summary = summarize(OBJECT).expect("object parses");
        let expect_programs = [
            (abi::PROG_DEVICE, "CgroupDevice"),
            (abi::PROG_BIND4, "CgroupSockAddr"),
            (abi::PROG_BIND6, "CgroupSockAddr"),
            (abi::PROG_CONNECT4, "CgroupSockAddr"),
            (abi::PROG_CONNECT6, "CgroupSockAddr"),
            (abi::PROG_SYSCTL, "CgroupSysctl"),
            (abi::PROG_FORK, "RawTracePoint"),
            (abi::PROG_EXEC, "RawTracePoint"),
            (abi::PROG_PC_READ, "RawTracePoint"),
            (abi::PROG_PC_FAULT, "RawTracePoint"),
            (abi::PROG_PC_MAP, "RawTracePoint"),
            (abi::PROG_PC_ADD, "RawTracePoint"),
            (abi::PROG_PC_DIRTY, "RawTracePoint"),
            (abi::PROBE_CGROUP_DEVICE, "CgroupDevice"),
            (abi::PROBE_SOCK_ADDR, "CgroupSockAddr"),
            (abi::PROBE_SYSCTL, "CgroupSysctl"),
            (abi::PROBE_TRACEPOINT, "TracePoint"),
            (abi::PROBE_TP_BTF, "BtfTracePoint"),
            (abi::PROBE_RAW_TP, "RawTracePoint"),
            (abi::PROBE_LSM, "Lsm"),
            (abi::PROBE_FENTRY, "FEntry"),
            (abi::PROBE_FEXIT, "FExit"),
        ];
        for (name, kind) in expect_programs {
            assert_eq!(
                summary.programs.get(name).map(String::as_str),
                Some(kind),
                "program {name} in {:?}",
                summary.programs
            );
        }
        let key_value = |name: &str| summary.maps.get(name).map(|m| (m.1, m.2));
        let size = |n: usize| u32::try_from(n).expect("small");
        assert_eq!(
            key_value(abi::MAP_DEVICES),
            Some((size(size_of::<abi::DevKey>()), 4))
        );
        assert_eq!(key_value(abi::MAP_ADDRS4), Some((4, 1)));
        assert_eq!(key_value(abi::MAP_ADDRS6), Some((16, 1)));
        assert_eq!(
            key_value(abi::MAP_NET_CONFIG),
            Some((4, size(size_of::<abi::NetConfig>())))
        );
        assert_eq!(
            key_value(abi::MAP_PROC_COUNTERS),
            Some((8, size(size_of::<abi::ProcCounters>())))
        );
        assert_eq!(key_value(abi::MAP_TRACED_CGROUPS), Some((8, 1)));
        assert_eq!(
            key_value(abi::MAP_ACCESS_CONFIG),
            Some((4, size(size_of::<abi::AccessConfig>())))
        );
        assert_eq!(
            key_value(abi::MAP_ACCESS_STATS),
            Some((4, size(size_of::<abi::AccessStats>())))
        );
        // A ring buffer (type 27) has no key or value; its size is set at load time.
        assert_eq!(summary.maps.get(abi::MAP_ACCESS_LOG).map(|m| m.0), Some(27));
    }
}
