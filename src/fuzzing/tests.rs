//! The committed corpus, replayed on stable: every file of
//! `fuzz/corpus/<target>/` through its harness (the seeds, the minimized
//! corpus of the runs, and every crash the fuzzers found, kept as
//! `crash-*`), and the seeds checked against [`super::seeds`].

use super::{TARGETS, seeds};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn seeds_are_committed() {
    let write = std::env::var_os("WARREN_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds::all() {
        let path = corpus_dir(target).join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is not the seed the encoders make now; rewrite the seeds with \
             WARREN_WRITE_SEEDS=1 cargo test --release --lib fuzzing::tests",
            path.display()
        );
    }
}

#[test]
fn corpus_replays() {
    for (target, harness) in TARGETS {
        let dir = corpus_dir(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus", dir.display());
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| harness(&data));
            assert!(r.is_ok(), "{} fails its harness", f.display());
        }
    }
}
