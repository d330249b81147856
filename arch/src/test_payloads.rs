//! Tiny hand-made guest programs for testing the KVM plumbing (run loop,
//! port and MMIO dispatch, exit counts) on any KVM, including hosts that
//! cannot boot a stock kernel. Each is loaded at guest address 0x1000 into
//! a VM the test created without a back end.

use guest_memory::GuestMemoryMmap;
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::{kvm_err, Error, Result};

/// What the payload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Writes 0, 1, 2, … as 16-bit values to port 0x10 forever.
    PortCounter,
    /// Stores the bytes 0, 1, 2, … to [`MMIO_TARGET`] forever.
    MmioStoreLoop,
    /// Reads port 0x20 (nothing there), writes the value to port 0x10, halts.
    UnclaimedPortThenHalt,
    /// Reads 4 bytes from port 0x10 with one `rep insb`, writes them back
    /// with one `rep outsb`, halts.
    StringInOutThenHalt,
}

/// Port the port payloads write to.
pub const PORT: u16 = 0x10;
/// Port nothing should claim.
pub const UNCLAIMED_PORT: u16 = 0x20;
/// Address the MMIO payload stores to; outside guest RAM.
pub const MMIO_TARGET: u64 = 0x2_0004;
/// Guest RAM the payloads need, from address 0.
pub const RAM_SIZE: usize = 0x1_0000;
const LOAD_ADDR: u64 = 0x1000;

/// A whole "kernel" file tandem can boot, for testing the binary's
/// lifecycle on any KVM host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TinyKernel {
    /// Asks the platform to power off (x86: ACPI S5 through the sleep
    /// control register).
    PowerOff,
    /// Asks the platform to reset (x86: i8042 reset line).
    Reset,
    /// Spins forever: only the host can end it.
    Spin,
    /// Writes to port 0x80 (nothing there) forever: every pass is one
    /// exit to the VMM, so its exit count shows whether it runs.
    PortLoop,
    /// Raises an exception with no handler: a triple fault on x86.
    Crash,
    /// Writes `x` to the console UART's transmit register (x86: COM1,
    /// port 0x3f8) forever, without waiting for the line to be free.
    SerialFlood,
    /// Counts in guest RAM ([`COUNTER_ADDR`]) and writes each new count's
    /// low byte to the console UART, a short delay loop between counts:
    /// the bytes 1, 2, 3, … show that registers and RAM carried on.
    Counter,
    /// A multiboot (v1) ELF32 image (x86) that checks what its loader hands
    /// over — EAX = 0x2BADB002; info flags for memory, command line,
    /// modules and memory map; mem_upper of a 64 MiB guest; one module
    /// starting with [`MULTIBOOT_MODULE_PREFIX`]; a command line starting
    /// with [`MULTIBOOT_CMDLINE_PREFIX`] — and writes to the debug-exit
    /// port (0xf4) [`MULTIBOOT_ALL_GOOD`] if all hold, else the number
    /// (1-6) of the first check that failed.
    MultibootCheck,
    /// Reads PCI configuration space and a BAR and prints each dword as 8
    /// hex digits and a newline on the console UART, then writes 0x10 to
    /// the debug-exit port (x86, needs `--debug-exit` and a PCI host
    /// bridge; see [`PCI_PROBE_LINES`]).
    PciProbe,
}

/// What [`TinyKernel::PciProbe`] prints, line by line: the id dword of
/// 00:00.0 and of 00:01.0 through ports 0xcf8/0xcfc; 00:01.0's and
/// 00:02.0's through ECAM at 0xe000_0000; 00:01.0's BAR0 register after
/// the probe moved it to 0xc000_0000 (64-bit, above the high half 0) and
/// turned memory decoding on; the 16-bit word at BAR0 + 0x12 (virtio
/// `num_queues`) then; the data of MSI-X vector 0 after programming it
/// (address 0xfee0_0000, data 0x30) and unmasking it; the word at BAR0 +
/// 0x12 again after decoding is off.
pub const PCI_PROBE_LINES: usize = 8;

/// What [`TinyKernel::MultibootCheck`] expects its module to start with.
pub const MULTIBOOT_MODULE_PREFIX: &[u8; 4] = b"KUT!";
/// What [`TinyKernel::MultibootCheck`] expects its command line to start
/// with.
pub const MULTIBOOT_CMDLINE_PREFIX: &[u8; 4] = b"kut=";
/// The value [`TinyKernel::MultibootCheck`] reports when every check held.
pub const MULTIBOOT_ALL_GOOD: u8 = 0x21;

/// Where [`TinyKernel::Counter`] keeps its count (x86: 2 MiB).
pub const COUNTER_ADDR: u64 = 0x20_0000;

/// The image of `kernel` for this architecture, or `None` where tandem
/// cannot boot hand-made kernels of that kind yet.
pub fn tiny_kernel(kernel: TinyKernel) -> Option<Vec<u8>> {
    imp::tiny_kernel(kernel)
}

/// x86_64 ELF "kernels" and multiboot ELF32 images around hand-made code,
/// for back-end tests.
#[cfg(target_arch = "x86_64")]
pub use imp::{elf_kernel, multiboot_elf32};

/// Writes `payload` into `mem` and points `vcpu` at it. Returns false when
/// this architecture has no such payload (port I/O outside x86).
pub fn load(vcpu: &VcpuFd, vm: &VmFd, mem: &GuestMemoryMmap, payload: Payload) -> Result<bool> {
    let Some(code) = imp::code(payload) else {
        return Ok(false);
    };
    mem.write_slice(code, GuestAddress(LOAD_ADDR))
        .map_err(|e| Error::GuestMemory(e.to_string()))?;
    imp::point_vcpu_at(vcpu, vm, LOAD_ADDR)?;
    Ok(true)
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;

    /// 16-bit real-mode code, assembled with `as --32` (`.code16`).
    pub fn code(payload: Payload) -> Option<&'static [u8]> {
        Some(match payload {
            // mov $0,%ax; 1: out %ax,$0x10; inc %ax; jmp 1b
            Payload::PortCounter => &[0xb8, 0x00, 0x00, 0xe7, 0x10, 0x40, 0xeb, 0xfb],
            // mov $0x2000,%ax; mov %ax,%ds; xor %cx,%cx; 2: movb %cl,(0x4); inc %cx; jmp 2b
            Payload::MmioStoreLoop => &[
                0xb8, 0x00, 0x20, 0x8e, 0xd8, 0x31, 0xc9, 0x88, 0x0e, 0x04, 0x00, 0x41, 0xeb, 0xf9,
            ],
            // in $0x20,%al; out %al,$0x10; hlt
            Payload::UnclaimedPortThenHalt => &[0xe4, 0x20, 0xe6, 0x10, 0xf4],
            // mov $0x10,%dx; mov $0x1020,%di; mov $4,%cx; cld; rep insb
            // mov $0x1020,%si; mov $4,%cx; rep outsb; hlt
            Payload::StringInOutThenHalt => &[
                0xba, 0x10, 0x00, 0xbf, 0x20, 0x10, 0xb9, 0x04, 0x00, 0xfc, 0xf3, 0x6c, 0xbe, 0x20,
                0x10, 0xb9, 0x04, 0x00, 0xf3, 0x6e, 0xf4,
            ],
        })
    }

    /// 32-bit code for the PVH entry point.
    pub fn tiny_kernel(kernel: TinyKernel) -> Option<Vec<u8>> {
        let code: &[u8] = match kernel {
            // mov $0x34,%al (SLP_EN | SLP_TYP 5); mov $0x600,%dx; out %al,(%dx); hlt
            TinyKernel::PowerOff => &[0xb0, 0x34, 0x66, 0xba, 0x00, 0x06, 0xee, 0xf4],
            // mov $0xfe,%al; out %al,$0x64; hlt
            TinyKernel::Reset => &[0xb0, 0xfe, 0xe6, 0x64, 0xf4],
            // 1: jmp 1b
            TinyKernel::Spin => &[0xeb, 0xfe],
            // 1: out %al,$0x80; jmp 1b
            TinyKernel::PortLoop => &[0xe6, 0x80, 0xeb, 0xfc],
            // ud2 with no IDT
            TinyKernel::Crash => &[0x0f, 0x0b],
            // mov $0x3f8,%dx; mov $'x',%al; 1: out %al,(%dx); jmp 1b
            TinyKernel::SerialFlood => &[0x66, 0xba, 0xf8, 0x03, 0xb0, 0x78, 0xee, 0xeb, 0xfd],
            // mov $0x3f8,%edx
            // 1: incl 0x200000; mov 0x200000,%eax; out %al,(%dx)
            //    mov $0x4000,%ecx; 2: loop 2b; jmp 1b
            TinyKernel::Counter => &[
                0xba, 0xf8, 0x03, 0x00, 0x00, 0xff, 0x05, 0x00, 0x00, 0x20, 0x00, 0xa1, 0x00, 0x00,
                0x20, 0x00, 0xee, 0xb9, 0x00, 0x40, 0x00, 0x00, 0xe2, 0xfe, 0xeb, 0xeb,
            ],
            TinyKernel::MultibootCheck => {
                return Some(multiboot_elf32(MULTIBOOT_CHECK, 0x40_0000, 0))
            }
            TinyKernel::PciProbe => PCI_PROBE,
        };
        const LOAD: u32 = 0x100_0000;
        Some(elf_kernel(code, LOAD.into(), Some(LOAD)))
    }

    /// [`TinyKernel::PciProbe`]'s 32-bit code (flat, no paging), from:
    /// ```text
    ///     mov $0x200000,%esp
    ///     mov $0x80000000,%eax; call cf8_read; call emit    # 00:00.0
    ///     mov $0x80000800,%eax; call cf8_read; call emit    # 00:01.0
    ///     mov 0xe0008000,%eax; call emit                    # ECAM 00:01.0
    ///     mov 0xe0010000,%eax; call emit                    # ECAM 00:02.0
    ///     movl $0xc0000000,0xe0008010; movl $0,0xe0008014   # BAR0
    ///     movw $6,0xe0008004                                # memory, master
    ///     mov 0xe0008010,%eax; call emit
    ///     movzwl 0xc0000012,%eax; call emit                 # num_queues
    ///     movl $0xfee00000,0xc0004000; movl $0,0xc0004004   # MSI-X vector 0
    ///     movl $0x30,0xc0004008; movl $0,0xc000400c         # data, unmasked
    ///     mov 0xc0004008,%eax; call emit
    ///     movw $0,0xe0008004
    ///     movzwl 0xc0000012,%eax; call emit                 # decoding off
    ///     mov $0x10,%al; out %al,$0xf4; hlt
    /// cf8_read: mov $0xcf8,%dx; out %eax,(%dx); mov $0xcfc,%dx; in (%dx),%eax; ret
    /// emit: mov %eax,%esi; mov $8,%ecx; mov $0x3f8,%dx
    /// 1:  rol $4,%esi; mov %esi,%eax; and $0xf,%eax; add $0x30,%al
    ///     cmp $0x39,%al; jbe 2f; add $7,%al
    /// 2:  out %al,(%dx); loop 1b; mov $0xa,%al; out %al,(%dx); ret
    /// ```
    const PCI_PROBE: &[u8] = &[
        0xbc, 0x00, 0x00, 0x20, 0x00, 0xb8, 0x00, 0x00, 0x00, 0x80, 0xe8, 0xa7, 0x00, 0x00, 0x00,
        0xe8, 0xad, 0x00, 0x00, 0x00, 0xb8, 0x00, 0x08, 0x00, 0x80, 0xe8, 0x98, 0x00, 0x00, 0x00,
        0xe8, 0x9e, 0x00, 0x00, 0x00, 0xa1, 0x00, 0x80, 0x00, 0xe0, 0xe8, 0x94, 0x00, 0x00, 0x00,
        0xa1, 0x00, 0x00, 0x01, 0xe0, 0xe8, 0x8a, 0x00, 0x00, 0x00, 0xc7, 0x05, 0x10, 0x80, 0x00,
        0xe0, 0x00, 0x00, 0x00, 0xc0, 0xc7, 0x05, 0x14, 0x80, 0x00, 0xe0, 0x00, 0x00, 0x00, 0x00,
        0x66, 0xc7, 0x05, 0x04, 0x80, 0x00, 0xe0, 0x06, 0x00, 0xa1, 0x10, 0x80, 0x00, 0xe0, 0xe8,
        0x63, 0x00, 0x00, 0x00, 0x0f, 0xb7, 0x05, 0x12, 0x00, 0x00, 0xc0, 0xe8, 0x57, 0x00, 0x00,
        0x00, 0xc7, 0x05, 0x00, 0x40, 0x00, 0xc0, 0x00, 0x00, 0xe0, 0xfe, 0xc7, 0x05, 0x04, 0x40,
        0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0xc7, 0x05, 0x08, 0x40, 0x00, 0xc0, 0x30, 0x00, 0x00,
        0x00, 0xc7, 0x05, 0x0c, 0x40, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x00, 0xa1, 0x08, 0x40, 0x00,
        0xc0, 0xe8, 0x25, 0x00, 0x00, 0x00, 0x66, 0xc7, 0x05, 0x04, 0x80, 0x00, 0xe0, 0x00, 0x00,
        0x0f, 0xb7, 0x05, 0x12, 0x00, 0x00, 0xc0, 0xe8, 0x10, 0x00, 0x00, 0x00, 0xb0, 0x10, 0xe6,
        0xf4, 0xf4, 0x66, 0xba, 0xf8, 0x0c, 0xef, 0x66, 0xba, 0xfc, 0x0c, 0xed, 0xc3, 0x89, 0xc6,
        0xb9, 0x08, 0x00, 0x00, 0x00, 0x66, 0xba, 0xf8, 0x03, 0xc1, 0xc6, 0x04, 0x89, 0xf0, 0x83,
        0xe0, 0x0f, 0x04, 0x30, 0x3c, 0x39, 0x76, 0x02, 0x04, 0x07, 0xee, 0xe2, 0xed, 0xb0, 0x0a,
        0xee, 0xc3,
    ];

    /// [`TinyKernel::MultibootCheck`]'s 32-bit code: each check puts its
    /// number in DL and branches to the report on failure.
    const MULTIBOOT_CHECK: &[u8] = &[
        0xb2,
        0x01, // mov $1,%dl
        0x3d,
        0x02,
        0xb0,
        0xad,
        0x2b, // cmp $0x2badb002,%eax
        0x75,
        0x3d, // jne report
        0xb2,
        0x02,
        0x8b,
        0x0b, // mov $2,%dl; mov (%ebx),%ecx
        0x83,
        0xe1,
        0x4d,
        0x83,
        0xf9,
        0x4d, // and $0x4d,%ecx; cmp $0x4d,%ecx
        0x75,
        0x31, // jne report
        0xb2,
        0x03,
        0x81,
        0x7b,
        0x08,
        0x00,
        0xfc,
        0x00,
        0x00, // mov $3,%dl; cmpl $0xfc00,8(%ebx)
        0x75,
        0x26, // jne report
        0xb2,
        0x04,
        0x83,
        0x7b,
        0x14,
        0x01, // mov $4,%dl; cmpl $1,20(%ebx)
        0x75,
        0x1e, // jne report
        0xb2,
        0x05,
        0x8b,
        0x73,
        0x18,
        0x8b,
        0x36, // mov $5,%dl; mov 24(%ebx),%esi; mov (%esi),%esi
        0x81,
        0x3e,
        b'K',
        b'U',
        b'T',
        b'!', // cmpl $"KUT!",(%esi)
        0x75,
        0x0f, // jne report
        0xb2,
        0x06,
        0x8b,
        0x73,
        0x10, // mov $6,%dl; mov 16(%ebx),%esi
        0x81,
        0x3e,
        b'k',
        b'u',
        b't',
        b'=', // cmpl $"kut=",(%esi)
        0x75,
        0x02, // jne report
        0xb2,
        MULTIBOOT_ALL_GOOD, // mov $0x21,%dl
        0x88,
        0xd0,
        0xe6,
        0xf4,
        0xf4, // report: mov %dl,%al; out %al,$0xf4; hlt
    ];

    /// An i386 ELF32 executable with a multiboot header (flags 0) and one
    /// PT_LOAD of `code` plus `bss` zero bytes at `paddr`, entered there.
    pub fn multiboot_elf32(code: &[u8], paddr: u32, bss: u32) -> Vec<u8> {
        const EHDR: u32 = 52;
        const PHDR: u32 = 32;
        const CODE_OFFSET: u32 = EHDR + PHDR + 12;
        let mut elf = b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&3u16.to_le_bytes()); // EM_386
        for word in [1, paddr, EHDR, 0, 0] {
            elf.extend_from_slice(&word.to_le_bytes()); // version, entry, phoff, shoff, flags
        }
        for half in [EHDR as u16, PHDR as u16, 1, 40, 0, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        let size = code.len() as u32;
        for word in [
            1,
            CODE_OFFSET,
            paddr,
            paddr,
            size,
            size.wrapping_add(bss),
            5,
            16,
        ] {
            elf.extend_from_slice(&word.to_le_bytes()); // PT_LOAD
        }
        let magic = 0x1bad_b002u32;
        for word in [magic, 0, 0u32.wrapping_sub(magic)] {
            elf.extend_from_slice(&word.to_le_bytes()); // multiboot header
        }
        elf.extend_from_slice(code);
        elf
    }

    /// An ELF64 x86_64 executable with one PT_LOAD of `code` at `paddr`
    /// (entry there too) and, if `pvh_entry` is given, a PT_NOTE holding the
    /// Xen PHYS32_ENTRY note (type 18) for a 32-bit PVH entry.
    pub fn elf_kernel(code: &[u8], paddr: u64, pvh_entry: Option<u32>) -> Vec<u8> {
        let phnum: u16 = if pvh_entry.is_some() { 2 } else { 1 };
        let note_offset = 64 + 56 * u64::from(phnum);
        let note: Vec<u8> = match pvh_entry {
            Some(entry) => [4u32, 4, 18]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .chain(*b"Xen\0")
                .chain(entry.to_le_bytes())
                .collect(),
            None => vec![],
        };
        let code_offset = (note_offset + note.len() as u64).next_multiple_of(16);
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        for v in [paddr, 64, 0] {
            elf.extend_from_slice(&v.to_le_bytes()); // e_entry, e_phoff, e_shoff
        }
        elf.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 56, phnum, 64, 0, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        let mut phdr = |p_type: u32, offset: u64, addr: u64, size: u64| {
            elf.extend_from_slice(&p_type.to_le_bytes());
            elf.extend_from_slice(&5u32.to_le_bytes());
            for v in [offset, addr, addr, size, size, 16] {
                elf.extend_from_slice(&v.to_le_bytes());
            }
        };
        phdr(1, code_offset, paddr, code.len() as u64); // PT_LOAD
        if pvh_entry.is_some() {
            phdr(4, note_offset, 0, note.len() as u64); // PT_NOTE
        }
        elf.extend_from_slice(&note);
        elf.resize(code_offset as usize, 0);
        elf.extend_from_slice(code);
        elf
    }

    pub fn point_vcpu_at(vcpu: &VcpuFd, _vm: &VmFd, addr: u64) -> Result<()> {
        let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
        let mut regs = vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?;
        regs.rip = addr;
        regs.rflags = 2;
        vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use kvm_bindings::{kvm_vcpu_init, KVM_REG_ARM64, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64};

    use super::*;

    /// A64 code.
    pub fn code(payload: Payload) -> Option<&'static [u8]> {
        match payload {
            // movz x1,#0x4; movk x1,#0x2,lsl #16; mov w2,#0
            // 1: strb w2,[x1]; add w2,w2,#1; b 1b
            Payload::MmioStoreLoop => Some(&[
                0x81, 0x00, 0x80, 0xd2, 0x41, 0x00, 0xa0, 0xf2, 0x02, 0x00, 0x80, 0x52, 0x22, 0x00,
                0x00, 0x39, 0x42, 0x04, 0x00, 0x11, 0xfe, 0xff, 0xff, 0x17,
            ]),
            Payload::PortCounter
            | Payload::UnclaimedPortThenHalt
            | Payload::StringInOutThenHalt => None,
        }
    }

    /// Not yet: an arm64 Image payload would need a hand-made header.
    pub fn tiny_kernel(_kernel: TinyKernel) -> Option<Vec<u8>> {
        None
    }

    pub fn point_vcpu_at(vcpu: &VcpuFd, vm: &VmFd, addr: u64) -> Result<()> {
        let mut init = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut init)
            .map_err(kvm_err("KVM_ARM_PREFERRED_TARGET"))?;
        vcpu.vcpu_init(&init)
            .map_err(kvm_err("KVM_ARM_VCPU_INIT"))?;
        // The PC is core register 32 (regs.pc), in 32-bit units of offset.
        let pc = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | 64;
        vcpu.set_one_reg(pc, &u128::from(addr).to_le_bytes()[..8])
            .map_err(kvm_err("KVM_SET_ONE_REG(pc)"))?;
        Ok(())
    }
}
