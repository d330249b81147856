//! tandem's arch-neutral core: configuration, guest memory, the device
//! manager, vCPU threads with the KVM_RUN loop, and the VM lifecycle. The
//! architecture back end is reached only through [`arch::Arch`], via the
//! [`arch::Host`] alias.

pub mod api;
pub mod config;
pub mod console;
pub mod device_manager;
pub mod logger;
pub mod memory;
pub mod signals;
pub mod vcpu;
pub mod vmm;
