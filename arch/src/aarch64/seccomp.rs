//! aarch64's part of tandem's seccomp filters: no extra system calls (the
//! generic table has only the `*at` and `p*` forms, which the core's lists
//! already name), the guest-counter ioctls pause and resume use, and
//! those a snapshot reads the vCPUs and the VGIC with.

use kvm_bindings::{kvm_device_attr, kvm_mp_state, kvm_one_reg, kvm_reg_list, KVMIO};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

use super::counter::KVM_ARM_SET_COUNTER_OFFSET;
use crate::SeccompExtras;

ioctl_iow_nr!(KVM_GET_ONE_REG, KVMIO, 0xab, kvm_one_reg);
ioctl_iow_nr!(KVM_SET_ONE_REG, KVMIO, 0xac, kvm_one_reg);
ioctl_iowr_nr!(KVM_GET_REG_LIST, KVMIO, 0xb0, kvm_reg_list);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, KVMIO, 0xe1, kvm_device_attr);
ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);

/// aarch64's additions.
pub fn extras() -> SeccompExtras {
    SeccompExtras {
        all_threads: Vec::new(),
        main_ioctls: vec![
            KVM_GET_ONE_REG() as u64,
            KVM_SET_ONE_REG() as u64,
            KVM_ARM_SET_COUNTER_OFFSET() as u64,
            // Snapshots: vCPU registers and MP state; the VGIC's registers
            // and its save commands (pending and ITS tables).
            KVM_GET_REG_LIST() as u64,
            KVM_GET_MP_STATE() as u64,
            KVM_GET_DEVICE_ATTR() as u64,
            KVM_SET_DEVICE_ATTR() as u64,
        ],
        names: Vec::new(),
    }
}
