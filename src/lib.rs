//! tandem's arch-neutral core: configuration, guest memory, the device
//! manager, vCPU threads with the KVM_RUN loop, and the VM lifecycle. The
//! architecture back end is reached only through [`arch::Arch`], via the
//! [`arch::Host`] alias.

pub mod api;
pub mod config;
pub mod console;
pub mod controller;
pub mod device_manager;
pub mod dirty;
pub mod kvm_stats;
pub mod logger;
pub mod machine;
pub mod memory;
pub mod metrics;
pub mod metrics_line;
pub mod migration;
pub mod msi;
pub mod pci_bars;
pub mod pci_function;
pub mod pci_host;
pub mod resources;
pub mod seccomp;
pub mod signals;
pub mod snapshot;
pub mod vcpu;
pub mod vcpus;
pub mod virtio_slot;
pub mod vm;
pub mod vm_wiring;
pub mod vmm;

/// When the process started, for start-up timings in logs: the first call
/// (made first thing in `main`) fixes it.
pub fn process_started() -> std::time::Instant {
    static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *STARTED.get_or_init(std::time::Instant::now)
}
