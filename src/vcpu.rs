//! The KVM_RUN loop of one vCPU and its exit dispatch: port and MMIO I/O go
//! to the buses here, every other exit to the back end, and whatever ends
//! the run is raised on the shared [`ExitSignal`]. The loop leaves when the
//! VMM asks (pause or stop, see [`crate::vcpus`]) or the guest ends the run.

use std::sync::atomic::{AtomicU64, Ordering};

use arch::ExitAction;
use devices::{Bus, ExitReason, ExitSignal};
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use log::{debug, warn};

use crate::vcpus::{Request, VcpuControl};

/// Unclaimed MMIO accesses logged at `warn` before going quiet, so a guest
/// poking at nothing cannot flood the log. Unclaimed ports are only logged
/// at `debug`: x86 guests probe for ISA and PCI hardware as a matter of
/// course.
const UNCLAIMED_WARNINGS: u64 = 8;

/// The two buses exits are dispatched to.
#[derive(Default, Clone)]
pub struct Buses {
    /// Port I/O (x86 only; empty elsewhere).
    pub pio: Bus,
    /// Memory-mapped I/O.
    pub mmio: Bus,
}

/// Exit counts of one VM, shared by its vCPUs.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Port I/O exits.
    pub pio: AtomicU64,
    /// MMIO exits.
    pub mmio: AtomicU64,
    /// Accesses no device claimed.
    pub unclaimed: AtomicU64,
    /// Every other exit, handed to the back end.
    pub other: AtomicU64,
    /// Unclaimed MMIO accesses, for rate-limiting their warnings.
    unclaimed_mmio: AtomicU64,
}

impl ExitCounters {
    /// All exits so far.
    pub fn total(&self) -> u64 {
        self.pio.load(Ordering::Relaxed)
            + self.mmio.load(Ordering::Relaxed)
            + self.other.load(Ordering::Relaxed)
    }

    fn unclaimed(&self, what: &str, addr: u64, len: usize) {
        self.unclaimed.fetch_add(1, Ordering::Relaxed);
        let is_mmio = what.starts_with("MMIO");
        if is_mmio && self.unclaimed_mmio.fetch_add(1, Ordering::Relaxed) < UNCLAIMED_WARNINGS {
            warn!("guest {what} of {len} bytes at {addr:#x}: no device there");
        } else {
            debug!("guest {what} of {len} bytes at {addr:#x}: no device there");
        }
    }
}

/// What a vCPU thread shares with the rest of the VMM.
pub struct VcpuShared<'a> {
    /// Where I/O exits go.
    pub buses: &'a Buses,
    /// Raised when this vCPU ends the run.
    pub exit: &'a ExitSignal,
    /// What the VMM asks of the vCPUs: the loop runs while it says run.
    pub control: &'a VcpuControl,
    /// Exit statistics.
    pub counters: &'a ExitCounters,
}

/// The size of one element of the port I/O exit `run` describes (1, 2 or
/// 4 bytes; KVM's data holds `count` of them).
fn io_element_size(run: *const kvm_run) -> usize {
    // SAFETY: `run` is the vCPU's kvm_run mapping, valid while its VcpuFd
    // lives (the caller holds it); KVM_RUN just returned KVM_EXIT_IO, which
    // makes `io` the union member in use; only plain integers are read.
    let size = unsafe { (*run).__bindgen_anon_1.io.size };
    usize::from(size).max(1)
}

/// Why [`run_loop`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopEnd {
    /// The VMM asked the vCPU to pause or stop.
    Requested,
    /// The guest or an error ended the run (raised on the exit signal).
    RunEnded,
}

/// Runs vCPU `index` while `shared.control` says run, or until the guest
/// or an error ends the run. `arch_exit` interprets the exits that are not
/// I/O.
pub fn run_loop(
    vcpu: &mut VcpuFd,
    index: u8,
    shared: &VcpuShared<'_>,
    mut arch_exit: impl FnMut(u8, VcpuExit<'_>) -> ExitAction,
) -> LoopEnd {
    let counters = shared.counters;
    let run_area: *const kvm_run = vcpu.get_kvm_run();
    while shared.control.request() == Request::Run {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            // A kick from the VMM (its handler set immediate_exit) or a
            // spurious wake: clear the flag, then re-check the request.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                continue;
            }
            Err(e) => {
                shared.exit.raise(ExitReason::Fatal(format!(
                    "vCPU {index}: KVM_RUN failed: {e}"
                )));
                return LoopEnd::RunEnded;
            }
        };
        match exit {
            VcpuExit::IoIn(port, data) => {
                counters.pio.fetch_add(1, Ordering::Relaxed);
                // String I/O (`rep insb`) is one exit for many elements:
                // the device sees each as the access it is.
                for element in data.chunks_mut(io_element_size(run_area)) {
                    if !shared.buses.pio.read(port.into(), element) {
                        // An empty ISA bus floats high.
                        element.fill(0xff);
                        counters.unclaimed("port read", port.into(), element.len());
                    }
                }
            }
            VcpuExit::IoOut(port, data) => {
                counters.pio.fetch_add(1, Ordering::Relaxed);
                for element in data.chunks(io_element_size(run_area)) {
                    if !shared.buses.pio.write(port.into(), element) {
                        counters.unclaimed("port write", port.into(), element.len());
                    }
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                counters.mmio.fetch_add(1, Ordering::Relaxed);
                if !shared.buses.mmio.read(addr, data) {
                    data.fill(0);
                    counters.unclaimed("MMIO read", addr, data.len());
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                counters.mmio.fetch_add(1, Ordering::Relaxed);
                if !shared.buses.mmio.write(addr, data) {
                    counters.unclaimed("MMIO write", addr, data.len());
                }
            }
            other => {
                counters.other.fetch_add(1, Ordering::Relaxed);
                let reason = match arch_exit(index, other) {
                    ExitAction::Continue => continue,
                    ExitAction::PowerOff => ExitReason::PowerOff,
                    ExitAction::Reset => ExitReason::Reset,
                    ExitAction::Fatal(message) => ExitReason::Fatal(message),
                };
                shared.exit.raise(reason);
                return LoopEnd::RunEnded;
            }
        }
    }
    LoopEnd::Requested
}
