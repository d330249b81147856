//! virtio-net's transmit queue. Each frame goes to the TAP as soon as the
//! driver queues it; its completion (the used entry) is held back and
//! returned in a batch, with one interrupt: once half the ring or
//! [`BATCH_BYTES`] of frames is held, when frames arrive from the TAP,
//! [`HOLD`] after the first was held (a timerfd), or before the worker
//! parks.
//!
//! Why hold them: the guest's TCP keeps little data queued below the
//! socket and merges small writes into larger segments only while earlier
//! ones are still in the device (TCP small queues and autocorking). A
//! device that completes each frame at once gets one segment per write —
//! busybox `nc` copies in small chunks — and an interrupt per segment.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guest_memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::timerfd::TimerFd;

use super::{add_used_batch, guarded, notify_since, Interrupt};

/// The longest a completion is held.
pub const HOLD: Duration = Duration::from_micros(250);
/// Frame bytes held that close a batch early.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Transmit completions held for the next batch, and the timer that
/// closes it.
pub struct TxBatch {
    held: Vec<(u16, u32)>,
    held_bytes: usize,
    timer: Arc<Mutex<TimerFd>>,
    armed: bool,
}

impl TxBatch {
    /// An empty batch closed by `timer` (see [`super::timer`]).
    pub fn new(timer: Arc<Mutex<TimerFd>>) -> Self {
        Self {
            held: Vec::new(),
            held_bytes: 0,
            timer,
            armed: false,
        }
    }

    /// Holds the completion of chain `head`, which carried `bytes`; true
    /// if the batch is full and should be published now.
    pub fn hold(&mut self, queue: &Queue, head: u16, bytes: usize) -> bool {
        // The device writes nothing into a transmit chain.
        self.held.push((head, 0));
        self.held_bytes += bytes;
        self.held.len() >= usize::from(queue.size()).div_ceil(2) || self.held_bytes >= BATCH_BYTES
    }

    /// The timer's fd, for the worker's epoll.
    pub fn timer_fd(&self) -> RawFd {
        self.timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_raw_fd()
    }

    /// Starts the hold timer if completions are held and it is not running.
    pub fn arm(&mut self) -> io::Result<()> {
        if self.held.is_empty() || self.armed {
            return Ok(());
        }
        let mut timer = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        timer.reset(HOLD, None).map_err(io::Error::from)?;
        self.armed = true;
        Ok(())
    }

    /// The timer fired (or may have: after a pause the worker asks anyway).
    pub fn timer_fired(&mut self) {
        let mut timer = self.timer.lock().unwrap_or_else(|p| p.into_inner());
        // Nonblocking: WouldBlock when it had not fired yet; it then fires
        // later with nothing or a newer batch held, and does no harm.
        let _ = timer.wait();
        self.armed = false;
    }

    /// Returns the held completions through the used ring of `queue`
    /// (queue `index`), and interrupts the driver if it asked for it.
    /// False if the worker was told to stop (nothing was written).
    pub fn publish(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        interrupt: &Interrupt,
    ) -> Result<bool, virtio_queue::Error> {
        if self.held.is_empty() {
            return Ok(true);
        }
        let old_used = queue.next_used();
        let held = &self.held;
        let written = guarded(|| {
            add_used_batch(queue, mem, held)?;
            notify_since(index, queue, mem, interrupt, old_used)
        })?;
        self.held.clear();
        self.held_bytes = 0;
        Ok(written.is_some())
    }
}
