//! Interrupt triggers: an `EventFd` the VMM binds to a GSI with KVM_IRQFD.
//! Devices signal it and never learn which interrupt controller is behind.
//! A level-triggered line (PCI INTx) also has a resample `EventFd`: KVM
//! keeps the line up from the trigger until the guest's EOI, then lowers
//! it and signals resample, and the device raises it again if its
//! interrupt is still pending.

use std::io;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Raises one interrupt line. Cheap to clone; clones share the `EventFd`.
#[derive(Clone, Debug)]
pub struct IrqTrigger {
    evt: Arc<EventFd>,
    resample: Option<Arc<EventFd>>,
}

impl IrqTrigger {
    /// A new edge trigger with its own `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            evt: Arc::new(EventFd::new(EFD_NONBLOCK)?),
            resample: None,
        })
    }

    /// A new level trigger: bound with KVM_IRQFD_FLAG_RESAMPLE to
    /// [`Self::resample_fd`].
    pub fn level() -> io::Result<Self> {
        Ok(Self {
            resample: Some(Arc::new(EventFd::new(EFD_NONBLOCK)?)),
            ..Self::new()?
        })
    }

    /// The resample `EventFd` of a level trigger.
    pub fn resample_fd(&self) -> Option<&EventFd> {
        self.resample.as_deref()
    }

    /// Raises the interrupt.
    pub fn trigger(&self) -> io::Result<()> {
        self.evt.write(1)
    }

    /// The `EventFd` to hand to KVM_IRQFD (or to read in tests).
    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }
}

impl vm_superio::Trigger for IrqTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        IrqTrigger::trigger(self)
    }
}
