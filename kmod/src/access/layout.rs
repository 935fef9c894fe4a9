//! The offsets the access programs need, found in the running kernel's BTF.
//!
//! aya-ebpf cannot emit CO-RE relocations, so instead of compiling offsets in (which would be
//! right for one kernel build only) the loader looks them up in `/sys/kernel/btf/vmlinux`
//! and hands them to the programs in `ACCESS_CONFIG`. A field this kernel does not have is an
//! error, except the two that only size large folios, which degrade to one page per folio.

use std::path::Path;

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

use crate::abi::{AccessConfig, OFFSET_NONE};
use crate::{Error, Result};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

struct Bytes(Vec<u8>);

impl Readable for Bytes {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).ok();
        let slice = start.and_then(|s| self.0.get(s..s.checked_add(buffer.len())?));
        match slice {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF data",
            )),
        }
    }
}

fn bad(why: String) -> Error {
    Error::BadValue {
        what: "kernel BTF",
        value: VMLINUX_BTF.into(),
        why,
    }
}

/// Byte offset of `path` (e.g. `mapping` or `i_sb`) in struct `ty`.
fn offset(types: &TypeInformation, ty: &str, path: &str) -> Result<u32> {
    let id = types
        .id_of(ty)
        .ok_or_else(|| bad(format!("no struct {ty}")))?;
    match types.offset_of(id, path) {
        Ok((_, Offset::ByteOffset(off))) => Ok(off),
        Ok((_, Offset::BitOffsetAndSize(..))) => Err(bad(format!("{ty}.{path} is a bitfield"))),
        Err(e) => Err(bad(format!("{ty}.{path}: {e:?}"))),
    }
}

/// Value of enumerator `name` of enum `ty`.
fn enumerator(types: &TypeInformation, ty: &str, name: &str) -> Option<u32> {
    let id = types.id_of(ty)?;
    let TypeVariant::Enum(e) = types.from_id(id)? else {
        return None;
    };
    e.named_value_list().iter().find_map(|v| {
        (v.name == name).then(|| match v.value {
            btfparse::Integer32Value::Signed(n) => u32::try_from(n).ok(),
            btfparse::Integer32Value::Unsigned(n) => Some(n),
        })?
    })
}

/// The offsets of this kernel, read from its BTF at `path`; `cgroup_level` is filled in by the
/// caller.
pub fn from_btf(path: &Path) -> Result<AccessConfig> {
    let data =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let types = TypeInformation::new(&Bytes(data)).map_err(|e| bad(format!("{e:?}")))?;
    // Large-folio sizing is optional: without it every folio counts as one page.
    let (flags_1, pg_head) = match (
        offset(&types, "folio", "_flags_1"),
        enumerator(&types, "pageflags", "PG_head"),
    ) {
        (Ok(off), Some(bit)) => (off, bit),
        _ => (OFFSET_NONE, OFFSET_NONE),
    };
    Ok(AccessConfig {
        folio_flags: offset(&types, "folio", "flags")?,
        folio_mapping: offset(&types, "folio", "mapping")?,
        folio_index: offset(&types, "folio", "index")?,
        folio_flags_1: flags_1,
        pg_head,
        mapping_host: offset(&types, "address_space", "host")?,
        inode_mode: offset(&types, "inode", "i_mode")?,
        inode_ino: offset(&types, "inode", "i_ino")?,
        inode_sb: offset(&types, "inode", "i_sb")?,
        sb_dev: offset(&types, "super_block", "s_dev")?,
        cgroup_level: 0,
        _pad: 0,
    })
}

/// The offsets by field name (for reports); [`OFFSET_NONE`] where the kernel lacks one.
pub fn fields(cfg: &AccessConfig) -> std::collections::BTreeMap<&'static str, u32> {
    [
        ("folio.flags", cfg.folio_flags),
        ("folio.mapping", cfg.folio_mapping),
        ("folio.index", cfg.folio_index),
        ("folio._flags_1", cfg.folio_flags_1),
        ("PG_head", cfg.pg_head),
        ("address_space.host", cfg.mapping_host),
        ("inode.i_mode", cfg.inode_mode),
        ("inode.i_ino", cfg.inode_ino),
        ("inode.i_sb", cfg.inode_sb),
        ("super_block.s_dev", cfg.sb_dev),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_every_field_the_programs_read() {
        let cfg = from_btf(Path::new(VMLINUX_BTF)).expect("kernel BTF on the test machines");
        // Fields that lead their struct: a lookup that found the wrong member would not give 0.
        assert_eq!(cfg.mapping_host, 0, "{cfg:?}");
        assert_eq!(cfg.inode_mode, 0, "{cfg:?}");
        assert_eq!(cfg.folio_flags, 0, "{cfg:?}");
        assert!(cfg.folio_mapping > 0 && cfg.folio_index > cfg.folio_mapping);
        assert!(cfg.inode_ino > 0 && cfg.inode_sb > 0 && cfg.sb_dev > 0);
        // Kernel 6.18 sizes large folios (ext4 uses them since 6.16).
        assert_ne!(cfg.folio_flags_1, OFFSET_NONE, "{cfg:?}");
        assert!(cfg.pg_head < 64, "{cfg:?}");
    }
}
