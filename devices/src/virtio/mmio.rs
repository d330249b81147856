//! The virtio-mmio transport, version 2 (virtio 1.x §4.2): the register
//! file a guest driver programs, decoded onto the [`TransportCore`] that
//! negotiates, sets up queues and activates the device.
//!
//! Queue kicks arrive on one `EventFd` per queue. The VMM registers each
//! with KVM_IOEVENTFD on `base + QUEUE_NOTIFY_OFFSET` (datamatch = queue
//! index) so a kick never leaves the kernel; a QueueNotify write that does
//! reach the transport signals the same `EventFd`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use log::debug;
use virtio_bindings::virtio_mmio::*;
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::mmio_queue::half;
use super::transport::{QueueField, TransportCore};
use super::worker::Worker;
use super::{Interrupt, StatsSnapshot, VirtioDevice};
use crate::{BusDevice, IrqTrigger};

/// Size of the register window (registers, then config space at 0x100).
pub const MMIO_LEN: u64 = 0x200;
/// Offset of QueueNotify, where the VMM places the queue ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = VIRTIO_MMIO_QUEUE_NOTIFY as u64;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x444e_4154; // "TAND"
const CONFIG_SPACE: u64 = VIRTIO_MMIO_CONFIG as u64;

/// A virtio device reachable through MMIO registers.
pub struct MmioTransport {
    core: TransportCore,
}

impl MmioTransport {
    /// A transport for `device`, raising `irq`, whose queues live in `mem`.
    pub fn new(
        mem: GuestMemoryMmap,
        irq: IrqTrigger,
        device: Box<dyn VirtioDevice>,
    ) -> io::Result<Self> {
        let core = TransportCore::new("virtio-mmio", mem, Interrupt::new(irq), device)?;
        Ok(Self { core })
    }

    /// Each queue's index and kick `EventFd`, for KVM_IOEVENTFD at
    /// `base + QUEUE_NOTIFY_OFFSET` with datamatch = index (4 bytes).
    pub fn queue_events(&self) -> Vec<(u32, &EventFd)> {
        self.core.queue_events()
    }

    /// The virtio device ID behind this transport.
    pub fn device_type(&self) -> u32 {
        self.core.device_type()
    }

    /// Kick and interrupt counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.core.stats()
    }

    /// The interrupt state, whose [`Interrupt::stats`] can be read without
    /// locking the transport while the guest runs.
    pub fn interrupt(&self) -> Arc<Interrupt> {
        self.core.interrupt.clone()
    }

    fn read_register(&self, offset: u32) -> u32 {
        let core = &self.core;
        match offset {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC_VALUE,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => core.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => core.device_features_page(),
            VIRTIO_MMIO_QUEUE_NUM_MAX => core.selected_queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => core.selected_queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_INTERRUPT_STATUS => core.interrupt.status(),
            VIRTIO_MMIO_STATUS => core.status(),
            // No shared memory regions: their length reads as all ones.
            VIRTIO_MMIO_SHM_LEN_LOW | VIRTIO_MMIO_SHM_LEN_HIGH => u32::MAX,
            VIRTIO_MMIO_SHM_BASE_LOW | VIRTIO_MMIO_SHM_BASE_HIGH => u32::MAX,
            VIRTIO_MMIO_CONFIG_GENERATION => core.interrupt.config_generation(),
            _ => {
                debug!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u32, value: u32) {
        let core = &mut self.core;
        match offset {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => core.device_features_sel = value,
            VIRTIO_MMIO_DRIVER_FEATURES => core.write_driver_features(value),
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => core.driver_features_sel = value,
            VIRTIO_MMIO_QUEUE_SEL => core.queue_sel = value,
            VIRTIO_MMIO_QUEUE_NUM => core.setup_queue(QueueField::Size, |q| {
                let size = u16::try_from(value).map_err(|_| virtio_queue::Error::InvalidSize)?;
                q.try_set_size(size)
            }),
            VIRTIO_MMIO_QUEUE_READY => core.setup_queue(QueueField::Ready, |q| {
                q.set_ready(value == 1);
                Ok(())
            }),
            VIRTIO_MMIO_QUEUE_DESC_LOW | VIRTIO_MMIO_QUEUE_DESC_HIGH => core
                .setup_queue(QueueField::Address, |q| {
                    q.try_set_desc_table_address(half(q.desc_table(), offset, value))
                }),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW | VIRTIO_MMIO_QUEUE_AVAIL_HIGH => core
                .setup_queue(QueueField::Address, |q| {
                    q.try_set_avail_ring_address(half(q.avail_ring(), offset, value))
                }),
            VIRTIO_MMIO_QUEUE_USED_LOW | VIRTIO_MMIO_QUEUE_USED_HIGH => core
                .setup_queue(QueueField::Address, |q| {
                    q.try_set_used_ring_address(half(q.used_ring(), offset, value))
                }),
            VIRTIO_MMIO_QUEUE_NOTIFY => core.notify(value),
            VIRTIO_MMIO_INTERRUPT_ACK => core.interrupt.ack(value),
            VIRTIO_MMIO_STATUS => core.write_status(value),
            _ => debug!("virtio-mmio: write of read-only or unknown register {offset:#x}"),
        }
    }

    /// Parks the device's worker (see [`VirtioDevice::pause`]); the
    /// vCPUs, the only other way in, are parked by the VMM first.
    pub fn pause(&mut self) -> bool {
        self.core.pause()
    }

    /// Lets the device's worker go on.
    pub fn resume(&mut self) {
        self.core.resume();
    }

    /// Hands the device's host resources over, or takes them back (see
    /// [`VirtioDevice::hand_over`]).
    pub fn hand_over(&mut self, release: bool) -> io::Result<()> {
        self.core.hand_over(release)
    }

    /// Swaps the device's backing file (see [`VirtioDevice::update_backend`]).
    pub fn update_backend(&mut self, path: &Path) -> io::Result<()> {
        self.core.update_backend(path)
    }

    /// Tells the device's workers (the running one and one a reset
    /// stopped) to stop, without waiting, and hands them over: the VMM
    /// stopping the VM waits for all its devices' workers together
    /// (`worker::finish_all`). The device is left as after a reset.
    pub fn stop_workers(&mut self) -> Vec<Worker> {
        self.core.stop_workers()
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            return self.core.read_config(offset - CONFIG_SPACE, data);
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
            return self.core.write_config(offset - CONFIG_SPACE, data);
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
