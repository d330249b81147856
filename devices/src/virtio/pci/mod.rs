//! The virtio-pci modern transport (virtio 1.x §4.1): a PCI function
//! whose configuration space carries the virtio capabilities and MSI-X,
//! and whose BAR0 holds the common configuration, the notify area, the
//! ISR byte, the device configuration and the MSI-X table (see
//! [`layout`]). It decodes onto the same [`TransportCore`] as virtio-mmio.
//!
//! Interrupts: with MSI-X on, each queue and the configuration send the
//! vector the driver assigned them through an [`MsiSink`]; with it off,
//! the ISR byte and the INTx line ([`IrqTrigger`]) carry them, and
//! reading the ISR clears it. The command register's INTx-disable bit
//! holds the line low; the status register's Interrupt Status bit shows
//! ISR bits pending either way.
//!
//! The integration side: the function goes on a [`pci::PciBus`] (it is a
//! [`PciFunction`]) and, while memory decoding is on, BAR0 on the MMIO bus
//! at the address [`Self::config_space`] holds (it is a [`BusDevice`] over
//! the BAR's offsets), with an ioeventfd on each [`Self::notify_events`]
//! address.

mod common;
pub mod layout;
mod msix;

use std::io;
use std::path::Path;
use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use log::debug;
use pci::config::{show_interrupt_pending, COMMAND_INTX_DISABLE};
use pci::{ConfigSpace, ConfigWrite, PciFunction};
use vmm_sys_util::eventfd::EventFd;

use self::layout::{
    Region, BAR_INDEX, MAX_QUEUES, MSIX_PBA, MSIX_TABLE, NOTIFY, NOTIFY_MULTIPLIER, PCI_CFG_BAR,
    PCI_CFG_DATA, PCI_CFG_LENGTH, PCI_CFG_OFFSET,
};
use super::transport::TransportCore;
use super::worker::Worker;
use super::{Interrupt, StatsSnapshot, VirtioDevice};
use crate::{BusDevice, IrqTrigger};

pub use self::msix::{MsiSink, MsixVectors, NO_VECTOR};

/// A virtio device behind a PCI function.
pub struct VirtioPci {
    core: TransportCore,
    config: ConfigSpace,
    msix: Arc<MsixVectors>,
    msix_capability: u8,
    pci_cfg_capability: u8,
}

impl VirtioPci {
    /// A function for `device`, whose queues live in `mem`, raising `intx`
    /// while MSI-X is off and sending MSI-X messages to `sink`.
    pub fn new(
        mem: GuestMemoryMmap,
        intx: IrqTrigger,
        sink: Arc<dyn MsiSink>,
        device: Box<dyn VirtioDevice>,
    ) -> io::Result<Self> {
        let queues = device.queue_max_sizes().len();
        if queues > MAX_QUEUES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{queues} queues, virtio-pci here takes {MAX_QUEUES}"),
            ));
        }
        let msix = Arc::new(MsixVectors::new(queues, sink));
        let interrupt = Interrupt::with_vectors(intx, msix.clone());
        let mut config = ConfigSpace::new(layout::header(device.device_type()));
        let pci_cfg_capability = layout::add_bar_and_capabilities(&mut config, queues);
        let msix_capability =
            msix.add_capability(&mut config, BAR_INDEX, MSIX_TABLE as u32, MSIX_PBA as u32);
        let core = TransportCore::new("virtio-pci", mem, interrupt, device)?;
        Ok(Self {
            core,
            config,
            msix,
            msix_capability,
            pci_cfg_capability,
        })
    }

    /// The function's configuration space: BAR0's address and whether
    /// memory decoding is on, for mapping it.
    pub fn config_space(&self) -> &ConfigSpace {
        &self.config
    }

    /// Each queue's notify address as an offset in BAR0, its index and its
    /// kick `EventFd`: one KVM_IOEVENTFD each, at BAR0's address plus the
    /// offset, without datamatch (the driver writes the 16-bit queue
    /// index; length 0 matches any width).
    pub fn notify_events(&self) -> Vec<(u64, u32, &EventFd)> {
        self.core
            .queue_events()
            .into_iter()
            .map(|(index, kick)| (notify_offset(index), index, kick))
            .collect()
    }

    /// The MSI-X vectors (for tests and for the integration to inspect).
    pub fn msix(&self) -> &Arc<MsixVectors> {
        &self.msix
    }

    /// The virtio device ID behind this transport.
    pub fn device_type(&self) -> u32 {
        self.core.device_type()
    }

    /// Kick and interrupt counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.core.stats()
    }

    /// The interrupt state (its counters can be read without the lock).
    pub fn interrupt(&self) -> Arc<Interrupt> {
        self.core.interrupt.clone()
    }

    /// Parks the device's worker (see [`VirtioDevice::pause`]).
    pub fn pause(&mut self) -> bool {
        self.core.pause()
    }

    /// Lets the device's worker go on.
    pub fn resume(&mut self) {
        self.core.resume();
    }

    /// See [`VirtioDevice::hand_over`].
    pub fn hand_over(&mut self, release: bool) -> io::Result<()> {
        self.core.hand_over(release)
    }

    /// See [`VirtioDevice::update_backend`].
    pub fn update_backend(&mut self, path: &Path) -> io::Result<()> {
        self.core.update_backend(path)
    }

    /// Tells the device's workers to stop, without waiting, and hands them
    /// over (`worker::finish_all`); the device is left as after a reset.
    pub fn stop_workers(&mut self) -> Vec<Worker> {
        let workers = self.core.stop_workers();
        self.msix.unassign_all();
        workers
    }

    /// Reads the ISR byte and clears it (which is how the driver
    /// acknowledges an INTx interrupt).
    fn read_isr(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 && !data.is_empty() {
            let interrupt = &self.core.interrupt;
            let status = interrupt.status();
            interrupt.ack(status);
            data[0] = status as u8;
        }
    }

    /// A write to the notify area: the queue whose slot it hits, if the
    /// ioeventfd did not take it.
    fn write_notify(&self, offset: u64, data: &[u8]) {
        match (offset % u64::from(NOTIFY_MULTIPLIER), data.len()) {
            (0, 2 | 4) => self
                .core
                .notify((offset / u64::from(NOTIFY_MULTIPLIER)) as u32),
            _ => debug!("virtio-pci: {}-byte notify at {offset:#x}", data.len()),
        }
    }
}

/// Queue `index`'s notify address in BAR0.
fn notify_offset(index: u32) -> u64 {
    NOTIFY + u64::from(index) * u64::from(NOTIFY_MULTIPLIER)
}

impl VirtioPci {
    fn read_bar(&self, offset: u64, data: &mut [u8]) {
        match Region::at(offset) {
            Some(Region::Common(at)) => common::read(&self.core, &self.msix, at, data),
            Some(Region::Isr(at)) => self.read_isr(at, data),
            Some(Region::Device(at)) if at < layout::DEVICE_LEN => self.core.read_config(at, data),
            Some(Region::MsixTable(at)) => self.msix.read_table(at, data),
            Some(Region::MsixPba(at)) => self.msix.read_pba(at, data),
            _ => data.fill(0),
        }
    }

    fn write_bar(&mut self, offset: u64, data: &[u8]) {
        match Region::at(offset) {
            Some(Region::Common(at)) => common::write(&mut self.core, &self.msix, at, data),
            Some(Region::Device(at)) => self.core.write_config(at, data),
            Some(Region::Notify(at)) => self.write_notify(at, data),
            Some(Region::MsixTable(at)) => self.msix.write_table(at, data),
            _ => debug!("virtio-pci: write at BAR offset {offset:#x} ignored"),
        }
    }

    /// The BAR0 access the PCI configuration access capability names for
    /// a data access at `register` of `len` bytes: its offset, if the
    /// access covers the data window's first `length` bytes, `bar` is 0
    /// and `length` is 1, 2 or 4.
    fn pci_cfg_window(&self, register: u16, len: usize) -> Option<u64> {
        let cap = u16::from(self.pci_cfg_capability);
        if register != cap + PCI_CFG_DATA {
            return None;
        }
        let field = |at: u16, width: usize| {
            let mut bytes = [0u8; 4];
            self.config.read(cap + at, &mut bytes[..width]);
            u32::from_le_bytes(bytes)
        };
        let length = field(PCI_CFG_LENGTH, 4) as usize;
        let usable = field(PCI_CFG_BAR, 1) == u32::from(BAR_INDEX)
            && matches!(length, 1 | 2 | 4)
            && len == length;
        usable.then(|| u64::from(field(PCI_CFG_OFFSET, 4)))
    }
}

impl PciFunction for VirtioPci {
    fn read_config(&self, register: u16, data: &mut [u8]) {
        match self.pci_cfg_window(register, data.len()) {
            Some(offset) => self.read_bar(offset, data),
            None => {
                self.config.read(register, data);
                if self.core.interrupt.status() != 0 {
                    show_interrupt_pending(register, data);
                }
            }
        }
    }

    fn write_config(&mut self, register: u16, data: &[u8]) -> ConfigWrite {
        if let Some(offset) = self.pci_cfg_window(register, data.len()) {
            self.write_bar(offset, data);
            return ConfigWrite::Nothing;
        }
        let change = self.config.write(register, data);
        match change {
            ConfigWrite::Command { new, .. } => self
                .core
                .interrupt
                .set_line_enabled(new & COMMAND_INTX_DISABLE == 0),
            ConfigWrite::Capability { offset } if offset == self.msix_capability => self
                .msix
                .control_written(&self.config, self.msix_capability),
            _ => {}
        }
        change
    }
}

/// BAR0, by offset.
impl BusDevice for VirtioPci {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.read_bar(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.write_bar(offset, data);
    }
}

#[cfg(test)]
mod block_tests;
#[cfg(test)]
mod driver;
#[cfg(test)]
mod tests;
