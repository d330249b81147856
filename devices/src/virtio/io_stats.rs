//! Per-device I/O counters a device model updates as it serves requests:
//! requests, bytes each way and failures. Transport-neutral; every device
//! reaches its counters through its [`Interrupt`](super::Interrupt)
//! (`interrupt.io_stats()`). The counters are cumulative for the whole
//! run: a device reset keeps them.
//!
//! Direction is always seen from the guest: `bytes_read` is data the
//! device put into guest memory (a disk read, a received frame, entropy,
//! console input), `bytes_written` is data the device took from guest
//! memory (a disk write, a transmitted frame, console output).

use std::sync::atomic::{AtomicU64, Ordering};

/// I/O counters of one device.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Requests served, successful or not (block requests, frames each way,
    /// entropy requests, console buffers each way).
    pub requests: AtomicU64,
    /// Data bytes the device gave to the guest.
    pub bytes_read: AtomicU64,
    /// Data bytes the device took from the guest.
    pub bytes_written: AtomicU64,
    /// Requests answered with an error status or dropped (also counted in
    /// `requests`).
    pub errors: AtomicU64,
}

/// A copy of [`IoStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStatsSnapshot {
    /// See [`IoStats::requests`].
    pub requests: u64,
    /// See [`IoStats::bytes_read`].
    pub bytes_read: u64,
    /// See [`IoStats::bytes_written`].
    pub bytes_written: u64,
    /// See [`IoStats::errors`].
    pub errors: u64,
}

impl IoStats {
    /// The current values.
    pub fn snapshot(&self) -> IoStatsSnapshot {
        IoStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// Counts one successful request that gave `read` bytes to the guest
    /// and took `written` bytes from it.
    pub fn record(&self, read: usize, written: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if read > 0 {
            self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        }
        if written > 0 {
            self.bytes_written
                .fetch_add(written as u64, Ordering::Relaxed);
        }
    }

    /// Counts one request answered with an error or dropped.
    pub fn record_error(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_include_errors() {
        let stats = IoStats::default();
        stats.record(512, 0);
        stats.record(0, 100);
        stats.record_error();
        assert_eq!(
            stats.snapshot(),
            IoStatsSnapshot {
                requests: 3,
                bytes_read: 512,
                bytes_written: 100,
                errors: 1,
            }
        );
    }
}
