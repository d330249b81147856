//! The balloon's worker: inflate, deflate, free page reports and the
//! statistics queue, each chain's PFNs checked against guest RAM and the
//! pages given back to the host.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use guest_memory::GuestMemoryMmap;
use log::debug;
use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

use super::control::Shared;
use super::pages::{align_to_host, coalesce, discard, Range};
use super::stats::{arm, StatsProtocol};
use super::{VIRTIO_BALLOON_F_REPORTING, VIRTIO_BALLOON_F_STATS_VQ};
use crate::virtio::worker::{QueuePosition, WorkerError, WorkerHandler};
use crate::virtio::{drain_queue, feature, Chain, Interrupt};
use crate::LogLimit;

/// Most PFNs read from one chain (64 KiB of them): bounded work per
/// chain. Linux sends at most 256 per chain; the rest of a longer one is
/// ignored.
const MAX_PFNS_PER_CHAIN: usize = 16 * 1024;

static REFUSED: LogLimit = LogLimit::new();
static DISCARD_FAILED: LogLimit = LogLimit::new();

pub(super) const INFLATE: usize = 0;
pub(super) const DEFLATE: usize = 1;
/// Backend fds of a balloon with a stats queue, in this order.
pub(super) const STATS_TIMER: usize = 0;
pub(super) const STATS_CHANGED: usize = 1;

/// Which queue index serves what: absent queues take no index (a driver
/// numbers only the queues of the features it accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QueueRoles {
    pub(super) stats: Option<usize>,
    pub(super) reporting: Option<usize>,
}

impl QueueRoles {
    pub(super) fn of(features: u64) -> Self {
        let has = |bit| features & feature(bit) != 0;
        let stats = has(VIRTIO_BALLOON_F_STATS_VQ).then_some(2);
        let next = 2 + usize::from(stats.is_some());
        let reporting = has(VIRTIO_BALLOON_F_REPORTING).then_some(next);
        Self { stats, reporting }
    }
}

pub(super) struct BalloonHandler {
    pub(super) shared: Arc<Shared>,
    pub(super) mem: GuestMemoryMmap,
    /// Inflate, deflate, then stats and reporting as `roles` says.
    pub(super) queues: Vec<Queue>,
    pub(super) roles: QueueRoles,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) host_page: u64,
    pub(super) stats_timer: Arc<Mutex<TimerFd>>,
    pub(super) stats: StatsProtocol,
}

impl BalloonHandler {
    fn receive_stats(&mut self, index: usize) -> Result<(), virtio_queue::Error> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        let mut guest_stats = self.shared.guest_stats();
        let received =
            self.stats
                .receive(index, queue, &self.mem, &self.interrupt, &mut guest_stats)?;
        let shared = &self.shared;
        shared
            .stats_updates
            .fetch_add(received.parsed, Ordering::Relaxed);
        shared
            .stats_refused
            .fetch_add(received.refused, Ordering::Relaxed);
        Ok(())
    }

    /// The interval passed (or changed): the guest gets its buffer back to
    /// refill.
    pub(super) fn ask_for_stats(&mut self) -> Result<(), WorkerError> {
        let Some(index) = self.roles.stats else {
            return Ok(());
        };
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        self.stats
            .give_back(index, queue, &self.mem, &self.interrupt)
            .map_err(|source| WorkerError::Queue { index, source })
    }
}

impl WorkerHandler for BalloonHandler {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        let mut positions: Vec<_> = self.queues.iter().map(QueuePosition::of).collect();
        if let Some((index, queue)) = self
            .roles
            .stats
            .and_then(|i| Some((i, self.queues.get(i)?)))
        {
            positions[index].next_avail = self.stats.resume_position(queue);
        }
        positions
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        if Some(index) == self.roles.stats {
            return self
                .receive_stats(index)
                .map_err(|source| WorkerError::Queue { index, source });
        }
        let reporting = self.roles.reporting;
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        let (shared, mem, host_page) = (&*self.shared, &self.mem, self.host_page);
        drain_queue(index, queue, mem, &self.interrupt, |chain| {
            match index {
                INFLATE => inflate(shared, mem, host_page, chain),
                DEFLATE => deflate(shared, mem, chain),
                _ if Some(index) == reporting => report_free(shared, mem, host_page, chain),
                _ => {}
            }
            0
        })
        .map_err(|source| WorkerError::Queue { index, source })
    }

    fn backend_fds(&self) -> Vec<(RawFd, EventSet)> {
        if self.roles.stats.is_none() {
            return Vec::new();
        }
        let timer = self
            .stats_timer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_raw_fd();
        vec![
            (timer, EventSet::IN),
            (self.shared.stats_changed.as_raw_fd(), EventSet::IN),
        ]
    }

    fn backend_event(&mut self, index: usize, _events: EventSet) -> Result<(), WorkerError> {
        match index {
            STATS_TIMER => {
                let fired = self
                    .stats_timer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .wait();
                // WouldBlock: looked at after a pause, it had not fired.
                if fired.is_ok() {
                    self.ask_for_stats()?;
                }
            }
            // WouldBlock: looked at after a pause, nothing changed.
            STATS_CHANGED if self.shared.stats_changed.read().is_ok() => {
                let seconds = self.shared.stats_interval_s.load(Ordering::Acquire);
                arm(&self.stats_timer, seconds).map_err(WorkerError::Backend)?;
                self.ask_for_stats()?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The PFNs (le32) in the chain's readable part, at most
/// [`MAX_PFNS_PER_CHAIN`].
fn read_pfns(mem: &GuestMemoryMmap, chain: &Chain) -> Vec<u32> {
    if let Err(e) = chain.validate(mem) {
        REFUSED.warn(format_args!(
            "virtio-balloon: chain {} refused: {e}",
            chain.head
        ));
        return Vec::new();
    }
    let readable = chain.readable();
    let count = (readable.len() / 4).min(MAX_PFNS_PER_CHAIN);
    let mut bytes = vec![0u8; count * 4];
    if readable.read_into(mem, &mut bytes).is_err() {
        return Vec::new();
    }
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn inflate(shared: &Shared, mem: &GuestMemoryMmap, host_page: u64, chain: &Chain) {
    let mut pfns = read_pfns(mem, chain);
    let runs = coalesce(mem, &mut pfns);
    note_refused(shared, runs.refused, "PFNs outside guest RAM");
    shared
        .inflated_pages
        .fetch_add(runs.pages, Ordering::Relaxed);
    for range in runs.ranges {
        discard_range(shared, mem, host_page, range);
    }
}

fn deflate(shared: &Shared, mem: &GuestMemoryMmap, chain: &Chain) {
    let mut pfns = read_pfns(mem, chain);
    let runs = coalesce(mem, &mut pfns);
    note_refused(shared, runs.refused, "deflated PFNs outside guest RAM");
    shared
        .deflated_pages
        .fetch_add(runs.pages, Ordering::Relaxed);
}

/// Free page reporting: each buffer of the chain is a free range.
fn report_free(shared: &Shared, mem: &GuestMemoryMmap, host_page: u64, chain: &Chain) {
    if let Err(e) = chain.validate(mem) {
        note_refused(shared, 1, "free page report");
        debug!("virtio-balloon: report {}: {e}", chain.head);
        return;
    }
    let (readable, writable) = (chain.readable(), chain.writable());
    for (addr, len) in readable.parts().chain(writable.parts()) {
        let start = addr.0;
        let range = Range {
            start,
            end: start.saturating_add(len as u64),
        };
        discard_range(shared, mem, host_page, range);
    }
}

fn discard_range(shared: &Shared, mem: &GuestMemoryMmap, host_page: u64, range: Range) {
    let Some(range) = align_to_host(range, host_page) else {
        return;
    };
    match discard(mem, range) {
        Ok(bytes) => {
            shared.discarded_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        Err(e) => DISCARD_FAILED.warn(format_args!(
            "virtio-balloon: cannot drop {:#x}..{:#x}: {e}",
            range.start, range.end
        )),
    }
}

fn note_refused(shared: &Shared, count: u64, what: &str) {
    if count > 0 {
        shared.refused.fetch_add(count, Ordering::Relaxed);
        REFUSED.warn(format_args!("virtio-balloon: {count} {what} refused"));
    }
}
