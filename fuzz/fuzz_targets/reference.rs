//! Image references (PullImage, Create, cm-client pull/run).
#![no_main]
libfuzzer_sys::fuzz_target!(|input: &str| cm_server::fuzzing::reference(input));
