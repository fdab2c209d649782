//! Image unpack's tar entry handling: any bytes as a layer, unpacked into a fresh directory.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let dest = tempfile::tempdir().expect("a temporary directory");
    cm_server::fuzzing::unpack(input, dest.path());
});
