//! The control-socket protocol: any request line gets a reply (never a panic), the reply
//! serialises as the one JSON line the client reads back, and a refusal says why. Paths of
//! `add`/`remove` are moved into a scratch directory first so that the fuzzer never touches
//! the host's directories (a writable branch gets a work directory).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cowfs_fs::branch::{Branch, BranchMode};
use cowfs_fs::control::{Command, Request, Response, respond};
use cowfs_fs::unionfs::{FsConfig, UnionFs};
use libfuzzer_sys::fuzz_target;

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    mnt: PathBuf,
    fs: Arc<UnionFs>,
}

fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        for d in ["base", "mnt", "a", "b", "c"] {
            std::fs::create_dir(root.join(d)).expect("mkdir");
        }
        let base = Branch::open(&root.join("base"), BranchMode::Ro, None).expect("branch");
        let (fs, _rx) = UnionFs::new(
            vec![base],
            FsConfig {
                mountpoint: Some(root.join("mnt")),
                ..FsConfig::default()
            },
        );
        let mnt = root.join("mnt");
        Sandbox {
            _tmp: tmp,
            root,
            mnt,
            fs,
        }
    })
}

/// The path moved below the sandbox: only its last component is kept.
fn confine(root: &Path, p: &Path) -> PathBuf {
    match p.file_name() {
        Some(name) => root.join(name),
        None => root.join("missing"),
    }
}

fuzz_target!(|data: &[u8]| {
    let s = sandbox();
    let line = match serde_json::from_slice::<Request>(data) {
        Ok(mut req) => {
            match &mut req.command {
                Command::Add { path, position, .. } => {
                    *path = confine(&s.root, path);
                    use cowfs_fs::control::PositionSpec;
                    if let PositionSpec::Before(p) | PositionSpec::After(p) = position {
                        *p = confine(&s.root, p);
                    }
                }
                Command::Remove { path } => *path = confine(&s.root, path),
                Command::List | Command::Stats => {}
            }
            serde_json::to_vec(&req).expect("a parsed request serialises")
        }
        Err(_) => data.to_vec(),
    };
    let reply = respond(&s.fs, &s.mnt, &line);
    let text = serde_json::to_string(&reply).expect("a reply serialises");
    assert!(!text.contains('\n'), "a reply must be one line");
    let back: Response = serde_json::from_str(&text).expect("the client can read the reply");
    assert_eq!(back, reply);
    if reply.ok {
        assert!(reply.branches.as_ref().is_some_and(|b| !b.is_empty()));
    } else {
        assert!(reply.error.as_ref().is_some_and(|e| !e.is_empty()));
    }
    // Whatever happened, the union still has a branch and answers a list.
    let list = respond(&s.fs, &s.mnt, br#"{"version":1,"command":"list"}"#);
    assert!(list.ok && list.branches.is_some_and(|b| !b.is_empty()));
});
