//! What x86_64 vCPU exits other than port and MMIO I/O mean for the VM:
//! power-off and reset requests end the run cleanly, HLT just resumes (the
//! in-kernel LAPIC normally keeps it), and anything else is fatal with a
//! message naming the exit.

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::VcpuExit;

use crate::ExitAction;

/// Interprets `exit` on vCPU `vcpu`.
pub fn handle_exit(vcpu: u8, exit: VcpuExit<'_>) -> ExitAction {
    let fatal = |what: String| ExitAction::Fatal(format!("{what} on vCPU {vcpu}"));
    match exit {
        VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen => ExitAction::Continue,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => ExitAction::PowerOff,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => ExitAction::Reset,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_CRASH, _) => {
            fatal("guest reported a crash (KVM_SYSTEM_EVENT_CRASH)".into())
        }
        VcpuExit::SystemEvent(kind, _) => fatal(format!("unexpected KVM system event {kind}")),
        VcpuExit::Shutdown => fatal("guest triple fault (KVM_EXIT_SHUTDOWN)".into()),
        VcpuExit::InternalError => fatal(
            "KVM internal error (KVM_EXIT_INTERNAL_ERROR): the host could not emulate a guest \
             instruction"
                .into(),
        ),
        VcpuExit::FailEntry(reason, cpu) => fatal(format!(
            "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}, \
             host CPU {cpu})"
        )),
        VcpuExit::Exception => fatal("unhandled guest exception (KVM_EXIT_EXCEPTION)".into()),
        VcpuExit::Unknown => fatal("unknown exit (KVM_EXIT_UNKNOWN)".into()),
        VcpuExit::IoIn(port, _) | VcpuExit::IoOut(port, _) => fatal(format!(
            "port I/O exit at {port:#x} reached the x86_64 back end"
        )),
        VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _) => fatal(format!(
            "MMIO exit at {addr:#x} reached the x86_64 back end"
        )),
        VcpuExit::Unsupported(reason) => fatal(format!("unsupported KVM exit reason {reason}")),
        other => fatal(format!("unexpected KVM exit {}", exit_name(&other))),
    }
}

/// The variant name of an exit, without its payload.
fn exit_name(exit: &VcpuExit<'_>) -> String {
    let debug = format!("{exit:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fatal_message(exit: VcpuExit<'_>) -> String {
        match handle_exit(3, exit) {
            ExitAction::Fatal(msg) => msg,
            other => panic!("expected Fatal, got {other:?}"),
        }
    }

    #[test]
    fn power_events() {
        assert_eq!(
            handle_exit(0, VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, &[])),
            ExitAction::PowerOff
        );
        assert_eq!(
            handle_exit(0, VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[])),
            ExitAction::Reset
        );
        assert_eq!(handle_exit(0, VcpuExit::Hlt), ExitAction::Continue);
        assert!(
            fatal_message(VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_CRASH, &[])).contains("crash")
        );
        assert!(fatal_message(VcpuExit::SystemEvent(99, &[])).contains("system event 99"));
    }

    #[test]
    fn failures_name_the_exit_and_vcpu() {
        assert_eq!(
            fatal_message(VcpuExit::Shutdown),
            "guest triple fault (KVM_EXIT_SHUTDOWN) on vCPU 3"
        );
        assert!(fatal_message(VcpuExit::InternalError).contains("KVM_EXIT_INTERNAL_ERROR"));
        let msg = fatal_message(VcpuExit::FailEntry(0x21, 7));
        assert!(
            msg.contains("KVM_EXIT_FAIL_ENTRY") && msg.contains("0x21"),
            "{msg}"
        );
        assert!(fatal_message(VcpuExit::Unknown).contains("KVM_EXIT_UNKNOWN"));
        assert!(fatal_message(VcpuExit::Exception).contains("KVM_EXIT_EXCEPTION"));
        assert!(fatal_message(VcpuExit::Unsupported(77)).contains("77"));
        assert!(fatal_message(VcpuExit::IoOut(0x3f8, &[1])).contains("0x3f8"));
        assert!(fatal_message(VcpuExit::Watchdog).contains("Watchdog"));
        assert!(fatal_message(VcpuExit::IoapicEoi(3)).ends_with("IoapicEoi on vCPU 3"));
    }
}
