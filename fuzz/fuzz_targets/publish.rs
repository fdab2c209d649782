//! cm-client -p [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO] (and the other flag parsers of client-cli/src/parse.rs).
#![no_main]
#[path = "../../client-cli/src/parse.rs"]
#[allow(dead_code)]
mod parse;
libfuzzer_sys::fuzz_target!(|input: &str| {
    let _ = parse::parse_publish(input);
    let _ = parse::parse_label(input);
    let _ = parse::parse_workdir(input);
    let _ = parse::parse_env(input, |_| Some("v".into()));
    let _ = parse::parse_env_file(input, |_| None);
    let _ = parse::parse_since(input, prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 });
});
