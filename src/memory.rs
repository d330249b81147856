//! Guest RAM: mmaps the regions the back end chose and registers each one
//! with KVM as a memory slot.

use anyhow::{Context, Result};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Maps `regions` (start, size) and hands them to KVM.
pub fn create_guest_memory(vm: &VmFd, regions: &[(GuestAddress, u64)]) -> Result<GuestMemoryMmap> {
    let ranges: Vec<(GuestAddress, usize)> = regions
        .iter()
        .map(|&(start, size)| Ok((start, usize::try_from(size)?)))
        .collect::<Result<_>>()?;
    let total: u64 = regions.iter().map(|r| r.1).sum();
    let mem = GuestMemoryMmap::from_ranges(&ranges)
        .with_context(|| format!("cannot map {} MiB of guest memory", total >> 20))?;
    for (slot, region) in mem.iter().enumerate() {
        let kvm_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem` of exactly
        // `memory_size` bytes, and `mem` outlives the VM: the VMM keeps it
        // until after every vCPU thread has been joined.
        unsafe { vm.set_user_memory_region(kvm_region) }
            .with_context(|| format!("KVM refused memory slot {slot}"))?;
    }
    Ok(mem)
}
