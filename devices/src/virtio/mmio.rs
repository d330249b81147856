//! The virtio-mmio transport, version 2 (virtio 1.x §4.2): the register
//! file a guest driver programs, the device status state machine, and the
//! hand-over of the configured queues to the device at DRIVER_OK.
//!
//! Queue kicks arrive on one `EventFd` per queue. The VMM registers each
//! with KVM_IOEVENTFD on `base + QUEUE_NOTIFY_OFFSET` (datamatch = queue
//! index) so a kick never leaves the kernel; a QueueNotify write that does
//! reach the transport signals the same `EventFd`.
//!
//! A reset (Status = 0) never waits for the device's worker: the vCPU that
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
use virtio_bindings::virtio_mmio::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::{RetiredWorker, RETIRE_WAIT};
use super::mmio_queue::{check_queue, half};
use super::worker::{Start, Worker};
use super::{
    feature, ActivateContext, ActiveQueue, Interrupt, LogLimit, StatsSnapshot, VirtioDevice,
};
use crate::{BusDevice, IrqTrigger};

/// Size of the register window (registers, then config space at 0x100).
pub const MMIO_LEN: u64 = 0x200;
/// Offset of QueueNotify, where the VMM places the queue ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x444e_4154; // "TAND"
const CONFIG_SPACE: u64 = VIRTIO_MMIO_CONFIG as u64;

const ACK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRIVER: u32 = ACK | VIRTIO_CONFIG_S_DRIVER;
const FEATURES_OK: u32 = DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
const DRIVER_OK: u32 = FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

/// A virtio device reachable through MMIO registers.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    kicks: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    activated: bool,
    /// The worker the last reset stopped, until it has ended.
    retired: RetiredWorker,
}

/// Activations refused because the previous worker was still busy.
static STILL_BUSY: LogLimit = LogLimit::new();
/// Activations that failed otherwise (a queue not ready or not in memory).
static NOT_ACTIVATED: LogLimit = LogLimit::new();
/// Queue sizes and ring addresses the queue refused.
static REFUSED_QUEUE_SETUP: LogLimit = LogLimit::new();

impl MmioTransport {
    /// A transport for `device`, raising `irq`, whose queues live in `mem`.
    pub fn new(
        mem: GuestMemoryMmap,
        irq: IrqTrigger,
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
            device,
            mem,
            interrupt: Arc::new(Interrupt::new(irq)),
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

    /// Each queue's index and kick `EventFd`, for KVM_IOEVENTFD at
    /// `base + QUEUE_NOTIFY_OFFSET` with datamatch = index (4 bytes).
    pub fn queue_events(&self) -> Vec<(u32, &EventFd)> {
        (0u32..).zip(self.kicks.iter()).collect()
    }

    /// The virtio device ID behind this transport.
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Kick and interrupt counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.interrupt.stats().snapshot()
    }

    /// The interrupt state, whose [`Interrupt::stats`] can be read without
    /// locking the transport while the guest runs.
    pub fn interrupt(&self) -> Arc<Interrupt> {
        self.interrupt.clone()
    }

    fn read_register(&self, offset: u32) -> u32 {
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC_VALUE,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.status(),
            VIRTIO_MMIO_STATUS if self.interrupt.needs_reset() => {
                self.status | VIRTIO_CONFIG_S_NEEDS_RESET
            }
            VIRTIO_MMIO_STATUS => self.status,
            // No shared memory regions: their length reads as all ones.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => self.write_driver_features(value),
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => self.setup_queue(offset, |q| {
                let size = u16::try_from(value).map_err(|_| virtio_queue::Error::InvalidSize)?;
                q.try_set_size(size)
            }),
            VIRTIO_MMIO_QUEUE_READY => self.setup_queue(offset, |q| {
                q.set_ready(value == 1);
                Ok(())
            }),
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => self
                .setup_queue(offset, |q| {
                    q.try_set_desc_table_address(half(q.desc_table(), offset, value))
                }),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => self
                .setup_queue(offset, |q| {
                    q.try_set_avail_ring_address(half(q.avail_ring(), offset, value))
                }),
            VIRTIO_MMIO_QUEUE_USED_LOW | VIRTIO_MMIO_QUEUE_USED_HIGH => self
                .setup_queue(offset, |q| {
                    q.try_set_used_ring_address(half(q.used_ring(), offset, value))
                }),
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => self.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => self.write_status(value),
            _ => debug!("virtio-mmio: write of read-only or unknown register {offset:#x}"),
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status != DRIVER {
            debug!(
                "virtio-mmio: driver features written in status {:#x}",
                self.status
            );
            return;
        }
        let (shift, mask) = match self.driver_features_sel {
            0 => (0, 0xffff_ffff),
            1 => (32, 0xffff_ffff_0000_0000),
            sel => return debug!("virtio-mmio: driver features page {sel} ignored"),
        };
        self.driver_features = (self.driver_features & !mask) | (u64::from(value) << shift);
    }

    /// Applies a queue register write, allowed only between FEATURES_OK and
    /// DRIVER_OK, and (except QueueReady) only while the queue is not ready.
    /// A value the queue refuses (a size that is not a power of two up to
    /// QueueNumMax, a misaligned ring) leaves the register as it was.
    fn setup_queue(
        &mut self,
        offset: u32,
        apply: impl FnOnce(&mut Queue) -> Result<(), virtio_queue::Error>,
    ) {
        let sel = self.queue_sel;
        match self.queues.get_mut(sel as usize) {
            _ if self.status != FEATURES_OK => {
                debug!(
                    "virtio-mmio: queue register {offset:#x} written in status {:#x}",
                    self.status
                )
            }
            None => debug!("virtio-mmio: queue register {offset:#x} for absent queue {sel}"),
            Some(q) if q.ready() && offset != VIRTIO_MMIO_QUEUE_READY => {
                debug!("virtio-mmio: queue register {offset:#x} written while queue {sel} is ready")
            }
            Some(q) => {
                if let Err(e) = apply(q) {
                    REFUSED_QUEUE_SETUP.warn(format_args!(
                        "virtio-mmio: device {} queue {sel}: register {offset:#x} refused: {e}",
                        self.device.device_type()
                    ));
                }
            }
        }
    }

    fn notify(&self, index: u32) {
        match self.kicks.get(index as usize) {
            Some(kick) => {
                if let Err(e) = kick.write(1) {
                    warn!("virtio-mmio: cannot signal queue {index}: {e}");
                }
            }
            None => debug!("virtio-mmio: notify for absent queue {index}"),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            return self.reset();
        }
        let value = value & !VIRTIO_CONFIG_S_NEEDS_RESET;
        if value & !self.status & VIRTIO_CONFIG_S_FAILED != 0 {
            debug!(
                "virtio-mmio: driver gave up on device {}",
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
                "virtio-mmio: features {:#x} refused (offered {:#x})",
                self.driver_features,
                self.device.features()
            ),
            (FEATURES_OK, DRIVER_OK) => {
                self.status = value;
                self.activate(Start::Serving);
            }
            (old, new) => debug!("virtio-mmio: status {old:#x} -> {new:#x} ignored"),
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
                "virtio-mmio: device {} not activated: its previous worker is still busy",
                self.device_type()
            ));
            self.interrupt.set_needs_reset();
            return;
        }
        if let Err(e) = self.try_activate(start) {
            NOT_ACTIVATED.error(format_args!(
                "virtio-mmio: device {} not activated: {e}",
                self.device_type()
            ));
            self.interrupt.set_needs_reset();
        }
    }

    fn try_activate(&mut self, start: Start) -> Result<(), String> {
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

    /// Parks the device's worker (see [`VirtioDevice::pause`]); the
    /// vCPUs, the only other way in, are parked by the VMM first.
    pub fn pause(&mut self) -> bool {
        self.device.pause() && self.retired.pause()
    }

    /// Lets the device's worker go on.
    pub fn resume(&mut self) {
        self.retired.resume();
        self.device.resume();
    }

    /// Hands the device's host resources over, or takes them back (see
    /// [`VirtioDevice::hand_over`]).
    pub fn hand_over(&mut self, release: bool) -> io::Result<()> {
        self.device.hand_over(release)
    }

    /// Swaps the device's backing file (see [`VirtioDevice::update_backend`]).
    pub fn update_backend(&mut self, path: &Path) -> io::Result<()> {
        self.device.update_backend(path)
    }

    /// Tells the device's workers (the running one and one a reset
    /// stopped) to stop, without waiting, and hands them over: the VMM
    /// stopping the VM waits for all its devices' workers together
    /// (`worker::finish_all`). The device is left as after a reset.
    pub fn stop_workers(&mut self) -> Vec<Worker> {
        let mut workers: Vec<Worker> = self.retired.take().into_iter().collect();
        if self.activated {
            workers.extend(self.device.reset());
        }
        self.reset();
        workers
    }

    /// Returns at once: the worker is told to stop, not waited for.
    fn reset(&mut self) {
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

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            return self.device.read_config(offset - CONFIG_SPACE, data);
        }
        match (u32::try_from(offset), data.len()) {
            (Ok(offset), 4) if offset % 4 == 0 => {
                data.copy_from_slice(&self.read_register(offset).to_le_bytes())
            }
            _ => {
                debug!(
                    "virtio-mmio: {}-byte read at {offset:#x} ignored",
                    data.len()
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            if self.status & VIRTIO_CONFIG_S_DRIVER == 0 {
                return debug!("virtio-mmio: config write before DRIVER ignored");
            }
            return self.device.write_config(offset - CONFIG_SPACE, data);
        }
        match (u32::try_from(offset), <[u8; 4]>::try_from(data)) {
            (Ok(offset), Ok(bytes)) if offset % 4 == 0 => {
                self.write_register(offset, u32::from_le_bytes(bytes))
            }
            _ => debug!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored",
                data.len()
            ),
        }
    }
}

#[path = "mmio_state.rs"]
mod state;
pub use state::{MmioState, QueueRegisters};

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
