//! The balloon's state shared by the device, its worker and the VMM, and
//! the VMM's handle on it ([`BalloonControl`]): the target, what the
//! driver holds, the work counters, the statistics interval, and what a
//! snapshot keeps.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use vmm_sys_util::eventfd::EventFd;

use super::stats::GuestStats;
use crate::virtio::Interrupt;

/// What survives a snapshot of the balloon besides its queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonState {
    /// The host's target, in 4 KiB pages.
    pub target_pages: u32,
    /// What the driver last wrote to `actual`.
    pub actual_pages: u32,
}

/// Counters of the balloon's work, for the API and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BalloonStats {
    /// The host's target, in 4 KiB pages.
    pub target_pages: u32,
    /// What the driver says it holds, in 4 KiB pages.
    pub actual_pages: u32,
    /// Pages inflated so far (PFNs accepted on the inflate queue).
    pub inflated_pages: u64,
    /// Pages deflated so far.
    pub deflated_pages: u64,
    /// Bytes given back to the host (inflate and free page reporting).
    pub discarded_bytes: u64,
    /// PFNs or ranges refused as outside guest RAM.
    pub refused: u64,
    /// Statistics buffers read.
    pub stats_updates: u64,
    /// Statistics buffers refused as garbage.
    pub stats_refused: u64,
}

/// Why the statistics interval cannot change.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatsIntervalError {
    /// Statistics were off at boot, or would be turned off (Firecracker's
    /// rule: the stats queue exists or not from boot).
    #[error("balloon statistics cannot be turned on or off after boot")]
    OnOffAfterBoot,
}

/// The balloon's state shared between the device, its worker and the VMM.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) target_pages: AtomicU32,
    pub(super) actual_pages: AtomicU32,
    pub(super) inflated_pages: AtomicU64,
    pub(super) deflated_pages: AtomicU64,
    pub(super) discarded_bytes: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) stats_updates: AtomicU64,
    pub(super) stats_refused: AtomicU64,
    /// Seconds between statistics refreshes (0: no stats queue).
    pub(super) stats_interval_s: AtomicU16,
    /// What the guest last reported.
    pub(super) guest_stats: Mutex<GuestStats>,
    /// Tells the worker the interval changed: it re-arms its timer and asks
    /// the guest for statistics at once.
    pub(super) stats_changed: EventFd,
    /// The transport's interrupt, once a driver activated the device.
    pub(super) interrupt: Mutex<Option<Arc<Interrupt>>>,
}

impl Shared {
    pub(super) fn guest_stats(&self) -> MutexGuard<'_, GuestStats> {
        self.guest_stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The VMM's handle on a balloon: sets the target, reads what the guest
/// did. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BalloonControl(pub(super) Arc<Shared>);

impl BalloonControl {
    /// Sets the target to `pages` 4 KiB pages and, if a driver is running,
    /// tells it through a config-change interrupt.
    pub fn set_target(&self, pages: u32) {
        self.0.target_pages.store(pages, Ordering::Release);
        let interrupt = self.0.interrupt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(interrupt) = interrupt.as_ref() {
            interrupt.signal_config_change();
        }
    }

    /// The counters and sizes now.
    pub fn stats(&self) -> BalloonStats {
        let s = &self.0;
        BalloonStats {
            target_pages: s.target_pages.load(Ordering::Acquire),
            actual_pages: s.actual_pages.load(Ordering::Acquire),
            inflated_pages: s.inflated_pages.load(Ordering::Relaxed),
            deflated_pages: s.deflated_pages.load(Ordering::Relaxed),
            discarded_bytes: s.discarded_bytes.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            stats_updates: s.stats_updates.load(Ordering::Relaxed),
            stats_refused: s.stats_refused.load(Ordering::Relaxed),
        }
    }

    /// Whether the balloon has a stats queue (an interval at boot).
    pub fn stats_enabled(&self) -> bool {
        self.0.stats_interval_s.load(Ordering::Acquire) != 0
    }

    /// Seconds between statistics refreshes (0: no stats queue).
    pub fn stats_interval_s(&self) -> u16 {
        self.0.stats_interval_s.load(Ordering::Acquire)
    }

    /// The statistics the guest last reported.
    pub fn guest_stats(&self) -> GuestStats {
        *self.0.guest_stats()
    }

    /// A new statistics interval, with a refresh asked for at once. Stats
    /// cannot be turned on or off: the stats queue exists from boot or not.
    pub fn set_stats_interval(&self, seconds: u16) -> Result<(), StatsIntervalError> {
        let old = self.0.stats_interval_s.load(Ordering::Acquire);
        if old == seconds {
            return Ok(());
        }
        if old == 0 || seconds == 0 {
            return Err(StatsIntervalError::OnOffAfterBoot);
        }
        self.0.stats_interval_s.store(seconds, Ordering::Release);
        // A full counter still wakes the worker, so a write error is moot.
        let _ = self.0.stats_changed.write(1);
        Ok(())
    }

    /// Target and actual, for a snapshot.
    pub fn state(&self) -> BalloonState {
        BalloonState {
            target_pages: self.0.target_pages.load(Ordering::Acquire),
            actual_pages: self.0.actual_pages.load(Ordering::Acquire),
        }
    }

    /// Puts back what [`Self::state`] saved (before the guest runs).
    pub fn restore(&self, state: &BalloonState) {
        self.0
            .target_pages
            .store(state.target_pages, Ordering::Release);
        self.0
            .actual_pages
            .store(state.actual_pages, Ordering::Release);
    }
}
