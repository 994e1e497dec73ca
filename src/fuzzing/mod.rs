//! The fuzz targets' bodies, built only with the `fuzzing` feature: each reads one input and
//! panics on what must never happen. fuzz/ runs them under libFuzzer (scripts/fuzz);
//! tests/fuzz_corpus.rs replays every input kept in fuzz/corpus/TARGET on a plain build.

pub mod abi;
pub mod config;
pub mod frames;
pub mod route_path;
pub mod template;
pub mod upgrade;

/// A target's body: one input, a panic on what must not happen.
pub type Check = fn(&[u8]);

/// Every target, by the name of its corpus folder.
pub const TARGETS: &[(&str, Check)] = &[
    ("abi", abi::check),
    ("config", config::check),
    ("frames", frames::check),
    ("route_path", route_path::check),
    ("template", template::check),
    ("upgrade", upgrade::check),
];
