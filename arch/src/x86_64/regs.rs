//! Boot vCPU state: FPU defaults for every vCPU, and for the boot vCPU the
//! general and special registers of the chosen entry — 64-bit long mode
//! (RSI = zero page) for the Linux boot protocol, or flat 32-bit protected
//! mode for PVH (EBX = hvm_start_info) and multiboot (EAX = 0x2BADB002,
//! EBX = multiboot information).

use guest_memory::GuestMemoryMmap;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{self, EntryMode, CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use super::layout::{
    BOOT_STACK_TOP, GDT_ADDR, IDT_ADDR, MULTIBOOT_INFO_ADDR, PVH_INFO_ADDR, ZERO_PAGE_ADDR,
};
use super::paging;
use crate::{kvm_err, Error, Result};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// What a multiboot loader leaves in EAX for the kernel to recognise it.
const MULTIBOOT_BOOTLOADER_MAGIC: u64 = 0x2bad_b002;
/// Bit 1 of RFLAGS is reserved and always set; interrupts stay off.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// x87 control word after FNINIT, and MXCSR after reset: all exceptions
/// masked.
pub fn default_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// Sets the FPU defaults on any vCPU.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<()> {
    vcpu.set_fpu(&default_fpu()).map_err(kvm_err("KVM_SET_FPU"))
}

/// General registers at the kernel entry point.
pub fn boot_regs(mode: EntryMode, entry: u64) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Long => {
            regs.rsp = BOOT_STACK_TOP;
            regs.rbp = BOOT_STACK_TOP;
            regs.rsi = ZERO_PAGE_ADDR;
        }
        EntryMode::Protected32 => regs.rbx = PVH_INFO_ADDR,
        EntryMode::Multiboot => {
            regs.rax = MULTIBOOT_BOOTLOADER_MAGIC;
            regs.rbx = MULTIBOOT_INFO_ADDR;
        }
    }
    regs
}

/// Special registers for `mode`, starting from the vCPU's reset state
/// (which keeps KVM's APIC base and the like).
pub fn boot_sregs(mut sregs: kvm_sregs, mode: EntryMode, cr3: u64) -> kvm_sregs {
    let table = gdt::gdt(mode);
    let seg = |selector: u16| gdt::segment(table[usize::from(selector / 8)], selector);
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;
    sregs.cs = seg(CODE_SELECTOR);
    let data = seg(DATA_SELECTOR);
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = seg(TSS_SELECTOR);
    match mode {
        EntryMode::Long => {
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = cr3;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        EntryMode::Protected32 | EntryMode::Multiboot => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    sregs
}

/// Writes the GDT (and an empty IDT) for `mode` into guest memory.
pub fn write_gdt(mem: &GuestMemoryMmap, mode: EntryMode) -> Result<()> {
    let guest_err = |e: vm_memory::GuestMemoryError| Error::GuestMemory(format!("GDT: {e}"));
    for (i, entry) in gdt::gdt(mode).iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))
            .map_err(guest_err)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))
        .map_err(guest_err)
}

/// Puts the boot vCPU at `entry` in `mode`, with the tables it needs.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    mode: EntryMode,
    entry: u64,
) -> Result<()> {
    write_gdt(mem, mode)?;
    let cr3 = match mode {
        EntryMode::Long => paging::write_identity_page_tables(mem)?,
        EntryMode::Protected32 | EntryMode::Multiboot => 0,
    };
    let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&boot_sregs(sregs, mode, cr3))
        .map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&boot_regs(mode, entry))
        .map_err(kvm_err("KVM_SET_REGS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry() {
        let regs = boot_regs(EntryMode::Long, 0x100_0200);
        assert_eq!(
            (regs.rip, regs.rsi, regs.rsp),
            (0x100_0200, ZERO_PAGE_ADDR, BOOT_STACK_TOP)
        );
        assert_eq!(regs.rflags, 2);
        let sregs = boot_sregs(kvm_sregs::default(), EntryMode::Long, 0x9000);
        assert_eq!(sregs.cr3, 0x9000);
        assert_ne!(sregs.cr0 & CR0_PG, 0);
        assert_ne!(sregs.cr0 & CR0_PE, 0);
        assert_ne!(sregs.cr4 & CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((sregs.cs.selector, sregs.cs.l), (CODE_SELECTOR, 1));
        assert_eq!(
            (sregs.ss.selector, sregs.tr.selector),
            (DATA_SELECTOR, TSS_SELECTOR)
        );
        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (GDT_ADDR, 31));
    }

    #[test]
    fn pvh_entry() {
        let regs = boot_regs(EntryMode::Protected32, 0x100_0abc);
        assert_eq!(
            (regs.rip, regs.rbx, regs.rflags),
            (0x100_0abc, PVH_INFO_ADDR, 2)
        );
        let reset = kvm_sregs {
            cr0: 0x6000_0010,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        let sregs = boot_sregs(reset, EntryMode::Protected32, 0);
        assert_eq!((sregs.cr0, sregs.cr4, sregs.efer), (CR0_PE | CR0_ET, 0, 0));
        assert_eq!(sregs.apic_base, 0xfee0_0900, "reset state kept");
        assert_eq!(
            (sregs.cs.db, sregs.cs.l, sregs.cs.limit),
            (1, 0, 0xffff_ffff)
        );
        assert_eq!((sregs.ds.db, sregs.ds.limit), (1, 0xffff_ffff));
    }

    #[test]
    fn multiboot_entry() {
        let regs = boot_regs(EntryMode::Multiboot, 0x40_00bc);
        assert_eq!(
            (regs.rip, regs.rax, regs.rbx),
            (0x40_00bc, 0x2bad_b002, MULTIBOOT_INFO_ADDR)
        );
        let sregs = boot_sregs(kvm_sregs::default(), EntryMode::Multiboot, 0);
        assert_eq!(
            boot_sregs(kvm_sregs::default(), EntryMode::Protected32, 0),
            sregs,
            "the same flat 32-bit state as PVH"
        );
    }

    #[test]
    fn gdt_in_memory_decodes_to_the_loaded_segments() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        for mode in [
            EntryMode::Long,
            EntryMode::Protected32,
            EntryMode::Multiboot,
        ] {
            write_gdt(&mem, mode).unwrap();
            let sregs = boot_sregs(kvm_sregs::default(), mode, 0);
            for s in [sregs.cs, sregs.ds, sregs.ss, sregs.tr] {
                let raw: u64 = mem
                    .read_obj(GuestAddress(GDT_ADDR + u64::from(s.selector)))
                    .unwrap();
                assert_eq!(gdt::segment(raw, s.selector), s, "{mode:?}");
            }
        }
    }
}
