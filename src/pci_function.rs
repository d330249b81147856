//! One virtio-pci function as the host bridge wires it to KVM: BAR0 on
//! the BAR map while memory decoding is on and its address sits in a
//! window, an ioeventfd on each queue's notify address inside it, both
//! moved when the guest moves the BAR and dropped when it turns decoding
//! off; and its MSI routes following the guest's MSI-X table
//! ([`KvmMsiSink::sync`]) after every write that can change it.

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use devices::virtio::pci::layout::{BAR_SIZE, MSIX_PBA, MSIX_TABLE};
use devices::virtio::pci::{MsixVectors, VirtioPci};
use devices::{BusDevice, LogLimit};
use pci::{ConfigWrite, PciFunction};
use vmm_sys_util::eventfd::EventFd;

use crate::msi::KvmMsiSink;
use crate::pci_bars::{BarMap, BarTarget};
use crate::vm_wiring::VmWiring;

/// BAR0's address registers (low, high) in configuration space.
/// A BAR the guest placed where it cannot be mapped (over another BAR,
/// an ioeventfd KVM refused): the guest can repeat it at will.
static BAR_MOVE_FAILED: LogLimit = LogLimit::new();

const BAR0_LOW: u16 = 0x10;
const BAR0_HIGH: u16 = 0x14;

fn lock(function: &Mutex<VirtioPci>) -> MutexGuard<'_, VirtioPci> {
    function.lock().unwrap_or_else(|p| p.into_inner())
}

/// A virtio-pci function and where its BAR0 is mapped.
pub struct VirtioFunction {
    function: Arc<Mutex<VirtioPci>>,
    bar0: Arc<Bar0>,
    /// Each queue's notify offset in BAR0 and its kick.
    notify: Vec<(u64, EventFd)>,
    /// BAR0's address while it is on the BAR map.
    mapped: Option<u64>,
}

impl VirtioFunction {
    /// Wires `function`, whose MSI-X messages go to `msi`.
    pub fn new(function: Arc<Mutex<VirtioPci>>, msi: Arc<KvmMsiSink>) -> Result<Self> {
        let (notify, msix) = {
            let locked = lock(&function);
            let notify = locked
                .notify_events()
                .into_iter()
                .map(|(offset, _, kick)| Ok((offset, kick.try_clone()?)))
                .collect::<std::io::Result<Vec<_>>>()
                .context("cloning the queues' kicks")?;
            (notify, locked.msix().clone())
        };
        let bar0 = Arc::new(Bar0 {
            function: function.clone(),
            msix,
            msi,
        });
        Ok(Self {
            function,
            bar0,
            notify,
            mapped: None,
        })
    }

    /// Gives BAR0 `address` as firmware would, leaving memory decoding
    /// for the guest to turn on.
    pub fn assign_bar(&self, address: u64) {
        let mut function = lock(&self.function);
        function.write_config(BAR0_LOW, &(address as u32).to_le_bytes());
        function.write_config(BAR0_HIGH, &((address >> 32) as u32).to_le_bytes());
    }

    /// The function's configuration space, for the PCI bus.
    pub fn config_function(&self) -> Box<dyn PciFunction> {
        Box::new(SharedFunction(self.function.clone()))
    }

    /// BAR0's address while it is mapped.
    pub fn mapped(&self) -> Option<u64> {
        self.mapped
    }

    /// Follows a configuration write to the function (`change` is what it
    /// changed): BAR0 mapped, moved or unmapped with its ioeventfds, MSI
    /// routes updated. Called with no function lock held.
    pub fn config_written(&mut self, change: ConfigWrite, bars: &BarMap, vm: &dyn VmWiring) {
        if matches!(
            change,
            ConfigWrite::Command { .. } | ConfigWrite::Bar { .. }
        ) {
            self.remap(bars, vm);
        }
        self.bar0.msi.sync(&self.bar0.msix);
    }

    /// Puts BAR0 where the configuration space says, if anywhere.
    fn remap(&mut self, bars: &BarMap, vm: &dyn VmWiring) {
        let wanted = {
            let function = lock(&self.function);
            let space = function.config_space();
            space
                .bar_address(0)
                .filter(|_| space.bar_enabled(0))
                .filter(|&address| bars.fits(address, BAR_SIZE))
        };
        if wanted == self.mapped {
            return;
        }
        if let Some(old) = self.mapped.take() {
            bars.remove(old);
            for (offset, kick) in &self.notify {
                if let Err(e) = vm.unregister_ioevent(kick, old + offset) {
                    BAR_MOVE_FAILED.warn(format_args!("virtio-pci: {e:#}"));
                }
            }
        }
        let Some(new) = wanted else { return };
        if let Err(e) = bars.insert(new, BAR_SIZE, self.bar0.clone()) {
            BAR_MOVE_FAILED.warn(format_args!("virtio-pci: BAR0 not mapped: {e:#}"));
            return;
        }
        for (offset, kick) in &self.notify {
            if let Err(e) = vm.register_ioevent(kick, new + offset) {
                // The kick still arrives, as a BAR0 write on the vCPU.
                BAR_MOVE_FAILED.warn(format_args!("virtio-pci: {e:#}"));
            }
        }
        self.mapped = Some(new);
    }
}

/// The function's configuration space, as the PCI bus holds it.
struct SharedFunction(Arc<Mutex<VirtioPci>>);

impl PciFunction for SharedFunction {
    fn read_config(&self, register: u16, data: &mut [u8]) {
        lock(&self.0).read_config(register, data);
    }

    fn write_config(&mut self, register: u16, data: &[u8]) -> ConfigWrite {
        lock(&self.0).write_config(register, data)
    }
}

/// BAR0 as the BAR map dispatches to it.
struct Bar0 {
    function: Arc<Mutex<VirtioPci>>,
    msix: Arc<MsixVectors>,
    msi: Arc<KvmMsiSink>,
}

impl BarTarget for Bar0 {
    fn read(&self, offset: u64, data: &mut [u8]) {
        lock(&self.function).read(offset, data);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        lock(&self.function).write(offset, data);
        if (MSIX_TABLE..MSIX_PBA).contains(&offset) {
            self.msi.sync(&self.msix);
        }
    }
}

// Tested through the host bridge: src/pci_host_tests.rs.
