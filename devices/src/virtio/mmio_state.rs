//! What a snapshot keeps of a virtio-mmio device ([`MmioState`]): the
//! registers the driver wrote, where the device stands on each queue (from
//! its parked worker) and its interrupt state. It is restored into a
//! freshly built transport for the same device, whose worker starts
//! parked and serves the queues from where they stood at the VM's resume.

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_FEATURES_OK;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::MmioTransport;
use crate::virtio::worker::{QueuePosition, Start};
use crate::virtio::InterruptState;

/// A virtio-mmio device's state, saved from a paused VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioState {
    /// The virtio device ID, checked on restore.
    pub device_type: u32,
    /// The Status register.
    pub status: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// The features the driver accepted.
    pub driver_features: u64,
    /// QueueSel.
    pub queue_sel: u32,
    /// The driver set DRIVER_OK (whether or not the device started).
    pub activated: bool,
    /// The device was serving its queues: activated and not broken.
    pub serving: bool,
    /// Each queue, in queue order.
    pub queues: Vec<QueueRegisters>,
    /// ISR bits, NEEDS_RESET, ConfigGeneration.
    pub interrupt: InterruptState,
}

/// One queue's registers and where the device stands on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRegisters {
    /// QueueNum.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// The descriptor table's guest address.
    pub desc_table: u64,
    /// The available ring's guest address.
    pub avail_ring: u64,
    /// The used ring's guest address.
    pub used_ring: u64,
    /// The next available and used entries.
    pub position: QueuePosition,
}

impl QueueRegisters {
    fn of(queue: &Queue, position: QueuePosition) -> Self {
        Self {
            size: queue.size(),
            ready: queue.ready(),
            desc_table: queue.desc_table(),
            avail_ring: queue.avail_ring(),
            used_ring: queue.used_ring(),
            position,
        }
    }

    /// Programs `queue` as the driver had, with the same checks as its
    /// register writes.
    fn apply(&self, queue: &mut Queue) -> Result<(), virtio_queue::Error> {
        queue.try_set_size(self.size)?;
        queue.try_set_desc_table_address(GuestAddress(self.desc_table))?;
        queue.try_set_avail_ring_address(GuestAddress(self.avail_ring))?;
        queue.try_set_used_ring_address(GuestAddress(self.used_ring))?;
        queue.set_ready(self.ready);
        queue.set_next_avail(self.position.next_avail);
        queue.set_next_used(self.position.next_used);
        Ok(())
    }
}

impl MmioTransport {
    /// The device's state. The VM must be paused: vCPUs parked, and the
    /// worker parked, since it is the one that knows where its queues
    /// stand.
    pub fn save_state(&mut self) -> Result<MmioState, String> {
        let serving = self.core.activated && !self.core.interrupt.needs_reset();
        let positions = match serving {
            true => {
                let worker = self
                    .core
                    .device
                    .worker()
                    .as_ref()
                    .ok_or("it has no worker")?;
                let positions = worker
                    .parked_positions()
                    .ok_or("its worker is not parked")?;
                if positions.len() != self.core.queues.len() {
                    return Err(format!(
                        "its worker reports {} queues of {}",
                        positions.len(),
                        self.core.queues.len()
                    ));
                }
                positions
            }
            // Not serving: the queues' own registers say it all.
            false => self.core.queues.iter().map(QueuePosition::of).collect(),
        };
        Ok(MmioState {
            device_type: self.core.device.device_type(),
            status: self.core.status,
            device_features_sel: self.core.device_features_sel,
            driver_features_sel: self.core.driver_features_sel,
            driver_features: self.core.driver_features,
            queue_sel: self.core.queue_sel,
            activated: self.core.activated,
            serving,
            queues: (self.core.queues.iter().zip(positions))
                .map(|(queue, position)| QueueRegisters::of(queue, position))
                .collect(),
            interrupt: self.core.interrupt.state(),
        })
    }

    /// Gives a freshly built transport the state `state` saved. A device
    /// that was serving is started with its worker parked: it goes on at
    /// [`Self::resume`]. An interrupt the driver had not handled is raised
    /// again.
    pub fn restore_state(&mut self, state: &MmioState) -> Result<(), String> {
        if self.core.status != 0 || self.core.activated {
            return Err("the device is in use already".into());
        }
        if state.device_type != self.core.device.device_type() {
            return Err(format!(
                "saved as virtio device type {}, this is type {}",
                state.device_type,
                self.core.device.device_type()
            ));
        }
        if state.queues.len() != self.core.queues.len() {
            return Err(format!(
                "saved with {} queues, the device has {}",
                state.queues.len(),
                self.core.queues.len()
            ));
        }
        if state.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && state.driver_features & !self.core.device.features() != 0
        {
            return Err(format!(
                "the driver accepted features {:#x}, this device offers {:#x}",
                state.driver_features,
                self.core.device.features()
            ));
        }
        for (index, (queue, saved)) in self.core.queues.iter_mut().zip(&state.queues).enumerate() {
            saved
                .apply(queue)
                .map_err(|e| format!("queue {index}: {e}"))?;
        }
        self.core.status = state.status;
        self.core.device_features_sel = state.device_features_sel;
        self.core.driver_features_sel = state.driver_features_sel;
        self.core.driver_features = state.driver_features;
        self.core.queue_sel = state.queue_sel;
        self.core.interrupt.restore(&state.interrupt);
        self.core.activated = state.activated;
        if state.serving {
            self.core
                .try_activate(Start::Parked)
                .map_err(|e| format!("cannot start it again: {e}"))?;
        }
        self.core.interrupt.raise_pending();
        Ok(())
    }
}

#[cfg(test)]
#[path = "mmio_state_tests.rs"]
mod tests;
