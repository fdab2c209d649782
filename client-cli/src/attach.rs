//! An attached session over the Attach stream: the container's stdout and stderr to ours, our stdin to the
//! container, terminal size changes as resize frames, and, without a tty, our SIGINT/SIGTERM/... as signal
//! frames (docker's sig-proxy). With a tty and a terminal on stdin the terminal is put in raw mode, so ^C and
//! friends reach the container as bytes; it is restored on every way out.

use std::io::{IsTerminal, Read, Write};
use std::sync::Mutex;

use anyhow::anyhow;
use cm_api::v1::{self as pb, attach_request::Frame as Out, attach_response::Frame as In};
use futures::{Stream, StreamExt, stream};
use nix::sys::signal::Signal;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::SignalKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connect::Client;
use crate::status_error;

/// Bytes of stdin per frame.
const STDIN_CHUNK: usize = 32 * 1024;

/// The client forwards SIGINT/SIGTERM this many times less one; the last makes it detach instead, leaving the
/// container running (its main process may ignore them: PID 1 has no default signal actions).
const SIGNALS_BEFORE_DETACH: u32 = 3;

/// What to attach to and how.
pub struct Session {
    /// Id, id prefix or name.
    pub container: String,
    /// Start the container once its output is connected.
    pub start: bool,
    /// Forward our stdin.
    pub stdin: bool,
    /// The container has a tty.
    pub tty: bool,
}

/// Runs the session to the container's exit and returns the exit code to exit with. An Err means no exit status
/// came (the call failed or the stream ended early).
pub async fn session(client: &mut Client, session: Session) -> anyhow::Result<i32> {
    let raw = session.tty && session.stdin && std::io::stdin().is_terminal();
    let raw_mode = if raw { Some(RawMode::enable()?) } else { None };
    let end = pump(client, &session, raw).await;
    drop(raw_mode);
    match end? {
        End::Exited(status) => {
            if !status.error.is_empty() {
                eprintln!("cm-client: {}", status.error);
                if status.exit_code == 0 {
                    return Ok(crate::run::DAEMON_ERROR);
                }
            }
            Ok(status.exit_code)
        }
        End::Detached(signal) => {
            eprintln!("cm-client: interrupted {SIGNALS_BEFORE_DETACH} times: detaching; the container keeps running");
            Ok(128 + signal as i32)
        }
        End::Signalled(signal) => Ok(128 + signal as i32),
    }
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
    let start = pb::AttachStart {
        container: session.container.clone(),
        start: session.start,
        stdin: session.stdin,
        tty_size,
        detach_on_disconnect: false,
    };
    tx.send(frame(Out::Start(start))).await.expect("the receiver is alive");
    // Caught before the call, so a ^C while the server starts the container is forwarded too.
    let mut caught = Vec::new();
    if tty_size.is_some() {
        caught.push(Signal::SIGWINCH);
    }
    if !session.tty {
        // sig-proxy: these go to the container instead of ending the client.
        caught.extend([Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT]);
    } else if raw {
        caught.extend([Signal::SIGTERM, Signal::SIGHUP]);
    }
    let mut signals = signals(&caught)?;
    let mut output = client.attach(ReceiverStream::new(rx)).await.map_err(status_error)?.into_inner();
    if session.stdin {
        forward_stdin(tx.clone());
    }
    let mut stops = 0;
    loop {
        tokio::select! {
            message = output.message() => {
                let frame = match message {
                    Ok(Some(message)) => message.frame,
                    Ok(None) => return Err(anyhow!("the server ended the attach stream without the exit status")),
                    Err(status) => return Err(status_error(status)),
                };
                match frame {
                    Some(In::Stdout(bytes)) => write_all(&mut std::io::stdout(), &bytes),
                    Some(In::Stderr(bytes)) => write_all(&mut std::io::stderr(), &bytes),
                    Some(In::Exit(status)) => return Ok(End::Exited(status)),
                    Some(In::Started(_)) | None => {}
                }
            }
            Some(signal) = signals.next() => {
                if signal == Signal::SIGWINCH {
                    if let Some(size) = terminal_size() {
                        let _ = tx.send(frame(Out::Resize(size))).await;
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
                    let _ = tx.send(frame(Out::Signal(signal.as_str().to_string()))).await;
                }
            }
        }
    }
}

fn frame(frame: Out) -> pb::AttachRequest {
    pb::AttachRequest { frame: Some(frame) }
}

/// Writes container output as it comes. A closed stdout (`| head`) is not a reason to stop: the session
/// runs on to the exit status.
fn write_all(out: &mut impl Write, bytes: &[u8]) {
    let _ = out.write_all(bytes).and_then(|()| out.flush());
}

/// Copies stdin into stdin frames on a thread of its own (a blocking read cannot be cancelled; the thread
/// ends with the process), then closes the container's stdin at EOF.
fn forward_stdin(tx: mpsc::Sender<pb::AttachRequest>) {
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
            if tx.blocking_send(frame(Out::Stdin(pb::StdinData { data }))).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send(frame(Out::CloseStdin(true)));
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

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The terminal's size, from stdout or else stdin; None when neither is a terminal.
fn terminal_size() -> Option<pb::TtySize> {
    [1, 0].into_iter().find_map(|fd| {
        let mut size = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass; fds 0 and 1 stay open for our lifetime.
        unsafe { tiocgwinsz(fd, &mut size) }.ok()?;
        (size.ws_row > 0 && size.ws_col > 0).then(|| pb::TtySize { rows: size.ws_row.into(), cols: size.ws_col.into() })
    })
}

/// The terminal settings to put back, shared with the panic hook.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

/// Stdin's terminal in raw mode while this lives.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).map_err(|e| anyhow!("reading the terminal settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        // A panic anywhere (another thread included) must not leave the terminal raw.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(|e| anyhow!("setting the terminal raw: {e}"))?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Puts the saved terminal settings back, once.
fn restore() {
    if let Some(saved) = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &saved);
    }
}
