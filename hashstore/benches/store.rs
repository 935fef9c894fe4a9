//! Criterion benchmarks of the store's primitives: insert by link (zero copy), insert by copy
//! (temp file + fsync + link), lookup by key and reading every row (what vhashify does once per
//! run) in an index of 20,000 objects, and the key of a file (metadata header + content hash).
//!
//!     cargo bench -p hashstore --bench store

use std::hint::black_box;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hashstore::index::ObjectRow;
use hashstore::key::{FileMeta, describe_fd, hash_fd};
use hashstore::{ContentHash, InsertSource, Key, KeyPolicy, ObjectId, Store, Timestamp};

static N: AtomicU64 = AtomicU64::new(0);

/// A new file with unique content of `len` bytes under `dir`.
fn new_file(dir: &Path, len: usize) -> PathBuf {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("f{n}"));
    let mut content = vec![0u8; len];
    blake3::Hasher::new()
        .update(&n.to_le_bytes())
        .finalize_xof()
        .fill(&mut content);
    std::fs::write(&path, content).expect("write");
    path
}

fn insert(store: &Store, path: &Path, copy: bool) {
    let fd = std::fs::File::open(path).expect("open");
    let (meta, st, content) = describe_fd(fd.as_fd()).expect("read");
    let content = content.expect("stable");
    let src = InsertSource {
        fd: fd.as_fd(),
        path,
        stat: &st,
        meta: &meta,
        content,
        policy: KeyPolicy::default(),
    };
    let r = if copy {
        store.insert_by_copy(&src, 0)
    } else {
        store.insert_by_link(&src, 0)
    };
    black_box(r.expect("insert"));
}

fn bench_insert(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::init(&dir.path().join("store")).expect("init");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).expect("mkdir");
    let mut g = c.benchmark_group("insert 16 KiB file");
    g.bench_function("by link (zero copy)", |b| {
        b.iter_batched(
            || new_file(&files, 16 * 1024),
            |p| insert(&store, &p, false),
            BatchSize::SmallInput,
        )
    });
    g.sample_size(20);
    g.bench_function("by copy (fsync + link)", |b| {
        b.iter_batched(
            || new_file(&files, 16 * 1024),
            |p| insert(&store, &p, true),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::init(&dir.path().join("store")).expect("init");
    let rows: Vec<ObjectRow> = (0..20_000u64)
        .map(|i| ObjectRow {
            id: ObjectId::first(Key(*blake3::hash(&i.to_le_bytes()).as_bytes())),
            content_hash: ContentHash(*blake3::hash(&(i / 2).to_le_bytes()).as_bytes()),
            size: 1000 + i % 5000,
            dev: 1,
            ino: 1000 + i,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            mtime: Timestamp { sec: 1, nsec: 0 },
            ignore_mtime: false,
        })
        .collect();
    store.record(&rows).expect("record");
    let mut i = 0usize;
    c.bench_function("lookup by key (20k objects)", |b| {
        b.iter(|| {
            i = (i + 7919) % rows.len();
            black_box(store.lookup(&rows[i].id.key).expect("lookup"))
        })
    });
    // vhashify's catalog: the whole table once, then lookups in memory (so the index needs no
    // secondary index by size or inode).
    c.bench_function("every object row (20k objects)", |b| {
        b.iter(|| black_box(store.index().all_objects().expect("all rows")))
    });
}

fn bench_key(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = new_file(dir.path(), 1 << 20);
    let fd = std::fs::File::open(&path).expect("open");
    let (meta, _) = FileMeta::from_fd(fd.as_fd()).expect("meta");
    let content = ContentHash([7; 32]);
    c.bench_function("key from metadata + content hash", |b| {
        b.iter(|| black_box(meta.key(KeyPolicy::default(), &content)))
    });
    let mut buf = vec![0u8; 256 * 1024];
    c.bench_function("content hash of a cached 1 MiB file", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&path).expect("open");
            black_box(hash_fd(f.as_fd(), 1 << 20, &mut buf).expect("read"))
        })
    });
}

criterion_group!(benches, bench_insert, bench_lookup, bench_key);
criterion_main!(benches);
