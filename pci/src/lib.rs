//! PCI for tandem, as models with no KVM or memory-map in them: a
//! function's configuration space (type-0 header, BAR sizing, the command
//! register, the capability list, read-only bits), ECAM addressing, a bus
//! of functions where absent ones read as all-ones, and MSI-X tables with
//! masking and pending bits. The host bridge and virtio-pci build on these
//! and act on what a write changed (a BAR moved, decoding switched on or
//! off, a vector unmasked); docs/pci.md describes the whole.
//!
//! Written here rather than taken from a crate: the crates that read PCI
//! configuration space (for kernels and drivers) do not emulate it, and
//! the VMMs that do keep theirs in-tree.

pub mod bus;
pub mod config;
pub mod ecam;
pub mod msix;

pub use bus::{PciBus, PciFunction};
pub use config::{Bar, BarKind, ConfigSpace, ConfigWrite, Header};
pub use ecam::EcamAddress;
pub use msix::{MsiMessage, MsixTable};
