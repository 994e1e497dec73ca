//! Every input kept in fuzz/corpus/TARGET for framegate's fuzz targets, replayed through the
//! target's body (src/fuzzing/) on a plain build: what the fuzzers found, regression inputs
//! included, keeps holding without libFuzzer's instrumented build (scripts/fuzz runs that).
//! Needs the `fuzzing` feature: `cargo test --features fuzzing --test fuzz_corpus`.

use std::path::Path;

#[test]
fn every_target_under_fuzz_has_its_body_here() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut fuzzed: Vec<String> = std::fs::read_dir(targets)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    fuzzed.sort();
    let replayed: Vec<&str> = framegate::fuzzing::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(fuzzed, replayed, "fuzz/fuzz_targets/ and framegate::fuzzing::TARGETS");
}

#[test]
fn every_corpus_input_passes_its_target() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (target, check) in framegate::fuzzing::TARGETS {
        let mut inputs: Vec<_> = std::fs::read_dir(corpora.join(target))
            .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "fuzz/corpus/{target} is empty");
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(format!("{target}: {}", input.display()));
            }
        }
        println!("{target}: {} inputs", inputs.len());
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their target:\n{}",
        failures.join("\n")
    );
}
