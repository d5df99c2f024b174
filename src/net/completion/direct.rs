//! Nonblocking `sendmsg`/`recv` straight from and into the caller's buffers: the path a
//! [`CompletionStream`](super::CompletionStream) takes while a transfer streams (see the
//! parent module's "Streaming transfers").
//!
//! Both calls pass `MSG_DONTWAIT`, so they never block the shard whatever mode the socket is
//! in (monoio leaves io_uring sockets blocking). A call that would block answers
//! [`Outcome::WouldBlock`], and the caller goes back to the ring, where the kernel waits for
//! the socket instead of the shard.

use std::io;
use std::os::fd::RawFd;

use tokio::io::ReadBuf;

/// The most slices one `sendmsg` carries; the rest wait for the next call, as with any
/// partial write. Far below `IOV_MAX` (1024), and far above what h2 or hyper hand over.
const MAX_SLICES: usize = 64;

/// What a direct call did.
#[derive(Debug)]
pub(super) enum Outcome {
    /// This many bytes were sent, or received into the buffer (0 on a receive: end of stream).
    Done(usize),
    /// The socket's buffer is full (send) or empty (receive): nothing happened.
    WouldBlock,
}

/// Sends what the kernel's socket buffer takes of `bufs` now.
pub(super) fn send(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<Outcome> {
    let bufs = &bufs[..bufs.len().min(MAX_SLICES)];
    // SAFETY: an all-zero `msghdr` is valid (no name, no control data); `IoSlice` is
    // guaranteed ABI-compatible with `iovec` on Unix, and the kernel only reads through it
    // during the call, while `bufs` is borrowed.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr().cast_mut().cast::<libc::iovec>();
    msg.msg_iovlen = bufs.len();
    // SAFETY: `msg` points at live memory for the whole call (see above).
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    outcome(sent)
}

/// Receives what the socket holds now, up to the unfilled part of `out`, and marks it filled.
pub(super) fn recv(fd: RawFd, out: &mut ReadBuf<'_>) -> io::Result<Outcome> {
    // SAFETY: the kernel only writes into the unfilled part, and only the `n` bytes it reports
    // are then marked initialized and filled.
    let unfilled = unsafe { out.unfilled_mut() };
    let received = unsafe {
        libc::recv(
            fd,
            unfilled.as_mut_ptr().cast(),
            unfilled.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let outcome = outcome(received)?;
    if let Outcome::Done(n) = outcome {
        // SAFETY: the kernel initialized `n` bytes at the start of the unfilled part.
        unsafe { out.assume_init(n) };
        out.advance(n);
    }
    Ok(outcome)
}

fn outcome(ret: isize) -> io::Result<Outcome> {
    match usize::try_from(ret) {
        Ok(n) => Ok(Outcome::Done(n)),
        Err(_) => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(Outcome::WouldBlock),
                _ => Err(e),
            }
        }
    }
}
