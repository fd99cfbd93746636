//! A stop signal for the supervisor's threads that wakes them at once (an eventfd next to a
//! flag), so a session ends as soon as its command does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once; every waiter wakes.
pub struct Stop {
    flag: AtomicBool,
    fd: OwnedFd,
}

impl Stop {
    /// A new, unset stop.
    pub fn new() -> std::io::Result<Stop> {
        // SAFETY: eventfd with valid flags; the fd is ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created for us.
        Ok(Stop {
            flag: AtomicBool::new(false),
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sets it and wakes every waiter.
    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether it is set.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Waits until `fd` (if any) is readable, the stop is set, or `timeout` passes. Returns
    /// true when `fd` is readable.
    pub fn wait(&self, fd: Option<RawFd>, timeout: Duration) -> bool {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                2,
                timeout.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        fds[1].revents & libc::POLLIN != 0
    }
}
