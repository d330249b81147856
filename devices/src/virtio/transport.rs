//! What every virtio transport does the same way, whatever its registers
//! look like (virtio-mmio's offsets, virtio-pci's common configuration):
//! feature negotiation in 32-bit pages, the device status state machine
//! (FEATURES_OK checks, FAILED, NEEDS_RESET), queue set-up, queue kicks,
//! activation at DRIVER_OK and reset. A transport decodes its registers
//! and calls [`TransportCore`].
//!
//! A reset (status 0) never waits for the device's worker: the vCPU that
//! writes it holds the device's bus lock. The worker is told to stop and
//! kept as a [`RetiredWorker`]; it publishes nothing more and ends after
//! the request in hand. DRIVER_OK waits for it at most [`RETIRE_WAIT`],
//! and if it is still busy the activation fails with NEEDS_RESET.

use std::io;
use std::path::Path;
use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use log::{debug, warn};
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{RetiredWorker, RETIRE_WAIT};
use super::worker::{Start, Worker};
use super::{
    feature, ActivateContext, ActiveQueue, Interrupt, LogLimit, StatsSnapshot, VirtioDevice,
};

/// Status once the driver has seen the device.
pub(super) const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
/// Status once the driver knows the device.
pub(super) const DRIVER: u32 = ACK | VIRTIO_CONFIG_S_DRIVER;
/// Status once the features are agreed: queues may be set up.
pub(super) const FEATURES_OK: u32 = DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
/// Status once the driver runs the device.
pub(super) const DRIVER_OK: u32 = FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

/// Activations refused because the previous worker was still busy.
static STILL_BUSY: LogLimit = LogLimit::new();
/// Activations that failed otherwise (a queue not ready or not in memory).
static NOT_ACTIVATED: LogLimit = LogLimit::new();
/// Queue sizes and ring addresses the queue refused.
static REFUSED_QUEUE_SETUP: LogLimit = LogLimit::new();

/// A queue setting the driver programs, for [`TransportCore::setup_queue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum QueueField {
    /// The size (QueueNum, queue_size).
    Size,
    /// Ready (QueueReady, queue_enable): may be written while ready.
    Ready,
    /// A ring address or half of one.
    Address,
}

/// The transport-independent state of one virtio device.
pub(super) struct TransportCore {
    /// How log lines name the transport ("virtio-mmio", "virtio-pci").
    pub(super) name: &'static str,
    pub(super) device: Box<dyn VirtioDevice>,
    pub(super) mem: GuestMemoryMmap,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) queues: Vec<Queue>,
    pub(super) kicks: Vec<EventFd>,
    pub(super) status: u32,
    pub(super) device_features_sel: u32,
    pub(super) driver_features_sel: u32,
    pub(super) driver_features: u64,
    pub(super) queue_sel: u32,
    /// The driver set DRIVER_OK (whether or not the device started).
    pub(super) activated: bool,
    /// The worker the last reset stopped, until it has ended.
    retired: RetiredWorker,
}

impl TransportCore {
    /// The core of a transport named `name` for `device`, whose queues
    /// live in `mem`, signalling through `interrupt`.
    pub(super) fn new(
        name: &'static str,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        device: Box<dyn VirtioDevice>,
    ) -> io::Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| {
                Queue::new(max).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("queue size {max}: {e}"),
                    )
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let kicks = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            name,
            device,
            mem,
            interrupt: Arc::new(interrupt),
            queues,
            kicks,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            activated: false,
            retired: RetiredWorker::default(),
        })
    }

    /// Each queue's index and kick `EventFd`.
    pub(super) fn queue_events(&self) -> Vec<(u32, &EventFd)> {
        (0u32..).zip(self.kicks.iter()).collect()
    }

    pub(super) fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    pub(super) fn stats(&self) -> StatsSnapshot {
        self.interrupt.stats().snapshot()
    }

    /// The device status as the driver reads it: with NEEDS_RESET when the
    /// device asked for a reset.
    pub(super) fn status(&self) -> u32 {
        match self.interrupt.needs_reset() {
            true => self.status | VIRTIO_CONFIG_S_NEEDS_RESET,
            false => self.status,
        }
    }

    /// The page of offered features that the feature select names.
    pub(super) fn device_features_page(&self) -> u32 {
        match self.device_features_sel {
            0 => self.device.features() as u32,
            1 => (self.device.features() >> 32) as u32,
            _ => 0,
        }
    }

    /// The page of accepted features that the driver feature select names.
    pub(super) fn driver_features_page(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// Takes a page of the features the driver accepts: only while it
    /// negotiates (status DRIVER).
    pub(super) fn write_driver_features(&mut self, value: u32) {
        if self.status != DRIVER {
            debug!(
                "{}: driver features written in status {:#x}",
                self.name, self.status
            );
            return;
        }
        let (shift, mask) = match self.driver_features_sel {
            0 => (0, 0xffff_ffff),
            1 => (32, 0xffff_ffff_0000_0000),
            sel => return debug!("{}: driver features page {sel} ignored", self.name),
        };
        self.driver_features = (self.driver_features & !mask) | (u64::from(value) << shift);
    }

    /// The queue the queue select names, if the device has it.
    pub(super) fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    /// Applies a queue setting, allowed only between FEATURES_OK and
    /// DRIVER_OK, and (except Ready) only while the queue is not ready. A
    /// value the queue refuses (a size that is not a power of two up to
    /// the maximum, a misaligned ring) leaves the setting as it was.
    pub(super) fn setup_queue(
        &mut self,
        field: QueueField,
        apply: impl FnOnce(&mut Queue) -> Result<(), virtio_queue::Error>,
    ) {
        let (sel, name) = (self.queue_sel, self.name);
        match self.queues.get_mut(sel as usize) {
            _ if self.status != FEATURES_OK => {
                debug!(
                    "{name}: queue {field:?} written in status {:#x}",
                    self.status
                )
            }
            None => debug!("{name}: queue {field:?} written for absent queue {sel}"),
            Some(q) if q.ready() && field != QueueField::Ready => {
                debug!("{name}: queue {field:?} written while queue {sel} is ready")
            }
            Some(q) => {
                if let Err(e) = apply(q) {
                    REFUSED_QUEUE_SETUP.warn(format_args!(
                        "{name}: device {} queue {sel}: {field:?} refused: {e}",
                        self.device.device_type()
                    ));
                }
            }
        }
    }

    /// The driver kicked queue `index` through the transport (not through
    /// an ioeventfd).
    pub(super) fn notify(&self, index: u32) {
        match self.kicks.get(index as usize) {
            Some(kick) => {
                if let Err(e) = kick.write(1) {
                    warn!("{}: cannot signal queue {index}: {e}", self.name);
                }
            }
            None => debug!("{}: notify for absent queue {index}", self.name),
        }
    }

    /// Reads device configuration space.
    pub(super) fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.device.read_config(offset, data);
    }

    /// Writes device configuration space: only once the driver knows the
    /// device.
    pub(super) fn write_config(&mut self, offset: u64, data: &[u8]) {
        if self.status & VIRTIO_CONFIG_S_DRIVER == 0 {
            return debug!("{}: config write before DRIVER ignored", self.name);
        }
        self.device.write_config(offset, data);
    }

    /// A device status write: 0 resets, otherwise one step of the state
    /// machine (or FAILED); anything else is ignored.
    pub(super) fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        let value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if value & !self.status & VIRTIO_CONFIG_S_FAILED != 0 {
            debug!(
                "{}: driver gave up on device {}",
                self.name,
                self.device_type()
            );
            self.status |= VIRTIO_CONFIG_S_FAILED;
            return;
        }
        match (self.status, value) {
            (old, new) if old == new => {}
            (0, ACK) | (ACK, DRIVER) => self.status = value,
            (DRIVER, FEATURES_OK) if self.features_acceptable() => self.status = value,
            (DRIVER, FEATURES_OK) => debug!(
                "{}: features {:#x} refused (offered {:#x})",
                self.name,
                self.driver_features,
                self.device.features()
            ),
            (FEATURES_OK, DRIVER_OK) => {
                self.status = value;
                self.activate(Start::Serving);
            }
            (old, new) => debug!("{}: status {old:#x} -> {new:#x} ignored", self.name),
        }
    }

    /// FEATURES_OK holds only for a modern driver accepting offered bits.
    fn features_acceptable(&self) -> bool {
        let offered = self.device.features();
        self.driver_features & feature(VIRTIO_F_VERSION_1) != 0
            && self.driver_features & !offered == 0
    }

    /// Starts the device on the queues the driver set up; its worker
    /// begins as `start` says.
    fn activate(&mut self, start: Start) {
        self.activated = true;
        // Never two workers on one device: the one a reset stopped may
        // still be finishing its (bounded) request.
        if !self.retired.wait_ended(RETIRE_WAIT) {
            STILL_BUSY.warn(format_args!(
                "{}: device {} not activated: its previous worker is still busy",
                self.name,
                self.device_type()
            ));
            self.interrupt.set_needs_reset();
            return;
        }
        if let Err(e) = self.try_activate(start) {
            NOT_ACTIVATED.error(format_args!(
                "{}: device {} not activated: {e}",
                self.name,
                self.device_type()
            ));
            self.interrupt.set_needs_reset();
        }
    }

    /// Hands the queues as set up to the device.
    pub(super) fn try_activate(&mut self, start: Start) -> Result<(), String> {
        let event_idx = self.driver_features & feature(VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (index, (queue, kick)) in self.queues.iter().zip(&self.kicks).enumerate() {
            check_queue(queue, &self.mem).map_err(|e| format!("queue {index} is {e}"))?;
            let mut queue = Queue::try_from(queue.state()).map_err(|e| e.to_string())?;
            queue.set_event_idx(event_idx);
            let kick = kick.try_clone().map_err(|e| e.to_string())?;
            queues.push(ActiveQueue { queue, kick });
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            features: self.driver_features,
            queues,
            interrupt: self.interrupt.clone(),
            start,
        };
        self.device.activate(ctx).map_err(|e| e.to_string())
    }

    /// Parks the device's worker (see [`VirtioDevice::pause`]).
    pub(super) fn pause(&mut self) -> bool {
        self.device.pause() && self.retired.pause()
    }

    /// Lets the device's worker go on.
    pub(super) fn resume(&mut self) {
        self.retired.resume();
        self.device.resume();
    }

    /// See [`VirtioDevice::hand_over`].
    pub(super) fn hand_over(&mut self, release: bool) -> io::Result<()> {
        self.device.hand_over(release)
    }

    /// See [`VirtioDevice::update_backend`].
    pub(super) fn update_backend(&mut self, path: &Path) -> io::Result<()> {
        self.device.update_backend(path)
    }

    /// Tells the device's workers (the running one and one a reset
    /// stopped) to stop, without waiting, and hands them over. The device
    /// is left as after a reset.
    pub(super) fn stop_workers(&mut self) -> Vec<Worker> {
        let mut workers: Vec<Worker> = self.retired.take().into_iter().collect();
        if self.activated {
            workers.extend(self.device.reset());
        }
        self.reset();
        workers
    }

    /// Returns at once: the worker is told to stop, not waited for.
    pub(super) fn reset(&mut self) {
        if self.activated {
            if let Some(worker) = self.device.reset() {
                self.retired.retire(worker);
            }
        }
        self.activated = false;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues.iter_mut().for_each(Queue::reset);
        // Drop kicks left over from the old queues.
        self.kicks.iter().for_each(|kick| drop(kick.read()));
        self.interrupt.reset();
    }
}

/// Whether `queue` is ready and its rings lie in `mem`: what
/// `Queue::is_valid` checks, without logging an error for the guest's
/// every failed attempt (see the log rates in docs/devices.md).
fn check_queue(queue: &Queue, mem: &GuestMemoryMmap) -> Result<(), &'static str> {
    if !queue.ready() {
        return Err("not ready");
    }
    let size = usize::from(queue.size());
    let rings = [
        (queue.desc_table(), 16 * size, Permissions::Read),
        (queue.avail_ring(), 6 + 2 * size, Permissions::Read),
        (queue.used_ring(), 6 + 8 * size, Permissions::Write),
    ];
    match rings
        .into_iter()
        .all(|(addr, len, access)| mem.check_range(GuestAddress(addr), len, access))
    {
        true => Ok(()),
        false => Err("not in guest memory"),
    }
}
