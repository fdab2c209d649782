//! The container's stdio: pipes dup'ed onto 0, 1 and 2, or a terminal allocated from the container's own
//! devpts (so ttyname works inside), whose master goes to the monitor over a socket and whose slave becomes
//! the controlling terminal.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags};

use super::error::{InitError, io_err, setup_err};
use super::rootfs::dir_in_root;

/// Allocates the pty, makes it the controlling terminal of a new session and the process's stdio.
pub fn attach(root: &OwnedFd, socket: BorrowedFd<'_>, size: (u16, u16)) -> Result<(), InitError> {
    let slave = open_console(root, socket, size)?;
    make_controlling_terminal(&slave)?;
    dup_stdio([slave.as_fd(), slave.as_fd(), slave.as_fd()])
}

fn make_controlling_terminal(slave: &OwnedFd) -> Result<(), InitError> {
    nix::unistd::setsid().map_err(setup_err("setsid"))?;
    // SAFETY: TIOCSCTTY on a valid pty slave fd.
    if unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TIOCSCTTY, 0) } < 0 {
        return Err(setup_err("make the pty the controlling terminal")(nix::Error::last()));
    }
    Ok(())
}

/// Makes the three descriptors the process's stdin, stdout and stderr.
pub fn dup_stdio(fds: [BorrowedFd<'_>; 3]) -> Result<(), InitError> {
    for (target, fd) in fds.into_iter().enumerate() {
        // SAFETY: dup2 onto the standard descriptors of this single-threaded child.
        if unsafe { nix::libc::dup2(fd.as_raw_fd(), target as i32) } < 0 {
            return Err(setup_err("set up stdio")(nix::Error::last()));
        }
    }
    Ok(())
}

/// Allocates a pty from the container's devpts, applies the initial size (before the command starts), sends
/// the master to the monitor, and returns the slave.
fn open_console(root: &OwnedFd, socket: BorrowedFd<'_>, (rows, cols): (u16, u16)) -> Result<OwnedFd, InitError> {
    let pts = dir_in_root(root, "dev/pts")?;
    let master = rustix::fs::openat(&pts, "ptmx", OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
        .map_err(io_err("open /dev/pts/ptmx"))?;
    let unlock: nix::libc::c_int = 0;
    // SAFETY: pty ioctls on the master we just opened, with properly typed arguments; TIOCGPTPEER returns a
    // new descriptor that nothing else owns.
    let slave = unsafe {
        if nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSPTLCK, &unlock) < 0 {
            return Err(setup_err("unlock the pty")(nix::Error::last()));
        }
        if rows > 0 && cols > 0 {
            let size = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size);
        }
        let fd = nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCGPTPEER, nix::libc::O_RDWR | nix::libc::O_NOCTTY);
        if fd < 0 {
            return Err(setup_err("open the pty slave")(nix::Error::last()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let fds = [master.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        socket.as_raw_fd(),
        &[std::io::IoSlice::new(b"m")],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(setup_err("send the pty to the monitor"))?;
    Ok(slave)
}
