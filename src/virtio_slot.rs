//! One virtio device as the VMM holds it: its name, its transport
//! (virtio-mmio or virtio-pci, the same device models behind either) and
//! its interrupt counters, with what the VM's lifecycle asks of every
//! transport alike (pause, resume, hand-over, stop, a drive's new file).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Result};
use devices::virtio::pci::VirtioPci;
use devices::virtio::worker::Worker;
use devices::virtio::{Interrupt, MmioState, MmioTransport};

/// One virtio device behind its transport.
pub struct VirtioSlot {
    /// The device's name (a drive or interface id, `rng`, `console`).
    pub name: String,
    /// Its transport.
    pub transport: VirtioTransport,
    /// Its interrupt state and counters, readable without the lock.
    pub interrupt: Arc<Interrupt>,
}

/// Where a virtio device is reached.
pub enum VirtioTransport {
    /// A virtio-mmio window on the MMIO bus.
    Mmio(Arc<Mutex<MmioTransport>>),
    /// A function on the PCI host bridge.
    Pci(Arc<Mutex<VirtioPci>>),
}

/// Locks a transport, whether or not an earlier holder panicked.
fn lock<T>(device: &Mutex<T>) -> MutexGuard<'_, T> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls the same method on whichever transport it is (both have it with
/// the same signature, over their shared core).
macro_rules! on_either {
    ($transport:expr, $t:ident => $call:expr) => {
        match $transport {
            VirtioTransport::Mmio($t) => $call,
            VirtioTransport::Pci($t) => $call,
        }
    };
}

impl VirtioTransport {
    /// The virtio device id behind it.
    pub fn device_type(&self) -> u32 {
        on_either!(self, t => lock(t).device_type())
    }

    /// Parks the device's worker; false if it did not stop in time.
    pub fn pause(&self) -> bool {
        on_either!(self, t => lock(t).pause())
    }

    /// Lets the worker go on.
    pub fn resume(&self) {
        on_either!(self, t => lock(t).resume())
    }

    /// See `VirtioDevice::hand_over`.
    pub fn hand_over(&self, release: bool) -> std::io::Result<()> {
        on_either!(self, t => lock(t).hand_over(release))
    }

    /// Tells the workers to stop and hands them over.
    pub fn stop_workers(&self) -> Vec<Worker> {
        on_either!(self, t => lock(t).stop_workers())
    }

    /// See `VirtioDevice::update_backend`.
    pub fn update_backend(&self, path: &Path) -> std::io::Result<()> {
        on_either!(self, t => lock(t).update_backend(path))
    }

    /// The transport's saved state (virtio-mmio only so far).
    pub fn save_state(&self) -> Result<MmioState> {
        match self {
            Self::Mmio(t) => lock(t).save_state().map_err(anyhow::Error::msg),
            Self::Pci(_) => bail!("snapshots of virtio-pci devices are not supported yet"),
        }
    }

    /// Gives a fresh transport the state [`Self::save_state`] saved.
    pub fn restore_state(&self, state: &MmioState) -> Result<()> {
        match self {
            Self::Mmio(t) => lock(t).restore_state(state).map_err(anyhow::Error::msg),
            Self::Pci(_) => bail!("snapshots of virtio-pci devices are not supported yet"),
        }
    }
}
