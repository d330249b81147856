//! virtio over MMIO: the transport and the devices behind it.
//!
//! [`MmioTransport`] is the register file a guest driver talks to; each
//! device implements [`VirtioDevice`] and, once the driver sets DRIVER_OK,
//! serves its queues on a [`worker`] thread.

mod device;
mod interrupt;
pub mod worker;

pub use device::{
    check_queue_count, feature, read_config_bytes, ActivateContext, ActivateError, ActiveQueue,
    VirtioDevice,
};
pub use interrupt::{Interrupt, Stats, StatsSnapshot, INT_CONFIG_CHANGE, INT_USED_BUFFER};
