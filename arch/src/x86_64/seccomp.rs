//! x86_64's part of tandem's seccomp filters: the legacy system calls
//! x86_64 still has and glibc still makes (aarch64 only has their `*at` or
//! `p*` forms), the guest-clock ioctls pause and resume use, and the
//! reads a snapshot of the running (paused) VM makes. Restoring happens
//! before the main thread confines itself, so its writes need no entry.

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid2, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, KVMIO,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

use crate::SeccompExtras;

ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
ioctl_iow_nr!(KVM_SET_CLOCK, KVMIO, 0x7b, kvm_clock_data);
ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
ioctl_iowr_nr!(KVM_GET_CPUID2, KVMIO, 0x91, kvm_cpuid2);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
ioctl_io_nr!(KVM_GET_TSC_KHZ, KVMIO, 0xa3);
ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);

/// x86_64's additions.
pub fn extras() -> SeccompExtras {
    SeccompExtras {
        // glibc's epoll_wait, poll and unlink use these numbers on x86_64.
        all_threads: vec![libc::SYS_epoll_wait, libc::SYS_poll, libc::SYS_unlink],
        main_ioctls: [
            KVM_GET_CLOCK(),
            KVM_SET_CLOCK(),
            KVM_GET_IRQCHIP(),
            KVM_GET_REGS(),
            KVM_GET_SREGS(),
            KVM_GET_MSRS(),
            KVM_GET_LAPIC(),
            KVM_GET_CPUID2(),
            KVM_GET_MP_STATE(),
            KVM_GET_PIT2(),
            KVM_GET_VCPU_EVENTS(),
            KVM_GET_DEBUGREGS(),
            KVM_GET_TSC_KHZ(),
            KVM_GET_XSAVE(),
            KVM_GET_XCRS(),
        ]
        .map(u64::from)
        .to_vec(),
        names: vec![
            (libc::SYS_open, "open"),
            (libc::SYS_stat, "stat"),
            (libc::SYS_lstat, "lstat"),
            (libc::SYS_poll, "poll"),
            (libc::SYS_access, "access"),
            (libc::SYS_pipe, "pipe"),
            (libc::SYS_select, "select"),
            (libc::SYS_dup2, "dup2"),
            (libc::SYS_fork, "fork"),
            (libc::SYS_vfork, "vfork"),
            (libc::SYS_rename, "rename"),
            (libc::SYS_mkdir, "mkdir"),
            (libc::SYS_rmdir, "rmdir"),
            (libc::SYS_creat, "creat"),
            (libc::SYS_link, "link"),
            (libc::SYS_unlink, "unlink"),
            (libc::SYS_symlink, "symlink"),
            (libc::SYS_readlink, "readlink"),
            (libc::SYS_chmod, "chmod"),
            (libc::SYS_chown, "chown"),
            (libc::SYS_getdents, "getdents"),
            (libc::SYS_epoll_wait, "epoll_wait"),
            (libc::SYS_epoll_create, "epoll_create"),
            (libc::SYS_eventfd, "eventfd"),
            (libc::SYS_arch_prctl, "arch_prctl"),
            (libc::SYS_iopl, "iopl"),
            (libc::SYS_ioperm, "ioperm"),
            (libc::SYS_time, "time"),
            (libc::SYS_alarm, "alarm"),
        ],
    }
}
