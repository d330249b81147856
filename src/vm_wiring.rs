//! The KVM calls that connect device events to the guest while it runs —
//! MMIO ioeventfds, irqfds and the GSI routing table — behind one trait,
//! so the PCI host bridge and MSI delivery, which make them when the guest
//! moves a BAR or programs a vector, are tested against a recorder.

use anyhow::{Context, Result};
use arch::IrqchipRoute;
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_irqchip, kvm_irq_routing_msi, KvmIrqRouting,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MSI_VALID_DEVID,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use pci::MsiMessage;
use vmm_sys_util::eventfd::EventFd;

/// The VM side of device wiring.
pub trait VmWiring: Send + Sync {
    /// A guest write of any width at `addr` (MMIO) signals `event`.
    fn register_ioevent(&self, event: &EventFd, addr: u64) -> Result<()>;
    /// Undoes [`Self::register_ioevent`].
    fn unregister_ioevent(&self, event: &EventFd, addr: u64) -> Result<()>;
    /// Signalling `event` raises `gsi`.
    fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<()>;
    /// Replaces the whole GSI routing table with `routes`.
    fn set_gsi_routing(&self, routes: &[GsiRoute]) -> Result<()>;
}

/// One entry of the GSI routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsiRoute {
    /// A GSI raises an interrupt controller's pin.
    Irqchip(IrqchipRoute),
    /// A GSI sends an MSI.
    Msi {
        /// The GSI.
        gsi: u32,
        /// What the write is.
        message: MsiMessage,
        /// The requester id, where the interrupt controller needs it.
        device_id: Option<u32>,
    },
}

impl GsiRoute {
    /// KVM's form.
    fn to_kvm(self) -> kvm_irq_routing_entry {
        let mut entry = kvm_irq_routing_entry::default();
        match self {
            GsiRoute::Irqchip(route) => {
                entry.gsi = route.gsi;
                entry.type_ = KVM_IRQ_ROUTING_IRQCHIP;
                entry.u.irqchip = kvm_irq_routing_irqchip {
                    irqchip: route.irqchip,
                    pin: route.pin,
                };
            }
            GsiRoute::Msi {
                gsi,
                message,
                device_id,
            } => {
                entry.gsi = gsi;
                entry.type_ = KVM_IRQ_ROUTING_MSI;
                let mut msi = kvm_irq_routing_msi {
                    address_lo: message.address as u32,
                    address_hi: (message.address >> 32) as u32,
                    data: message.data,
                    ..Default::default()
                };
                if let Some(id) = device_id {
                    entry.flags = KVM_MSI_VALID_DEVID;
                    msi.__bindgen_anon_1.devid = id;
                }
                entry.u.msi = msi;
            }
        }
        entry
    }
}

impl VmWiring for VmFd {
    fn register_ioevent(&self, event: &EventFd, addr: u64) -> Result<()> {
        VmFd::register_ioevent(self, event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .with_context(|| format!("KVM_IOEVENTFD at {addr:#x}"))
    }

    fn unregister_ioevent(&self, event: &EventFd, addr: u64) -> Result<()> {
        VmFd::unregister_ioevent(self, event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .with_context(|| format!("KVM_IOEVENTFD (deassign) at {addr:#x}"))
    }

    fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<()> {
        VmFd::register_irqfd(self, event, gsi).with_context(|| format!("KVM_IRQFD on GSI {gsi}"))
    }

    fn set_gsi_routing(&self, routes: &[GsiRoute]) -> Result<()> {
        let entries: Vec<_> = routes.iter().map(|route| route.to_kvm()).collect();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| anyhow::anyhow!("GSI routing table of {} entries: {e:?}", routes.len()))?;
        VmFd::set_gsi_routing(self, &table).context("KVM_SET_GSI_ROUTING")
    }
}

/// A [`VmWiring`] that records what it is asked, for tests.
#[cfg(test)]
pub mod recorder {
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;

    use super::*;

    /// One call, with eventfds by raw fd number.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Call {
        /// `register_ioevent(fd, addr)`.
        Ioevent(i32, u64),
        /// `unregister_ioevent(fd, addr)`.
        NoIoevent(i32, u64),
        /// `register_irqfd(fd, gsi)`.
        Irqfd(i32, u32),
        /// `set_gsi_routing(routes)`.
        Routing(Vec<GsiRoute>),
    }

    /// Every call so far.
    #[derive(Default)]
    pub struct Recorder(pub Mutex<Vec<Call>>);

    impl Recorder {
        /// The calls so far, taken.
        pub fn take(&self) -> Vec<Call> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    impl VmWiring for Recorder {
        fn register_ioevent(&self, event: &EventFd, addr: u64) -> Result<()> {
            let call = Call::Ioevent(event.as_raw_fd(), addr);
            self.0.lock().unwrap().push(call);
            Ok(())
        }

        fn unregister_ioevent(&self, event: &EventFd, addr: u64) -> Result<()> {
            let call = Call::NoIoevent(event.as_raw_fd(), addr);
            self.0.lock().unwrap().push(call);
            Ok(())
        }

        fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<()> {
            let call = Call::Irqfd(event.as_raw_fd(), gsi);
            self.0.lock().unwrap().push(call);
            Ok(())
        }

        fn set_gsi_routing(&self, routes: &[GsiRoute]) -> Result<()> {
            self.0.lock().unwrap().push(Call::Routing(routes.to_vec()));
            Ok(())
        }
    }
}
