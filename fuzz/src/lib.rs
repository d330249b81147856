//! Shared pieces of tandem's fuzz targets: a small guest memory
//! (`memory`), the driver side of split virtqueues written into it from
//! structured fuzz input (`driver`: descriptors, indirect tables,
//! available ring, raw byte pokes), the virtio-mmio bring-up a driver
//! performs (`transport`), and the oracles the device targets check
//! afterwards (`oracle`): a device writes guest memory only inside
//! device-writable buffers and its own used ring, never reports more
//! bytes written into a chain than the chain can hold, and reports none
//! for a chain longer than the descriptor cap (it drops those).

mod driver;
mod memory;
mod oracle;
mod transport;

pub use driver::*;
pub use memory::*;
pub use oracle::*;
pub use transport::*;
