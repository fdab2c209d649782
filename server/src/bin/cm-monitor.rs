//! cm-monitor DIR: owns one container (see cm_server::runtime::monitor). Started by cm-server.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: cm-monitor CONTAINER_DIR (started by cm-server, not by hand)");
        std::process::exit(2);
    };
    std::process::exit(cm_server::monitor_main(std::path::Path::new(&dir)));
}
