//! cm-client -v SRC:DST[:ro|rw] and --tmpfs DST[:OPTIONS].
#![no_main]
#[path = "../../client-cli/src/parse.rs"]
#[allow(dead_code)]
mod parse;
libfuzzer_sys::fuzz_target!(|input: &str| {
    let _ = parse::parse_volume(input);
    let _ = parse::parse_tmpfs(input);
});
