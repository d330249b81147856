//! x86_64's part of tandem's seccomp filters: the legacy system calls
//! x86_64 still has and glibc still makes (aarch64 only has their `*at` or
//! `p*` forms), and the guest-clock ioctls pause and resume use.

use kvm_bindings::{kvm_clock_data, KVMIO};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

use crate::SeccompExtras;

ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
ioctl_iow_nr!(KVM_SET_CLOCK, KVMIO, 0x7b, kvm_clock_data);

/// x86_64's additions.
pub fn extras() -> SeccompExtras {
    SeccompExtras {
        // glibc's epoll_wait, poll and unlink use these numbers on x86_64.
        all_threads: vec![libc::SYS_epoll_wait, libc::SYS_poll, libc::SYS_unlink],
        main_ioctls: vec![KVM_GET_CLOCK() as u64, KVM_SET_CLOCK() as u64],
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
