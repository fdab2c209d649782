//! Signal names and numbers (Kill, --stop-signal, signal frames).
#![no_main]
libfuzzer_sys::fuzz_target!(|input: &str| cm_server::fuzzing::signal(input));
