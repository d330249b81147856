//! Interrupt triggers: an `EventFd` the VMM binds to a GSI with KVM_IRQFD.
//! Devices signal it and never learn which interrupt controller is behind.

use std::io;
use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Raises one interrupt line. Cheap to clone; clones share the `EventFd`.
#[derive(Clone, Debug)]
pub struct IrqTrigger {
    evt: Arc<EventFd>,
}

impl IrqTrigger {
    /// A new trigger with its own `EventFd`.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            evt: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        })
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
