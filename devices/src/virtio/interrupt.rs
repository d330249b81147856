//! The interrupt side of one virtio device: the ISR bits the guest reads
//! from InterruptStatus, the line that raises them, the NEEDS_RESET flag a
//! failing worker sets, the config generation, and counters of the
//! notifications sent and suppressed (EVENT_IDX) for benchmarks, and the
//! device's [`IoStats`].
//!
//! Every notification names its source (a queue index, or the
//! configuration), so a transport with a vector per source (virtio-pci's
//! MSI-X, [`VectorRouting`]) can send it there; otherwise, and whenever
//! that transport says so (MSI-X off), it sets an ISR bit and raises the
//! one line — unless the transport disabled the line (PCI's INTx-disable
//! bit): the bits then wait, and the line rises when it is enabled again.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use log::warn;
use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_mmio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};
use virtio_queue::{Queue, QueueT};

use super::io_stats::IoStats;
use crate::IrqTrigger;

/// ISR bit: the device put buffers in a used ring.
pub const INT_USED_BUFFER: u32 = VIRTIO_MMIO_INT_VRING;
/// ISR bit: the device configuration (or NEEDS_RESET) changed.
pub const INT_CONFIG_CHANGE: u32 = VIRTIO_MMIO_INT_CONFIG;

/// Counters a benchmark can read while the guest runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Guest kicks (queue notifications) the workers consumed.
    pub queue_kicks: AtomicU64,
    /// Used-buffer interrupts raised.
    pub interrupts_sent: AtomicU64,
    /// Used-buffer interrupts skipped because the driver's `used_event`
    /// said it did not need one yet.
    pub interrupts_suppressed: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`Stats::queue_kicks`].
    pub queue_kicks: u64,
    /// See [`Stats::interrupts_sent`].
    pub interrupts_sent: u64,
    /// See [`Stats::interrupts_suppressed`].
    pub interrupts_suppressed: u64,
}

impl Stats {
    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            queue_kicks: self.queue_kicks.load(Ordering::Relaxed),
            interrupts_sent: self.interrupts_sent.load(Ordering::Relaxed),
            interrupts_suppressed: self.interrupts_suppressed.load(Ordering::Relaxed),
        }
    }
}

/// What a snapshot keeps of an [`Interrupt`] (the counters stay behind:
/// they describe one process's run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptState {
    /// The ISR bits pending.
    pub status: u32,
    /// NEEDS_RESET.
    pub needs_reset: bool,
    /// ConfigGeneration.
    pub config_generation: u32,
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptSource {
    /// Used buffers on the queue with this index.
    Queue(usize),
    /// The configuration changed (or the device needs a reset).
    Config,
}

/// A transport that sends some notifications through vectors of its own
/// (virtio-pci's MSI-X) rather than the ISR bits and the one line.
pub trait VectorRouting: Send + Sync + fmt::Debug {
    /// Sends the notification for `source` through its vector, leaves it
    /// pending on a masked vector, or drops it when the driver gave the
    /// source no vector: true in all these cases. False means the
    /// transport has no vectors in use now (MSI-X off): the line and ISR
    /// bits carry it.
    fn route(&self, source: InterruptSource) -> bool;
}

/// Interrupt state shared by a transport and its device's worker.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    needs_reset: AtomicBool,
    config_generation: AtomicU32,
    irq: IrqTrigger,
    line_disabled: AtomicBool,
    vectors: Option<Arc<dyn VectorRouting>>,
    stats: Stats,
    io_stats: IoStats,
}

impl Interrupt {
    /// Interrupt state raising `irq` for every notification.
    pub fn new(irq: IrqTrigger) -> Self {
        Self {
            status: AtomicU32::new(0),
            needs_reset: AtomicBool::new(false),
            config_generation: AtomicU32::new(0),
            irq,
            line_disabled: AtomicBool::new(false),
            vectors: None,
            stats: Stats::default(),
            io_stats: IoStats::default(),
        }
    }

    /// Interrupt state that offers each notification to `vectors` first
    /// and raises `irq` (setting ISR bits) only when it declines.
    pub fn with_vectors(irq: IrqTrigger, vectors: Arc<dyn VectorRouting>) -> Self {
        Self {
            vectors: Some(vectors),
            ..Self::new(irq)
        }
    }

    /// The ISR bits pending (InterruptStatus).
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    /// Clears the ISR bits the driver acknowledged (InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Raises a used-buffer interrupt for queue `index` unconditionally.
    pub fn signal_used(&self, index: usize) {
        self.stats.interrupts_sent.fetch_add(1, Ordering::Relaxed);
        self.raise(INT_USED_BUFFER, InterruptSource::Queue(index));
    }

    /// Raises a used-buffer interrupt for `queue`, whose index is `index`,
    /// unless EVENT_IDX says the driver does not want one yet. Call after
    /// adding used buffers.
    pub fn notify_queue(
        &self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<(), virtio_queue::Error> {
        self.notify_if(index, queue.needs_notification(mem)?);
        Ok(())
    }

    /// Raises a used-buffer interrupt for queue `index` if `needed`, else
    /// counts it as suppressed.
    pub fn notify_if(&self, index: usize, needed: bool) {
        if needed {
            self.signal_used(index);
        } else {
            let suppressed = &self.stats.interrupts_suppressed;
            suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Tells the driver the configuration space changed.
    pub fn signal_config_change(&self) {
        self.config_generation.fetch_add(1, Ordering::AcqRel);
        self.raise(INT_CONFIG_CHANGE, InterruptSource::Config);
    }

    /// Marks the device broken until the driver resets it (status bit
    /// NEEDS_RESET) and tells the driver through a config interrupt.
    pub fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::Release);
        self.raise(INT_CONFIG_CHANGE, InterruptSource::Config);
    }

    /// Whether the device asked to be reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    /// ConfigGeneration: changes whenever the configuration space does.
    pub fn config_generation(&self) -> u32 {
        self.config_generation.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The I/O counters the device model updates.
    pub fn io_stats(&self) -> &IoStats {
        &self.io_stats
    }

    /// Back to power-on state (device reset). Counters are kept: they
    /// cover the whole run.
    pub fn reset(&self) {
        self.status.store(0, Ordering::Release);
        self.needs_reset.store(false, Ordering::Release);
    }

    /// The state a snapshot saves.
    pub fn state(&self) -> InterruptState {
        InterruptState {
            status: self.status(),
            needs_reset: self.needs_reset(),
            config_generation: self.config_generation(),
        }
    }

    /// Takes a snapshot's state, raising nothing: see
    /// [`Self::raise_pending`].
    pub fn restore(&self, state: &InterruptState) {
        self.status.store(state.status, Ordering::Release);
        self.needs_reset.store(state.needs_reset, Ordering::Release);
        self.config_generation
            .store(state.config_generation, Ordering::Release);
    }

    /// Raises the line again if ISR bits are pending: after a restore, an
    /// interrupt the driver had not handled yet is delivered (once more,
    /// if the interrupt controller's saved state had it pending too; a
    /// driver finds nothing new in the ISR then and ignores it).
    pub fn raise_pending(&self) {
        if self.status() != 0 {
            self.trigger_line();
        }
    }

    /// Enables or disables the line (PCI's INTx-disable bit). Disabled, it
    /// stays low while ISR bits accumulate; enabled again, it rises if any
    /// are pending, as a level-triggered INTx# would.
    pub fn set_line_enabled(&self, enabled: bool) {
        self.line_disabled.store(!enabled, Ordering::Release);
        if enabled {
            self.raise_pending();
        }
    }

    fn trigger_line(&self) {
        if self.line_disabled.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.irq.trigger() {
            warn!("virtio: cannot raise interrupt: {e}");
        }
    }

    /// The line's resample `EventFd`, when it is level-triggered (INTx).
    pub fn resample_fd(&self) -> Option<&vmm_sys_util::eventfd::EventFd> {
        self.irq.resample_fd()
    }

    /// After the guest's EOI lowered a level-triggered line: raises it
    /// again while ISR bits are still pending (an interrupt that came
    /// between the driver's ISR read and its EOI).
    pub fn resampled(&self) {
        if let Some(resample) = self.irq.resample_fd() {
            // WouldBlock: an earlier wake consumed it.
            let _ = resample.read();
        }
        self.raise_pending();
    }

    fn raise(&self, bit: u32, source: InterruptSource) {
        if self.vectors.as_ref().is_some_and(|v| v.route(source)) {
            return;
        }
        self.status.fetch_or(bit, Ordering::AcqRel);
        self.trigger_line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_line_is_raised_again_after_eoi_only_while_bits_are_pending() {
        let irq = IrqTrigger::level().unwrap();
        let interrupt = Interrupt::new(irq.clone());
        let resample = interrupt.resample_fd().expect("a level line");
        interrupt.signal_used(0);
        assert_eq!(irq.event_fd().read().unwrap(), 1);
        // KVM lowered the line at the guest's EOI, the ISR still unread.
        resample.write(1).unwrap();
        interrupt.resampled();
        assert_eq!(irq.event_fd().read().unwrap(), 1, "raised again");
        assert!(resample.read().is_err(), "the resample event was consumed");
        interrupt.ack(INT_USED_BUFFER);
        resample.write(1).unwrap();
        interrupt.resampled();
        assert!(irq.event_fd().read().is_err(), "nothing pending: stays low");
        assert!(IrqTrigger::new().unwrap().resample_fd().is_none());
    }

    #[test]
    fn a_disabled_line_stays_low_and_rises_when_enabled_with_bits_pending() {
        let irq = IrqTrigger::level().unwrap();
        let interrupt = Interrupt::new(irq.clone());
        interrupt.set_line_enabled(false);
        interrupt.signal_used(0);
        assert_eq!(interrupt.status(), INT_USED_BUFFER, "the ISR bit is set");
        assert!(irq.event_fd().read().is_err(), "but the line stays low");
        interrupt.resample_fd().unwrap().write(1).unwrap();
        interrupt.resampled();
        assert!(irq.event_fd().read().is_err(), "an EOI does not raise it");
        interrupt.set_line_enabled(true);
        assert_eq!(irq.event_fd().read().unwrap(), 1, "enabled: it rises");
        interrupt.ack(INT_USED_BUFFER);
        interrupt.set_line_enabled(false);
        interrupt.set_line_enabled(true);
        assert!(irq.event_fd().read().is_err(), "nothing pending: stays low");
    }

    #[test]
    fn bits_accumulate_until_acknowledged() {
        let irq = IrqTrigger::new().unwrap();
        let interrupt = Interrupt::new(irq.clone());
        interrupt.signal_used(0);
        interrupt.signal_config_change();
        assert_eq!(interrupt.status(), INT_USED_BUFFER | INT_CONFIG_CHANGE);
        assert_eq!(irq.event_fd().read().unwrap(), 2);
        assert_eq!(interrupt.config_generation(), 1);
        interrupt.ack(INT_USED_BUFFER);
        assert_eq!(interrupt.status(), INT_CONFIG_CHANGE);
        interrupt.set_needs_reset();
        assert!(interrupt.needs_reset());
        interrupt.reset();
        assert_eq!(interrupt.status(), 0);
        assert!(!interrupt.needs_reset());
        assert_eq!(interrupt.stats().snapshot().interrupts_sent, 1);
    }

    /// Routes queue 1 and the configuration through "vectors" while on,
    /// recording them; declines everything while off.
    #[derive(Debug, Default)]
    struct Recorder {
        on: AtomicBool,
        routed: std::sync::Mutex<Vec<InterruptSource>>,
    }

    impl VectorRouting for Recorder {
        fn route(&self, source: InterruptSource) -> bool {
            let on = self.on.load(Ordering::Relaxed);
            if on {
                self.routed.lock().unwrap().push(source);
            }
            on
        }
    }

    #[test]
    fn routed_notifications_leave_the_line_and_isr_alone() {
        let irq = IrqTrigger::new().unwrap();
        let recorder = Arc::new(Recorder::default());
        let interrupt = Interrupt::with_vectors(irq.clone(), recorder.clone());
        recorder.on.store(true, Ordering::Relaxed);
        interrupt.notify_if(1, true);
        interrupt.notify_if(2, false);
        interrupt.signal_config_change();
        interrupt.set_needs_reset();
        let routed = recorder.routed.lock().unwrap().clone();
        use InterruptSource::*;
        assert_eq!(routed, vec![Queue(1), Config, Config]);
        assert_eq!(interrupt.status(), 0);
        assert!(irq.event_fd().read().is_err(), "line raised");
        let stats = interrupt.stats().snapshot();
        assert_eq!((stats.interrupts_sent, stats.interrupts_suppressed), (1, 1));
        // Vectors off: the line and the ISR bit, as on virtio-mmio.
        recorder.on.store(false, Ordering::Relaxed);
        interrupt.signal_used(3);
        assert_eq!(interrupt.status(), INT_USED_BUFFER);
        assert_eq!(irq.event_fd().read().unwrap(), 1);
        assert_eq!(recorder.routed.lock().unwrap().len(), 3);
    }
}
