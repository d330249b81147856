//! aarch64's part of tandem's seccomp filters: no extra system calls (the
//! generic table has only the `*at` and `p*` forms, which the core's lists
//! already name), and the guest-counter ioctls pause and resume use.

use kvm_bindings::{kvm_one_reg, KVMIO};
use vmm_sys_util::ioctl_iow_nr;

use super::counter::KVM_ARM_SET_COUNTER_OFFSET;
use crate::SeccompExtras;

ioctl_iow_nr!(KVM_GET_ONE_REG, KVMIO, 0xab, kvm_one_reg);
ioctl_iow_nr!(KVM_SET_ONE_REG, KVMIO, 0xac, kvm_one_reg);

/// aarch64's additions.
pub fn extras() -> SeccompExtras {
    SeccompExtras {
        all_threads: Vec::new(),
        main_ioctls: vec![
            KVM_GET_ONE_REG() as u64,
            KVM_SET_ONE_REG() as u64,
            KVM_ARM_SET_COUNTER_OFFSET() as u64,
        ],
        names: Vec::new(),
    }
}
