//! tandem's device models: the buses exits are dispatched on, the legacy
//! devices every guest needs, and virtio over MMIO and PCI.
//!
//! Nothing here knows about an architecture or an interrupt controller:
//! devices raise interrupts through [`IrqTrigger`] (an `EventFd` the VMM
//! binds to a GSI with KVM_IRQFD), virtio-pci's MSI-X vectors through a
//! `virtio::MsiSink` the VMM provides, and ask the VMM to stop through
//! [`ExitSignal`].

pub mod bus;
pub mod exit;
pub mod irq;
pub mod legacy;
pub mod log_limit;
pub mod thread_hook;
pub mod virtio;

#[cfg(test)]
mod test_log;

pub use bus::{Bus, BusDevice, BusError};
pub use exit::{ExitReason, ExitSignal};
pub use irq::IrqTrigger;
pub use log_limit::LogLimit;
pub use thread_hook::set_thread_start_hook;
