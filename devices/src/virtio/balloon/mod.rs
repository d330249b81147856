//! virtio-balloon: the host sets a target size (`num_pages`), the guest
//! driver gives that many 4 KiB pages up through the inflate queue and
//! reports how many it holds (`actual`). Inflated pages really go back to
//! the host ([`pages::discard`]); deflated ones need nothing, they come
//! back when the guest touches them. With free page reporting the driver
//! also hands over free ranges, dropped the same way. With a statistics
//! interval the driver reports its memory statistics ([`stats`]).
//!
//! The VMM reaches a running balloon through [`BalloonControl`]: a new
//! target raises a config-change interrupt.

pub mod pages;
pub mod stats;
#[cfg(test)]
mod stats_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use guest_memory::GuestMemoryMmap;
use log::debug;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::Queue;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::worker::{QueuePosition, Worker, WorkerError, WorkerHandler};
use super::{
    check_queue_count, drain_queue, feature, read_config_bytes, ActivateContext, ActivateError,
    Chain, Interrupt, VirtioDevice,
};
use crate::LogLimit;
use pages::{align_to_host, coalesce, discard, Range, BALLOON_PAGE};
use stats::{arm, nonblocking_timer, GuestStats, StatsProtocol};

/// virtio device ID of the traditional memory balloon.
pub const VIRTIO_ID_BALLOON: u32 = 5;
/// The guest may deflate under memory pressure without asking.
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
/// The driver reports memory statistics on a queue of their own.
pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
/// The driver reports free page ranges on a queue of their own.
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;

const QUEUE_SIZE: u16 = 256;
/// Most PFNs read from one chain (64 KiB of them): bounded work per
/// chain. Linux sends at most 256 per chain; the rest of a longer one is
/// ignored.
const MAX_PFNS_PER_CHAIN: usize = 16 * 1024;
/// Config space: `num_pages` then `actual`, both le32.
const CONFIG_LEN: usize = 8;
const ACTUAL_OFFSET: u64 = 4;

static REFUSED: LogLimit = LogLimit::new();
static DISCARD_FAILED: LogLimit = LogLimit::new();

/// How the balloon is set up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonConfig {
    /// Initial target, in 4 KiB pages.
    pub target_pages: u32,
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
    pub deflate_on_oom: bool,
    /// Offer VIRTIO_BALLOON_F_REPORTING (a queue of its own).
    pub free_page_reporting: bool,
    /// Seconds between statistics refreshes; 0 leaves out the stats queue
    /// (VIRTIO_BALLOON_F_STATS_VQ).
    #[serde(default)]
    pub stats_interval_s: u16,
}

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
struct Shared {
    target_pages: AtomicU32,
    actual_pages: AtomicU32,
    inflated_pages: AtomicU64,
    deflated_pages: AtomicU64,
    discarded_bytes: AtomicU64,
    refused: AtomicU64,
    stats_updates: AtomicU64,
    stats_refused: AtomicU64,
    /// Seconds between statistics refreshes (0: no stats queue).
    stats_interval_s: AtomicU16,
    /// What the guest last reported.
    guest_stats: Mutex<GuestStats>,
    /// Tells the worker the interval changed: it re-arms its timer and asks
    /// the guest for statistics at once.
    stats_changed: EventFd,
    /// The transport's interrupt, once a driver activated the device.
    interrupt: Mutex<Option<Arc<Interrupt>>>,
}

impl Shared {
    fn guest_stats(&self) -> MutexGuard<'_, GuestStats> {
        self.guest_stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The VMM's handle on a balloon: sets the target, reads what the guest
/// did. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BalloonControl(Arc<Shared>);

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

/// A virtio-balloon device.
pub struct Balloon {
    config: BalloonConfig,
    host_page: u64,
    shared: Arc<Shared>,
    /// Fires every statistics interval; made with the device (a worker
    /// thread may not create one), shared by its successive workers.
    stats_timer: Arc<Mutex<TimerFd>>,
    queue_sizes: Vec<u16>,
    worker: Option<Worker>,
}

impl Balloon {
    /// A balloon starting at `config.target_pages`, on a host whose pages
    /// are `host_page` bytes (a power of two, at least 4 KiB; read by the
    /// VMM before seccomp, since finding it may take a system call).
    pub fn new(config: BalloonConfig, host_page: u64) -> io::Result<Self> {
        let shared = Shared {
            target_pages: AtomicU32::new(config.target_pages),
            actual_pages: AtomicU32::default(),
            inflated_pages: AtomicU64::default(),
            deflated_pages: AtomicU64::default(),
            discarded_bytes: AtomicU64::default(),
            refused: AtomicU64::default(),
            stats_updates: AtomicU64::default(),
            stats_refused: AtomicU64::default(),
            stats_interval_s: AtomicU16::new(config.stats_interval_s),
            guest_stats: Mutex::default(),
            stats_changed: EventFd::new(EFD_NONBLOCK)?,
            interrupt: Mutex::default(),
        };
        let queues =
            2 + usize::from(config.stats_interval_s != 0) + usize::from(config.free_page_reporting);
        Ok(Self {
            config,
            host_page: host_page.max(BALLOON_PAGE),
            shared: Arc::new(shared),
            stats_timer: Arc::new(Mutex::new(nonblocking_timer()?)),
            queue_sizes: vec![QUEUE_SIZE; queues],
            worker: None,
        })
    }

    /// The handle the VMM keeps.
    pub fn control(&self) -> BalloonControl {
        BalloonControl(self.shared.clone())
    }

    fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut config = [0; CONFIG_LEN];
        let target = self.shared.target_pages.load(Ordering::Acquire);
        let actual = self.shared.actual_pages.load(Ordering::Acquire);
        config[..4].copy_from_slice(&target.to_le_bytes());
        config[4..].copy_from_slice(&actual.to_le_bytes());
        config
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn features(&self) -> u64 {
        let mut features = feature(VIRTIO_F_VERSION_1);
        if self.config.deflate_on_oom {
            features |= feature(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
        }
        if self.config.stats_interval_s != 0 {
            features |= feature(VIRTIO_BALLOON_F_STATS_VQ);
        }
        if self.config.free_page_reporting {
            features |= feature(VIRTIO_BALLOON_F_REPORTING);
        }
        features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    /// Only `actual` is the driver's to write, as a whole le32.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        match (offset, <[u8; 4]>::try_from(data)) {
            (ACTUAL_OFFSET, Ok(bytes)) => {
                let actual = u32::from_le_bytes(bytes);
                self.shared.actual_pages.store(actual, Ordering::Release);
            }
            _ => debug!(
                "virtio-balloon: config write of {} bytes at {offset:#x} ignored",
                data.len()
            ),
        }
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        check_queue_count(&ctx, self.queue_sizes.len())?;
        *self
            .shared
            .interrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(ctx.interrupt.clone());
        let roles = QueueRoles::of(ctx.features);
        if roles.stats.is_some() {
            let seconds = self.shared.stats_interval_s.load(Ordering::Acquire);
            arm(&self.stats_timer, seconds).map_err(ActivateError::Worker)?;
        }
        let (queues, kicks) = ctx.queues.into_iter().map(|q| (q.queue, q.kick)).unzip();
        let handler = BalloonHandler {
            shared: self.shared.clone(),
            mem: ctx.mem,
            queues,
            roles,
            interrupt: ctx.interrupt.clone(),
            host_page: self.host_page,
            stats_timer: self.stats_timer.clone(),
            stats: StatsProtocol::default(),
        };
        let worker = Worker::spawn("virtio-balloon", ctx.start, kicks, ctx.interrupt, handler);
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

const INFLATE: usize = 0;
const DEFLATE: usize = 1;
/// Backend fds of a balloon with a stats queue, in this order.
const STATS_TIMER: usize = 0;
const STATS_CHANGED: usize = 1;

/// Which queue index serves what: absent queues take no index (a driver
/// numbers only the queues of the features it accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct QueueRoles {
    stats: Option<usize>,
    reporting: Option<usize>,
}

impl QueueRoles {
    fn of(features: u64) -> Self {
        let has = |bit| features & feature(bit) != 0;
        let stats = has(VIRTIO_BALLOON_F_STATS_VQ).then_some(2);
        let next = 2 + usize::from(stats.is_some());
        let reporting = has(VIRTIO_BALLOON_F_REPORTING).then_some(next);
        Self { stats, reporting }
    }
}

struct BalloonHandler {
    shared: Arc<Shared>,
    mem: GuestMemoryMmap,
    /// Inflate, deflate, then stats and reporting as `roles` says.
    queues: Vec<Queue>,
    roles: QueueRoles,
    interrupt: Arc<Interrupt>,
    host_page: u64,
    stats_timer: Arc<Mutex<TimerFd>>,
    stats: StatsProtocol,
}

impl BalloonHandler {
    fn receive_stats(&mut self, index: usize) -> Result<(), virtio_queue::Error> {
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        let mut guest_stats = self.shared.guest_stats();
        let received = self
            .stats
            .receive(queue, &self.mem, &self.interrupt, &mut guest_stats)?;
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
    fn ask_for_stats(&mut self) -> Result<(), WorkerError> {
        let Some(index) = self.roles.stats else {
            return Ok(());
        };
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(());
        };
        self.stats
            .give_back(queue, &self.mem, &self.interrupt)
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
        drain_queue(queue, mem, &self.interrupt, |chain| {
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

/// Bytes in `pages` balloon pages.
pub const fn pages_to_bytes(pages: u64) -> u64 {
    pages * BALLOON_PAGE
}
