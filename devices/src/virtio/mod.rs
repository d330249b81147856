//! virtio over MMIO and PCI: the transports and the devices behind them.
//!
//! [`MmioTransport`] and [`VirtioPci`] are what a guest driver talks to,
//! both decoding onto one transport core; each
//! device implements [`VirtioDevice`] and, once the driver sets DRIVER_OK,
//! serves its queues on a [`worker`] thread.

pub mod balloon;
pub mod block;
mod chain;
pub mod console;
mod device;
mod interrupt;
mod io_stats;
mod mmio;
mod mmio_queue;
pub mod net;
pub mod pci;
mod ring;
pub mod rng;
pub mod tap;
mod timer;
mod transport;
pub mod vsock;
pub mod worker;

#[cfg(test)]
mod testing;

pub use crate::LogLimit;
pub use chain::{Buffer, Chain, ChainError, Segments, MAX_CHAIN_DESCRIPTORS};
pub use device::{
    check_queue_count, feature, read_config_bytes, ActivateContext, ActivateError, ActiveQueue,
    VirtioDevice,
};
pub use interrupt::{
    Interrupt, InterruptSource, InterruptState, Stats, StatsSnapshot, VectorRouting,
    INT_CONFIG_CHANGE, INT_USED_BUFFER,
};
pub use io_stats::{IoStats, IoStatsSnapshot};
pub use mmio::{MmioState, MmioTransport, QueueRegisters, MMIO_LEN, QUEUE_NOTIFY_OFFSET};
pub use pci::{MsiSink, MsixVectors, VirtioPci, NO_VECTOR};
pub use ring::{add_used_batch, drain_queue, guarded, notify_since, pop_chain};

pub use balloon::{Balloon, BalloonConfig, BalloonControl, BalloonState, BalloonStats};
pub use block::{Block, BlockConfig, BlockError, IoEngine};
pub use console::{Console, ConsoleInput, ConsoleOutput};
pub use net::{parse_mac, random_mac, Net, NetConfig, NetError};
pub use rng::Rng;
pub use vsock::{Vsock, VsockError};
