//! `exec`: runs another process in a running container, attached like `run` (one session implementation, see
//! session.rs), or left running in the background with -d.

use anyhow::bail;

use crate::connect::Client;
use crate::error::daemon_error;
use crate::session::{self, ExecCommand, Session, Target};
use crate::spec::ProcessOptions;
use crate::tty;

// The shared -u and -w default to the container's here, which their help says; and exec lists -u before -w: the
// display orders 5 and 6 are the places the two flattened flags took after -d, -i, -t, -e and --env-file.
#[derive(clap::Args, Debug)]
#[command(
    mut_arg("user", |a| a.help("User to run as: name or uid, optionally :group or :gid (default: the container's)")
        .display_order(5)),
    mut_arg("workdir", |a| a.help("Working directory inside the container (absolute; default: the container's)")
        .display_order(6)),
)]
pub struct ExecArgs {
    /// Run the command in the background; print nothing.
    #[arg(short, long)]
    detach: bool,
    /// Attach stdin.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    tty: bool,
    #[command(flatten)]
    process: ProcessOptions,
    /// Container id, id prefix or name, then the command and its arguments (everything after CONTAINER is the
    /// command's, flags included).
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_names = ["CONTAINER", "COMMAND"]
    )]
    pub container_and_command: Vec<String>,
}

/// `exec`: exits with the process's exit code, 125 when the server refused (container not running, not
/// found ...); with -d, 0 once the process has started.
pub async fn exec(client: &mut Client, args: ExecArgs) -> anyhow::Result<i32> {
    let session = match session(args, |key| std::env::var(key).ok()) {
        Ok(session) => session,
        Err(e) => return daemon_error(e),
    };
    // As docker: a tty on stdin is needed only to forward it.
    tty::check_stdin(session.stdin, session.tty)?;
    let detach = matches!(&session.target, Target::Exec(command) if command.detach_on_disconnect);
    let result =
        if detach { session::start_detached(client, session).await } else { session::session(client, session).await };
    result.or_else(daemon_error)
}

/// The session `exec ARGS` asks for; `lookup` reads the client's environment (for `-e KEY` and env files).
fn session(args: ExecArgs, lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Session> {
    let env = args.process.env(lookup)?;
    let mut operands = args.container_and_command.into_iter();
    let (Some(container), argv) = (operands.next(), operands.collect::<Vec<_>>()) else {
        bail!("a container is required");
    };
    if argv.is_empty() {
        bail!("a command is required");
    }
    let command = ExecCommand {
        container,
        argv,
        env,
        workdir: args.process.workdir.unwrap_or_default(),
        user: args.process.user.unwrap_or_default(),
        detach_on_disconnect: args.detach,
    };
    // As docker: a detached exec has nothing attached, stdin included (it gets EOF, not a stream that stays
    // open with no one writing to it).
    Ok(Session { target: Target::Exec(command), stdin: args.interactive && !args.detach, tty: args.tty })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use clap::error::ErrorKind;

    use super::*;

    /// The flags as `exec` reads them.
    #[derive(Parser)]
    struct Exec {
        #[command(flatten)]
        args: ExecArgs,
    }

    fn parse(args: &[&str]) -> Result<ExecArgs, clap::Error> {
        Ok(Exec::try_parse_from(["exec"].iter().chain(args))?.args)
    }

    /// The session `cm-client exec ARGS` would run, with a fixed client environment.
    fn exec_session(args: &[&str]) -> Session {
        session(parse(args).unwrap(), |key| (key == "HOME").then(|| "/home/me".to_string())).unwrap()
    }

    fn command(session: &Session) -> &ExecCommand {
        let Target::Exec(command) = &session.target else { panic!("not an exec") };
        command
    }

    #[test]
    fn arguments_after_the_container_belong_to_the_command() {
        let s = exec_session(&["c", "sh", "-c", "echo hi"]);
        assert_eq!(command(&s).container, "c");
        assert_eq!(command(&s).argv, ["sh", "-c", "echo hi"]);
        let s = exec_session(&["-i", "c", "ls", "-l", "-e", "A=1", "-d"]);
        assert_eq!(command(&s).argv, ["ls", "-l", "-e", "A=1", "-d"]);
        assert!(s.stdin && !s.tty && command(&s).env.is_empty() && !command(&s).detach_on_disconnect);
    }

    #[test]
    fn flags_fill_the_start_frame() {
        let s =
            exec_session(&["-t", "-e", "A=1", "-e", "HOME", "-e", "UNSET", "-u", "1000:1000", "-w", "/tmp", "c", "id"]);
        assert_eq!(
            command(&s),
            &ExecCommand {
                container: "c".into(),
                argv: vec!["id".into()],
                env: vec!["A=1".into(), "HOME=/home/me".into()],
                workdir: "/tmp".into(),
                user: "1000:1000".into(),
                detach_on_disconnect: false,
            }
        );
        assert!(s.tty && !s.stdin);
    }

    #[test]
    fn detached_execs_keep_running_without_stdin() {
        let s = exec_session(&["-d", "-i", "c", "sleep", "9"]);
        assert!(command(&s).detach_on_disconnect && !s.stdin);
        let s = exec_session(&["-dit", "c", "sh"]);
        assert!(command(&s).detach_on_disconnect && s.tty && !s.stdin);
    }

    #[test]
    fn env_files_come_before_env_flags() {
        let dir = std::env::temp_dir().join(format!("cm-client-exec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("env");
        std::fs::write(&file, "# comment\nA=file\nB=2\n").unwrap();
        let s = exec_session(&["--env-file", file.to_str().unwrap(), "-e", "A=flag", "c", "env"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(command(&s).env, ["A=file", "B=2", "A=flag"]);
    }

    #[test]
    fn a_container_and_a_command_are_required() {
        for args in [&[][..], &["c"][..], &["-i", "c"][..]] {
            let kind = parse(args).unwrap_err().kind();
            assert!(matches!(kind, ErrorKind::MissingRequiredArgument | ErrorKind::TooFewValues), "{args:?}: {kind:?}");
        }
    }

    #[test]
    fn the_help_lists_user_then_workdir_with_the_containers_defaults() {
        let help = <Exec as clap::CommandFactory>::command().render_help().to_string();
        let user = help.find("-u, --user").expect("-u in the help");
        let workdir = help.find("-w, --workdir").expect("-w in the help");
        assert!(help.find("--env-file").unwrap() < user && user < workdir, "{help}");
        assert!(help.contains("optionally :group or :gid (default: the container's)"), "{help}");
        assert!(help.contains("(absolute; default: the container's)"), "{help}");
    }

    #[test]
    fn a_relative_workdir_is_refused() {
        assert_eq!(parse(&["-w", "tmp", "c", "ls"]).unwrap_err().kind(), ErrorKind::ValueValidation);
    }
}
