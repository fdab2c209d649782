//! The command: its environment (PATH, HOSTNAME, HOME and TERM filled in), the executable found along the
//! container's PATH as execvp would, and the exec itself with docker's exit codes for failures.

use std::ffi::CString;

use super::error::{InitError, Never};
use crate::runtime::bundle::Bundle;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment: image + user env (already merged by the server), with PATH, HOSTNAME, HOME and TERM
/// filled in when missing.
pub fn process_env(bundle: &Bundle, home: &str) -> Vec<String> {
    let mut env = bundle.process.env.clone();
    let has = |env: &[String], key: &str| env.iter().any(|e| e.split_once('=').is_some_and(|(k, _)| k == key));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", bundle.hostname));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    if bundle.process.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    env
}

/// `extra` (an exec's own variables) over `env`, replacing variables of the same name.
pub fn overlay_env(env: &mut Vec<String>, extra: &[String]) {
    for e in extra {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
}

/// Finds the executable like execvp does, with the container's PATH, and execs it.
pub fn exec(args: &[String], env: &[String]) -> Result<Never, InitError> {
    let (cpath, cargs, cenv) = prepare(args, env)?;
    let err = nix::unistd::execve(&cpath, &cargs, &cenv).unwrap_err();
    Err(exec_error(&args[0], err))
}

/// The executable's path, argv and environment as C strings. A NUL byte in the command or its arguments
/// is a setup error (an environment entry with one is left out, as before).
fn prepare(args: &[String], env: &[String]) -> Result<(CString, Vec<CString>, Vec<CString>), InitError> {
    let Some(name) = args.first() else {
        return Err(InitError { code: 127, message: "no command given and the image has none".into() });
    };
    let nul = |what: &str, s: &str| InitError::setup(format!("container setup: the {what} {s:?} contains a NUL byte"));
    let cargs =
        args.iter().map(|a| CString::new(a.as_str()).map_err(|_| nul("argument", a))).collect::<Result<Vec<_>, _>>()?;
    let path = resolve_executable(name, env)?;
    let cpath = CString::new(path.as_str()).map_err(|_| nul("executable path", &path))?;
    let cenv: Vec<CString> = env.iter().filter_map(|e| CString::new(e.as_str()).ok()).collect();
    Ok((cpath, cargs, cenv))
}

fn exec_error(name: &str, err: nix::Error) -> InitError {
    match err {
        nix::Error::ENOENT => InitError { code: 127, message: format!("exec {name:?}: no such file or directory") },
        e => InitError { code: 126, message: format!("exec {name:?}: {}", e.desc().to_lowercase()) },
    }
}

/// A name with a slash is used as is; otherwise the first PATH entry holding a regular file of that name.
fn resolve_executable(name: &str, env: &[String]) -> Result<String, InitError> {
    if name.contains('/') {
        return Ok(name.to_string());
    }
    let path = env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let mut not_executable = None;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{name}");
        match std::fs::metadata(&candidate) {
            Ok(m) if m.is_file() => {
                use std::os::unix::fs::PermissionsExt;
                if m.permissions().mode() & 0o111 != 0 {
                    return Ok(candidate);
                }
                not_executable.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    match not_executable {
        Some(c) => {
            Err(InitError { code: 126, message: format!("exec {name:?}: {c} is not executable (permission denied)") })
        }
        None => Err(InitError { code: 127, message: format!("exec {name:?}: executable file not found in $PATH") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_path_home_hostname_and_term_only_when_missing() {
        let mut bundle = Bundle::for_tests("/".as_ref(), "/".as_ref());
        bundle.process.env = vec!["PATH=/bin".into(), "A=1".into()];
        bundle.process.tty = true;
        let env = process_env(&bundle, "/root");
        assert_eq!(env, vec!["PATH=/bin", "A=1", "HOSTNAME=abc", "HOME=/root", "TERM=xterm"]);
    }

    #[test]
    fn exec_env_replaces_variables_of_the_same_name() {
        let mut env = vec!["PATH=/bin".to_string(), "A=1".into(), "B=2".into()];
        overlay_env(&mut env, &["A=3".into(), "C".into()]);
        assert_eq!(env, vec!["PATH=/bin", "B=2", "A=3", "C"]);
    }

    #[test]
    fn a_nul_byte_in_the_command_is_a_setup_error_not_an_empty_string() {
        let env = vec!["PATH=/bin".to_string()];
        let err = prepare(&["/bin/echo".into(), "a\0b".into()], &env).err().unwrap();
        assert_eq!(err.code, 125);
        assert!(err.message.contains("NUL"), "{}", err.message);
        let err = prepare(&["/bin/e\0cho".into()], &env).err().unwrap();
        assert_eq!(err.code, 125);
        let err = prepare(&[], &env).err().unwrap();
        assert_eq!(err.code, 127);
        let (path, args, cenv) = prepare(&["/bin/echo".into(), "hi".into()], &["A=1".into(), "B\0=2".into()]).unwrap();
        assert_eq!(path.to_str().unwrap(), "/bin/echo");
        assert_eq!(args.len(), 2);
        assert_eq!(cenv.len(), 1);
    }

    #[test]
    fn commands_are_found_along_path_or_taken_as_given() {
        assert_eq!(resolve_executable("./x", &[]).unwrap(), "./x");
        let err = resolve_executable("no-such-command-here", &["PATH=/nonexistent".into()]).err().unwrap();
        assert_eq!(err.code, 127);
    }
}
