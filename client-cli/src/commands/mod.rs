//! One module per command: its flags (a clap Args struct) and its handler, which returns the exit code. The
//! machinery they share (sessions, the terminal, specs, formats, progress, errors) is in the modules beside
//! this one; none of them imports a command.

pub mod attach;
pub mod create;
pub mod events;
pub mod exec;
pub mod image_inspect;
pub mod images;
pub mod inspect;
pub mod kill;
pub mod logs;
pub mod port;
pub mod ps;
pub mod pull;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod start;
pub mod stats;
pub mod stop;
pub mod wait;
