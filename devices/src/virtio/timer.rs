//! The timerfd a device worker watches beside its queues (the balloon's
//! statistics interval, virtio-net's transmit batches): made with the
//! device, before the VMM's threads are confined, and re-armed on the
//! worker, whose filter allows only `timerfd_settime`.

use std::io;
use std::os::fd::AsRawFd;

use vmm_sys_util::timerfd::TimerFd;

/// A timerfd whose reads never block: after a pause the worker looks at
/// every backend fd whether it fired or not.
pub fn nonblocking_timer() -> io::Result<TimerFd> {
    let timer = TimerFd::new().map_err(io::Error::from)?;
    // SAFETY: F_SETFL on an fd this function owns; no memory is passed.
    let set = unsafe { libc::fcntl(timer.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timer)
}
