//! src/fuzzing/abi.rs under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate::fuzzing::abi::check(data));
