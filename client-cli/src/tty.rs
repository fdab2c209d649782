//! The terminal: whether stdin can be forwarded with a tty, its size, and raw mode while a session runs.

use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::{anyhow, bail};
use cm_api::v1 as pb;
use nix::sys::termios::{self, SetArg, Termios};

/// As docker: a tty process's stdin can only be forwarded from a terminal.
pub fn check_stdin(stdin: bool, tty: bool) -> anyhow::Result<()> {
    if stdin && tty && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    Ok(())
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The terminal's size, from stdout or else stdin; None when neither is a terminal.
pub fn terminal_size() -> Option<pb::TtySize> {
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
pub struct RawMode;

impl RawMode {
    pub fn enable() -> anyhow::Result<RawMode> {
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
