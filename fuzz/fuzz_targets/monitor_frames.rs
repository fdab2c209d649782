//! The monitor protocol decoder, on both sides, with input split at every chunk size.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&chunk, bytes)) = input.split_first() else { return };
    cm_server::fuzzing::monitor_frames(bytes, usize::from(chunk));
});
