//! Replays the `header_parse` fuzz corpus (`fuzz/corpus/header_parse/`) and any saved crashers
//! (`fuzz/regressions/header_parse/`) through `parse_segment` as an ordinary test on stable, so
//! a regression the fuzzer once found fails CI without cargo-fuzz or nightly.
//!
//! The invariants come from the fuzz package's `src/header_check.rs`, compiled into this test
//! with `#[path]` (it uses only `std` and `dmxp_nostd`), so the fuzzer and this replay check the
//! very same things. The other targets' corpora are replayed by
//! `cargo test --manifest-path fuzz/Cargo.toml`. `tests/fuzz_data/` links to those files in
//! the workspace's `fuzz/`, so that the published package carries them too.

#[path = "fuzz_data/header_check.rs"]
mod header_check;

use header_check::{check_parse, ParseOutcome};
use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_data")
}

/// Regular, non-hidden files of `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && name != "README.md"
        })
        .collect();
    found.sort();
    found
}

#[test]
fn header_parse_corpus_replays() {
    let corpus = files(&fuzz_dir().join("corpus"));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/header_parse is empty: the replay would prove nothing"
    );
    let regressions_dir = fuzz_dir().join("regressions");
    let regressions = if regressions_dir.is_dir() {
        files(&regressions_dir)
    } else {
        Vec::new()
    };

    let mut valid_with_channels = 0;
    let mut rejected = 0;
    for path in corpus.iter().chain(&regressions) {
        let bytes = fs::read(path).expect("read corpus file");
        match check_parse(&bytes) {
            ParseOutcome::Valid { channels } if channels > 0 => valid_with_channels += 1,
            ParseOutcome::Valid { .. } => {}
            ParseOutcome::Rejected => rejected += 1,
        }
        // Every prefix length class the parser distinguishes: empty, inside the first 128
        // bytes, inside the channel table, and the whole input less its last byte.
        for cut in [0, 64, 127, 128, 4096, dmxp_nostd::layout::HEADER_SIZE - 1] {
            if cut < bytes.len() {
                assert_eq!(check_parse(&bytes[..cut]), ParseOutcome::Rejected);
            }
        }
        if let Some(shorter) = bytes.len().checked_sub(1) {
            check_parse(&bytes[..shorter]);
        }
    }
    assert!(
        valid_with_channels > 0,
        "the corpus holds no valid segment with channels"
    );
    assert!(
        rejected > 0,
        "the corpus holds no segment the parser must refuse"
    );
}
