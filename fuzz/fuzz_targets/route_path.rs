//! src/fuzzing/route_path.rs under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| framegate::fuzzing::route_path::check(data));
