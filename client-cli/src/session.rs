//! An attached session over the Attach or the Exec stream (one implementation for both: their frames are the
//! same, so each stream is converted to and from the common `ClientFrame` / `ServerFrame` below): the process's
//! stdout and stderr to ours, our stdin to the process, terminal size changes as resize frames, and, without a
//! tty, our SIGINT/SIGTERM/... as signal frames (docker's sig-proxy). With a tty and a terminal on stdin the
//! terminal is put in raw mode, so ^C and friends reach the process as bytes; it is restored on every way out.

use std::io::{IsTerminal, Read, Write};

use anyhow::anyhow;
use cm_api::v1::{self as pb, attach_request, attach_response, exec_request, exec_response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, future, stream};
use nix::sys::signal::Signal;
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connect::Client;
use crate::error::{DAEMON_ERROR, status_error};
use crate::tty::{RawMode, terminal_size};

/// Bytes of stdin per frame.
const STDIN_CHUNK: usize = 32 * 1024;

/// The client forwards SIGINT/SIGTERM this many times less one; the last makes it leave instead: an attached
/// container keeps running (its main process may ignore them: PID 1 has no default signal actions), an exec
/// process is killed by the server when its stream goes away.
const SIGNALS_BEFORE_DETACH: u32 = 3;

/// What to connect to and how.
pub struct Session {
    pub target: Target,
    /// Forward our stdin.
    pub stdin: bool,
    /// The process has a tty.
    pub tty: bool,
}

/// The process a session is about.
pub enum Target {
    /// A container's main process (Attach).
    Attach {
        /// Id, id prefix or name.
        container: String,
        /// Start the container once its output is connected.
        start: bool,
    },
    /// A new process in a running container (Exec).
    Exec(ExecCommand),
}

/// An Exec's start frame, less what the session fills in (tty, its size, stdin).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecCommand {
    /// Id, id prefix or name.
    pub container: String,
    pub argv: Vec<String>,
    /// "KEY=VALUE" entries added to the container's.
    pub env: Vec<String>,
    /// Empty: the container's.
    pub workdir: String,
    /// Empty: the container's.
    pub user: String,
    /// Keep the process running when our stream goes away (`exec -d`).
    pub detach_on_disconnect: bool,
}

/// Client frames after the start frame, the same for Attach and Exec.
#[derive(Clone, Debug, PartialEq)]
enum ClientFrame {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(pb::TtySize),
    Signal(String),
}

/// Server frames, the same for Attach and Exec.
#[derive(Clone, Debug, PartialEq)]
enum ServerFrame {
    Started(pb::ProcessStarted),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(pb::ExitStatus),
}

impl From<ClientFrame> for pb::AttachRequest {
    fn from(frame: ClientFrame) -> Self {
        use attach_request::Frame;
        let frame = match frame {
            ClientFrame::Stdin(data) => Frame::Stdin(pb::StdinData { data }),
            ClientFrame::CloseStdin => Frame::CloseStdin(true),
            ClientFrame::Resize(size) => Frame::Resize(size),
            ClientFrame::Signal(signal) => Frame::Signal(signal),
        };
        pb::AttachRequest { frame: Some(frame) }
    }
}

impl From<ClientFrame> for pb::ExecRequest {
    fn from(frame: ClientFrame) -> Self {
        use exec_request::Frame;
        let frame = match frame {
            ClientFrame::Stdin(data) => Frame::Stdin(pb::StdinData { data }),
            ClientFrame::CloseStdin => Frame::CloseStdin(true),
            ClientFrame::Resize(size) => Frame::Resize(size),
            ClientFrame::Signal(signal) => Frame::Signal(signal),
        };
        pb::ExecRequest { frame: Some(frame) }
    }
}

impl From<attach_response::Frame> for ServerFrame {
    fn from(frame: attach_response::Frame) -> Self {
        use attach_response::Frame;
        match frame {
            Frame::Started(started) => ServerFrame::Started(started),
            Frame::Stdout(bytes) => ServerFrame::Stdout(bytes),
            Frame::Stderr(bytes) => ServerFrame::Stderr(bytes),
            Frame::Exit(status) => ServerFrame::Exit(status),
        }
    }
}

impl From<exec_response::Frame> for ServerFrame {
    fn from(frame: exec_response::Frame) -> Self {
        use exec_response::Frame;
        match frame {
            Frame::Started(started) => ServerFrame::Started(started),
            Frame::Stdout(bytes) => ServerFrame::Stdout(bytes),
            Frame::Stderr(bytes) => ServerFrame::Stderr(bytes),
            Frame::Exit(status) => ServerFrame::Exit(status),
        }
    }
}

/// The server's frames, whichever the call; a frame with nothing set is skipped.
type ServerFrames = BoxStream<'static, Result<ServerFrame, tonic::Status>>;

/// A call's response messages as common frames; `frame` takes the oneof out of a message.
fn server_frames<M: Send + 'static>(
    messages: tonic::Streaming<M>,
    frame: fn(M) -> Option<ServerFrame>,
) -> ServerFrames {
    messages.filter_map(move |m| future::ready(m.map(frame).transpose())).boxed()
}

/// Makes the call: the start frame for `session`, then whatever comes on `frames`.
async fn open(
    client: &mut Client,
    session: &Session,
    tty_size: Option<pb::TtySize>,
    frames: mpsc::Receiver<ClientFrame>,
) -> Result<ServerFrames, tonic::Status> {
    let frames = ReceiverStream::new(frames);
    Ok(match &session.target {
        Target::Attach { container, start } => {
            let first = pb::AttachStart {
                container: container.clone(),
                start: *start,
                stdin: session.stdin,
                tty_size,
                detach_on_disconnect: false,
            };
            let first = pb::AttachRequest { frame: Some(attach_request::Frame::Start(first)) };
            let requests = stream::once(future::ready(first)).chain(frames.map(pb::AttachRequest::from));
            server_frames(client.attach(requests).await?.into_inner(), |m: pb::AttachResponse| m.frame.map(Into::into))
        }
        Target::Exec(command) => {
            let first = exec_start(command, session.tty, tty_size, session.stdin);
            let first = pb::ExecRequest { frame: Some(exec_request::Frame::Start(first)) };
            let requests = stream::once(future::ready(first)).chain(frames.map(pb::ExecRequest::from));
            server_frames(client.exec(requests).await?.into_inner(), |m: pb::ExecResponse| m.frame.map(Into::into))
        }
    })
}

fn exec_start(command: &ExecCommand, tty: bool, tty_size: Option<pb::TtySize>, stdin: bool) -> pb::ExecStart {
    pb::ExecStart {
        container: command.container.clone(),
        argv: command.argv.clone(),
        env: command.env.clone(),
        workdir: command.workdir.clone(),
        user: command.user.clone(),
        tty,
        tty_size,
        stdin,
        // The server picks one.
        exec_id: String::new(),
        detach_on_disconnect: command.detach_on_disconnect,
    }
}

/// Runs the session to the process's exit and returns the exit code to exit with. An Err means no exit status
/// came (the call failed or the stream ended early).
pub async fn session(client: &mut Client, session: Session) -> anyhow::Result<i32> {
    let raw = session.tty && session.stdin && std::io::stdin().is_terminal();
    let raw_mode = if raw { Some(RawMode::enable()?) } else { None };
    let end = pump(client, &session, raw).await;
    drop(raw_mode);
    match end? {
        End::Exited(status) => Ok(exit_code(&status)),
        End::Detached(signal) => {
            let what = match session.target {
                Target::Attach { .. } => "detaching; the container keeps running",
                Target::Exec(_) => "leaving; the server kills the process",
            };
            eprintln!("cm-client: interrupted {SIGNALS_BEFORE_DETACH} times: {what}");
            Ok(128 + signal as i32)
        }
        End::Signalled(signal) => Ok(128 + signal as i32),
    }
}

/// Makes the call and returns once the process has started (0), leaving it running: the caller asked the server
/// to keep it when the stream goes away (`exec -d`). A process that could not start reports as in a session.
pub async fn start_detached(client: &mut Client, session: Session) -> anyhow::Result<i32> {
    let tty_size = if session.tty { terminal_size() } else { None };
    // Held open to the end: nothing is sent, not even the half-close that would close the process's stdin.
    let (_tx, rx) = mpsc::channel(1);
    let mut output = open(client, &session, tty_size, rx).await.map_err(status_error)?;
    loop {
        match output.next().await {
            Some(Ok(ServerFrame::Started(_))) => return Ok(0),
            Some(Ok(ServerFrame::Exit(status))) => return Ok(exit_code(&status)),
            Some(Ok(ServerFrame::Stdout(_) | ServerFrame::Stderr(_))) => {}
            Some(Err(status)) => return Err(status_error(status)),
            None => return Err(anyhow!("the server ended the stream before the process started")),
        }
    }
}

/// The exit code to exit with for an exit frame, reporting why the process could not start, if it could not.
fn exit_code(status: &pb::ExitStatus) -> i32 {
    if status.error.is_empty() {
        return status.exit_code;
    }
    eprintln!("cm-client: {}", status.error);
    if status.exit_code == 0 { DAEMON_ERROR } else { status.exit_code }
}

/// How a session ended.
enum End {
    /// The exit frame.
    Exited(pb::ExitStatus),
    /// The user insisted on leaving without a tty (see SIGNALS_BEFORE_DETACH).
    Detached(Signal),
    /// SIGTERM or SIGHUP while the terminal was raw: leave (restoring it) rather than die raw.
    Signalled(Signal),
}

/// Relays frames both ways until the exit frame. `raw`: stdin is a terminal in raw mode.
async fn pump(client: &mut Client, session: &Session, raw: bool) -> anyhow::Result<End> {
    let tty_size = if session.tty { terminal_size() } else { None };
    let (tx, rx) = mpsc::channel(16);
    // Caught before the call, so a ^C while the server starts the process is forwarded too.
    let mut caught = Vec::new();
    if tty_size.is_some() {
        caught.push(Signal::SIGWINCH);
    }
    if !session.tty {
        // sig-proxy: these go to the process instead of ending the client.
        caught.extend([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT]);
    } else if raw {
        caught.extend([Signal::SIGTERM, Signal::SIGHUP]);
    }
    let mut signals = signals(&caught)?;
    let mut output = open(client, session, tty_size, rx).await.map_err(status_error)?;
    if session.stdin {
        forward_stdin(tx.clone());
    }
    let mut stops = 0;
    loop {
        tokio::select! {
            frame = output.next() => {
                match frame {
                    Some(Ok(ServerFrame::Stdout(bytes))) => write_all(&mut std::io::stdout(), &bytes),
                    Some(Ok(ServerFrame::Stderr(bytes))) => write_all(&mut std::io::stderr(), &bytes),
                    Some(Ok(ServerFrame::Exit(status))) => return Ok(End::Exited(status)),
                    Some(Ok(ServerFrame::Started(_))) => {}
                    Some(Err(status)) => return Err(status_error(status)),
                    None => return Err(anyhow!("the server ended the stream without the exit status")),
                }
            }
            Some(signal) = signals.next() => {
                if signal == Signal::SIGWINCH {
                    if let Some(size) = terminal_size() {
                        let _ = tx.send(ClientFrame::Resize(size)).await;
                    }
                } else if raw {
                    return Ok(End::Signalled(signal));
                } else {
                    if matches!(signal, Signal::SIGINT | Signal::SIGTERM) {
                        stops += 1;
                        if stops == SIGNALS_BEFORE_DETACH {
                            return Ok(End::Detached(signal));
                        }
                    }
                    let _ = tx.send(ClientFrame::Signal(signal.as_str().to_string())).await;
                }
            }
        }
    }
}

/// Writes the process's output as it comes. A closed stdout (`| head`) is not a reason to stop: the session
/// runs on to the exit status.
fn write_all(out: &mut impl Write, bytes: &[u8]) {
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// Copies stdin into stdin frames on a thread of its own (a blocking read cannot be cancelled; the thread
/// ends with the process), then closes the process's stdin at EOF.
fn forward_stdin(tx: mpsc::Sender<ClientFrame>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; STDIN_CHUNK];
        loop {
            let data = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => buf[..n].to_vec(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            if tx.blocking_send(ClientFrame::Stdin(data)).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(ClientFrame::CloseStdin);
    });
}

/// One stream of the caught signals. Catching one replaces its default action for the rest of the process.
fn signals(caught: &[Signal]) -> std::io::Result<impl Stream<Item = Signal> + Unpin> {
    let mut streams = Vec::new();
    for &signal in caught {
        let receiver = tokio::signal::unix::signal(SignalKind::from_raw(signal as i32))?;
        streams
            .push(stream::unfold(receiver, move |mut r| async move { r.recv().await.map(|()| (signal, r)) }).boxed());
    }
    // Never ends, so the select above never sees None.
    streams.push(stream::pending().boxed());
    Ok(stream::select_all(streams))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_become_the_same_attach_and_exec_frames() {
        let size = pb::TtySize { rows: 24, cols: 80 };
        let frames = [
            ClientFrame::Stdin(b"hi".to_vec()),
            ClientFrame::CloseStdin,
            ClientFrame::Resize(size),
            ClientFrame::Signal("SIGINT".into()),
        ];
        let attach: Vec<_> = frames.iter().cloned().map(|f| pb::AttachRequest::from(f).frame.unwrap()).collect();
        let exec: Vec<_> = frames.into_iter().map(|f| pb::ExecRequest::from(f).frame.unwrap()).collect();
        assert_eq!(
            attach,
            [
                attach_request::Frame::Stdin(pb::StdinData { data: b"hi".to_vec() }),
                attach_request::Frame::CloseStdin(true),
                attach_request::Frame::Resize(size),
                attach_request::Frame::Signal("SIGINT".into()),
            ]
        );
        assert_eq!(
            exec,
            [
                exec_request::Frame::Stdin(pb::StdinData { data: b"hi".to_vec() }),
                exec_request::Frame::CloseStdin(true),
                exec_request::Frame::Resize(size),
                exec_request::Frame::Signal("SIGINT".into()),
            ]
        );
    }

    #[test]
    fn attach_and_exec_server_frames_become_the_same_frames() {
        let started = pb::ProcessStarted { exec_id: "e1".into(), pid: 42 };
        let exit = pb::ExitStatus { exit_code: 3, ..Default::default() };
        let expected = [
            ServerFrame::Started(started.clone()),
            ServerFrame::Stdout(b"out".to_vec()),
            ServerFrame::Stderr(b"err".to_vec()),
            ServerFrame::Exit(exit.clone()),
        ];
        let attach = [
            attach_response::Frame::Started(started.clone()),
            attach_response::Frame::Stdout(b"out".to_vec()),
            attach_response::Frame::Stderr(b"err".to_vec()),
            attach_response::Frame::Exit(exit.clone()),
        ];
        let exec = [
            exec_response::Frame::Started(started),
            exec_response::Frame::Stdout(b"out".to_vec()),
            exec_response::Frame::Stderr(b"err".to_vec()),
            exec_response::Frame::Exit(exit),
        ];
        assert_eq!(attach.map(ServerFrame::from), expected);
        assert_eq!(exec.map(ServerFrame::from), expected);
    }

    #[test]
    fn the_exec_start_frame_carries_the_command_and_the_session() {
        let command = ExecCommand {
            container: "c".into(),
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=1".into()],
            workdir: "/tmp".into(),
            user: "nobody".into(),
            detach_on_disconnect: true,
        };
        let size = pb::TtySize { rows: 50, cols: 132 };
        assert_eq!(
            exec_start(&command, true, Some(size), false),
            pb::ExecStart {
                container: "c".into(),
                argv: command.argv.clone(),
                env: vec!["A=1".into()],
                workdir: "/tmp".into(),
                user: "nobody".into(),
                tty: true,
                tty_size: Some(size),
                stdin: false,
                exec_id: String::new(),
                detach_on_disconnect: true,
            }
        );
    }

    #[test]
    fn the_exit_code_is_the_processs_or_the_start_failures() {
        assert_eq!(exit_code(&pb::ExitStatus { exit_code: 7, ..Default::default() }), 7);
        assert_eq!(exit_code(&pb::ExitStatus { exit_code: 137, signal: "SIGKILL".into(), ..Default::default() }), 137);
        let not_found =
            pb::ExitStatus { exit_code: 127, error: "nosuch: executable file not found".into(), ..Default::default() };
        assert_eq!(exit_code(&not_found), 127);
        // A start failure without a code of its own is the daemon's.
        assert_eq!(exit_code(&pb::ExitStatus { error: "cannot start".into(), ..Default::default() }), 125);
    }
}
