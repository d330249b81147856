//! What an aarch64 vCPU exit means for the run: PSCI system events end it,
//! KVM failures are fatal with a message saying what happened.

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::VcpuExit;

use crate::ExitAction;

/// The action for an exit of vCPU `vcpu` the core did not handle itself.
pub fn exit_action(vcpu: u8, exit: VcpuExit<'_>) -> ExitAction {
    let fatal = |what: String| ExitAction::Fatal(format!("vCPU {vcpu}: {what}"));
    match exit {
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => ExitAction::PowerOff,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => ExitAction::Reset,
        VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_CRASH, _) => {
            fatal("guest reported a crash (PSCI SYSTEM_EVENT crash)".into())
        }
        VcpuExit::SystemEvent(kind, data) => {
            fatal(format!("unexpected system event {kind} (data {data:x?})"))
        }
        // Interrupted or spurious: the guest just goes on.
        VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen | VcpuExit::Debug(_) => {
            ExitAction::Continue
        }
        VcpuExit::InternalError => fatal("KVM internal error".into()),
        VcpuExit::FailEntry(reason, cpu) => fatal(format!(
            "KVM could not enter the guest (hardware reason {reason:#x}, host CPU {cpu})"
        )),
        VcpuExit::MemoryFault { gpa, size, flags } => fatal(format!(
            "guest memory fault at {gpa:#x} (+{size:#x}, flags {flags:#x})"
        )),
        VcpuExit::Unknown => fatal("KVM reported an unknown exit".into()),
        VcpuExit::Exception => fatal("unhandled guest exception".into()),
        VcpuExit::Shutdown => fatal("KVM shut the vCPU down".into()),
        VcpuExit::IoIn(port, _) | VcpuExit::IoOut(port, _) => {
            fatal(format!("port I/O exit (port {port:#x}) on aarch64"))
        }
        VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _) => {
            fatal(format!("MMIO exit at {addr:#x} reached the back end"))
        }
        VcpuExit::Unsupported(reason) => fatal(format!("unsupported KVM exit reason {reason}")),
        other => fatal(format!("unexpected exit {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use kvm_bindings::KVM_SYSTEM_EVENT_SUSPEND;

    use super::*;

    fn is_fatal_with(action: ExitAction, words: &str) -> bool {
        matches!(action, ExitAction::Fatal(msg) if msg.contains(words) && msg.starts_with("vCPU 1:"))
    }

    #[test]
    fn psci_system_events_end_the_run() {
        assert_eq!(
            exit_action(0, VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, &[])),
            ExitAction::PowerOff
        );
        assert_eq!(
            exit_action(0, VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[0])),
            ExitAction::Reset
        );
        assert!(is_fatal_with(
            exit_action(1, VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_CRASH, &[])),
            "crash"
        ));
        let suspend = VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SUSPEND, &[]);
        assert!(is_fatal_with(exit_action(1, suspend), "system event 5"));
    }

    #[test]
    fn harmless_exits_continue() {
        assert_eq!(exit_action(0, VcpuExit::Hlt), ExitAction::Continue);
        assert_eq!(exit_action(0, VcpuExit::Intr), ExitAction::Continue);
    }

    #[test]
    fn kvm_failures_are_fatal_with_a_reason() {
        assert!(is_fatal_with(
            exit_action(1, VcpuExit::InternalError),
            "internal error"
        ));
        assert!(is_fatal_with(
            exit_action(1, VcpuExit::FailEntry(0x1f, 3)),
            "0x1f"
        ));
        assert!(is_fatal_with(
            exit_action(1, VcpuExit::Unknown),
            "unknown exit"
        ));
        assert!(is_fatal_with(
            exit_action(1, VcpuExit::Unsupported(99)),
            "reason 99"
        ));
        let fault = VcpuExit::MemoryFault {
            flags: 0,
            gpa: 0x4000_0000,
            size: 4096,
        };
        assert!(is_fatal_with(exit_action(1, fault), "0x40000000"));
        assert!(is_fatal_with(
            exit_action(1, VcpuExit::IoOut(0x3f8, &[0])),
            "port I/O"
        ));
    }
}
