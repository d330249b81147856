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

mod control;
mod handler;
pub mod pages;
pub mod stats;
#[cfg(test)]
mod stats_tests;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log::debug;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::timer::nonblocking_timer;
use super::worker::Worker;
use super::{
    check_queue_count, feature, read_config_bytes, ActivateContext, ActivateError, VirtioDevice,
};
use control::Shared;
pub use control::{BalloonControl, BalloonState, BalloonStats, StatsIntervalError};
use handler::{BalloonHandler, QueueRoles};
use pages::BALLOON_PAGE;
use stats::{arm, StatsProtocol};

/// virtio device ID of the traditional memory balloon.
pub const VIRTIO_ID_BALLOON: u32 = 5;
/// The guest may deflate under memory pressure without asking.
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
/// The driver reports memory statistics on a queue of their own.
pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
/// The driver reports free page ranges on a queue of their own.
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;

const QUEUE_SIZE: u16 = 256;
/// Config space: `num_pages` then `actual`, both le32.
const CONFIG_LEN: usize = 8;
const ACTUAL_OFFSET: u64 = 4;

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
/// Bytes in `pages` balloon pages.
pub const fn pages_to_bytes(pages: u64) -> u64 {
    pages * BALLOON_PAGE
}
