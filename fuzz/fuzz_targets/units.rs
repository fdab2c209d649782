//! --memory and --cpus (cm-client and cm-server's defaults), and the client's -e KEY lookups.
#![no_main]
libfuzzer_sys::fuzz_target!(|input: &str| {
    let _ = cm_api::units::parse_memory(input);
    let _ = cm_api::units::parse_cpus(input);
});
