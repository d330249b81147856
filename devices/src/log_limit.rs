//! Messages a guest can cause at will, rate-limited: the first few are
//! logged, later ones only counted, with the count logged at every power
//! of ten (10, 100, 1000, …) so the log stays small however hard the guest
//! tries. Every legacy and virtio device uses it; keep one `static` per
//! kind of message.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use log::Level;

/// Occurrences logged in full before only counts are.
const LOGGED: u64 = 5;

/// One kind of guest-triggerable message; keep it in a `static`.
#[derive(Debug, Default)]
pub struct LogLimit {
    seen: AtomicU64,
}

impl LogLimit {
    /// A limit with nothing seen yet.
    pub const fn new() -> Self {
        Self {
            seen: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence and logs it at `warn` if it is among the
    /// first few, or the count if that is a power of ten.
    pub fn warn(&self, message: fmt::Arguments) {
        self.log(Level::Warn, message);
    }

    /// [`Self::warn`] at `error` level, for failures that cost the guest
    /// its device until the driver resets it.
    pub fn error(&self, message: fmt::Arguments) {
        self.log(Level::Error, message);
    }

    /// [`Self::warn`] at `info` level, for events that are no fault but
    /// that a guest can repeat (a power-off request, written again and
    /// again before the vCPU is stopped).
    pub fn info(&self, message: fmt::Arguments) {
        self.log(Level::Info, message);
    }

    fn log(&self, level: Level, message: fmt::Arguments) {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen <= LOGGED {
            log::log!(level, "{message}");
        } else if is_power_of_ten(seen) {
            log::log!(
                level,
                "{message} ({seen} times so far; only counts are logged)"
            );
        }
    }

    /// Occurrences so far.
    pub fn count(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

fn is_power_of_ten(n: u64) -> bool {
    n.checked_ilog10().is_some_and(|k| 10u64.pow(k) == n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_log::Capture;

    #[test]
    fn counts_everything_and_recognises_powers_of_ten() {
        let limit = LogLimit::new();
        for _ in 0..120 {
            limit.warn(format_args!("x"));
        }
        assert_eq!(limit.count(), 120);
        let logged: Vec<u64> = (1..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
    }

    #[test]
    fn logs_the_first_five_then_counts_at_powers_of_ten() {
        static LIMIT: LogLimit = LogLimit::new();
        let log = Capture::start();
        for _ in 0..10_000 {
            LIMIT.error(format_args!("limit test"));
        }
        let lines = log.warnings_here();
        assert_eq!(lines.len(), 9, "{lines:#?}");
        assert!(lines[8].ends_with("limit test (10000 times so far; only counts are logged)"));
    }
}
