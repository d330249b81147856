//! The x86_64 guest-physical memory map: where RAM, the 32-bit MMIO hole,
//! the boot structures and the ACPI tables live, the e820 map Linux gets,
//! and the memory-size checks behind it.
//!
//! ```text
//! 0x0000_0500  GDT, then the (empty) IDT
//! 0x0000_6000  PVH hvm_start_info, module list, memory map
//! 0x0000_7000  boot_params (the "zero page"), or the multiboot
//!              information and its tables
//! 0x0000_8ff0  boot stack top (64-bit entry)
//! 0x0000_9000  page tables: PML4, PDPT, 4 page directories (to 0xf000)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA (reserved)          ─┐ not RAM in e820
//! 0x000e_0000  RSDP, then ACPI tables    │ (0xa0000..0xe0000 unreported)
//! 0x000f_fff0  reset-vector stub         │
//! 0x0010_0000  kernel load area and RAM ─┘
//! 0xc000_0000  32-bit hole: PCI 32-bit BAR window to 0xd000_0000,
//!              virtio-mmio window 0xd000_0000..0xe000_0000, PCI ECAM
//!              (bus 0) 0xe000_0000..0xe010_0000,
//!              identity map page 0xfffb_c000, TSS 0xfffb_d000,
//!              IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
//! 0x1_0000_0000  RAM beyond the first 3 GiB, then (1 GiB aligned) the
//!                PCI 64-bit BAR window, 4 GiB
//! ```

use std::ops::Range;

use vm_memory::GuestAddress;

use crate::{Error, MemoryLayout, PciLayout, Result};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Guest page size: RAM regions are multiples of it.
pub const PAGE_SIZE: u64 = 4096;
/// Smallest guest a Linux kernel boots in.
pub const MIN_MEMORY: u64 = 64 * MIB;
/// Largest guest tandem accepts, whatever the host has.
pub const MAX_MEMORY: u64 = 1 << 40;
/// Where the 32-bit MMIO hole starts: RAM below it, devices inside it.
pub const MMIO_HOLE_START: u64 = 3 * GIB;
/// Where RAM resumes above the hole.
pub const HIGH_RAM_START: u64 = 4 * GIB;

/// GDT (a handful of 8-byte descriptors).
pub const GDT_ADDR: u64 = 0x500;
/// The empty IDT loaded at entry.
pub const IDT_ADDR: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// PVH module list (the initrd).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
/// PVH memory map (room for 128 entries before the zero page).
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// Linux `boot_params` for the 64-bit boot protocol.
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Multiboot information, where the zero page would be (one boot protocol
/// per boot); its module list, strings and memory map follow within the
/// page.
pub const MULTIBOOT_INFO_ADDR: u64 = ZERO_PAGE_ADDR;
/// Initial stack pointer for the 64-bit entry.
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
/// Top-level page table; the PDPT and page directories follow it.
pub const PML4_ADDR: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Start of the extended BIOS data area, the end of low RAM.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of the conventional-memory EBDA.
pub const EBDA_END: u64 = 0xa_0000;
/// The RSDP, followed by the other ACPI tables, in the BIOS area where
/// Linux would also look for it.
pub const ACPI_START: u64 = 0xe_0000;
/// End of the BIOS area: RAM resumes here and kernels load here.
pub const HIMEM_START: u64 = 0x10_0000;

/// The IOAPIC's MMIO registers.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// The local APICs' MMIO registers.
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Three pages KVM needs for the real-mode TSS on Intel hosts.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
/// One page KVM needs for the real-mode identity map on Intel hosts.
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;
/// Addresses free for virtio-mmio transports.
pub const DEVICE_MMIO: Range<u64> = 0xd000_0000..0xe000_0000;
/// IOAPIC pins free for devices (0-4 are the PIT, keyboard, cascade and
/// COM ports; 20-23 are PCI's INTx lines; the IOAPIC has 24).
pub const DEVICE_IRQS: Range<u32> = 5..20;
/// The PCI host bridge's ECAM window, bus 0 only.
pub const PCI_ECAM: Range<u64> = 0xe000_0000..0xe010_0000;
/// Where 32-bit memory BARs go: the hole below the virtio-mmio window.
pub const PCI_MMIO32: Range<u64> = MMIO_HOLE_START..DEVICE_MMIO.start;
/// IOAPIC pins of PCI INTA-INTD (after the swizzle).
pub const PCI_INTX_IRQS: [u32; 4] = [20, 21, 22, 23];
/// Size of the 64-bit BAR window, placed 1 GiB aligned above RAM.
pub const PCI_MMIO64_SIZE: u64 = 4 * GIB;

// The device window and the pages KVM and the APICs claim all sit in the
// hole, apart from each other.
const _: () = {
    assert!(DEVICE_MMIO.start >= MMIO_HOLE_START && DEVICE_MMIO.end <= PCI_ECAM.start);
    assert!(PCI_ECAM.end <= IOAPIC_ADDR);
    assert!(IOAPIC_ADDR < LAPIC_ADDR && LAPIC_ADDR < KVM_IDENTITY_MAP_ADDR);
    assert!(KVM_IDENTITY_MAP_ADDR + PAGE_SIZE <= KVM_TSS_ADDR);
    assert!(KVM_TSS_ADDR + 3 * PAGE_SIZE <= HIGH_RAM_START);
};

/// An e820 memory type, as Linux numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: firmware areas the guest must not use as RAM.
    Reserved = 2,
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Kind,
}

/// Checks a requested guest memory size: at least [`MIN_MEMORY`], whole
/// pages, and no more than [`MAX_MEMORY`] or `host_limit` (host RAM plus
/// swap).
pub fn validate_memory_size(size: u64, host_limit: u64) -> Result<()> {
    if size < MIN_MEMORY {
        return Err(Error::Config(format!(
            "guest memory of {size} bytes is too small: x86_64 guests need at least {} MiB",
            MIN_MEMORY / MIB
        )));
    }
    if !size.is_multiple_of(PAGE_SIZE) {
        return Err(Error::Config(format!(
            "guest memory of {size} bytes is not a multiple of the {PAGE_SIZE}-byte page size"
        )));
    }
    let limit = MAX_MEMORY.min(host_limit);
    if size > limit {
        return Err(Error::Config(format!(
            "guest memory of {} MiB is more than this host allows ({} MiB: the lower of 1 TiB \
             and host RAM plus swap)",
            size / MIB,
            limit / MIB
        )));
    }
    Ok(())
}

/// Guest RAM regions for `size` bytes: up to 3 GiB from address 0, the
/// rest from 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, u64)> {
    let low = size.min(MMIO_HOLE_START);
    let mut regions = vec![(GuestAddress(0), low)];
    if size > low {
        regions.push((GuestAddress(HIGH_RAM_START), size - low));
    }
    regions
}

/// The layout the core maps for `size` bytes of RAM.
pub fn memory_layout(size: u64) -> MemoryLayout {
    let ram = ram_regions(size);
    let ram_end = ram.last().map_or(0, |(start, len)| start.0 + len);
    let mmio64_start = ram_end.max(HIGH_RAM_START).next_multiple_of(GIB);
    MemoryLayout {
        ram,
        device_mmio: DEVICE_MMIO,
        device_irqs: DEVICE_IRQS,
        pci: PciLayout {
            ecam: PCI_ECAM,
            mmio32: PCI_MMIO32,
            mmio64: mmio64_start..mmio64_start + PCI_MMIO64_SIZE,
            intx_irqs: PCI_INTX_IRQS,
        },
    }
}

/// End of the RAM below the hole: the ceiling for anything that must stay
/// under 4 GiB (initrd, boot structures).
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_HOLE_START)
}

/// The e820 map for `size` bytes of RAM, sorted and non-overlapping. The
/// VGA/option-ROM range 0xa0000..0xe0000 is left out entirely, as on PCs.
///
/// `pci_ecam`, the host bridge's ECAM window when the VM has one (it lies
/// in the 32-bit hole), is listed as reserved: Linux uses an MCFG window
/// only once firmware has reserved it, and before ACPI is up (the early
/// MMCONFIG probe) e820 is the reservation it checks.
pub fn e820_map(size: u64, pci_ecam: Option<Range<u64>>) -> Vec<E820Entry> {
    let entry = |addr, end: u64, kind| E820Entry {
        addr,
        size: end - addr,
        kind,
    };
    let mut map = vec![
        entry(0, EBDA_START, E820Kind::Ram),
        entry(EBDA_START, EBDA_END, E820Kind::Reserved),
        entry(ACPI_START, HIMEM_START, E820Kind::Reserved),
        entry(HIMEM_START, low_ram_end(size), E820Kind::Ram),
    ];
    if size > MMIO_HOLE_START {
        map.push(entry(
            HIGH_RAM_START,
            HIGH_RAM_START + size - MMIO_HOLE_START,
            E820Kind::Ram,
        ));
    }
    if let Some(ecam) = pci_ecam {
        debug_assert!(
            ecam.start >= MMIO_HOLE_START && ecam.end <= HIGH_RAM_START,
            "ECAM {ecam:x?} outside the 32-bit hole"
        );
        map.push(entry(ecam.start, ecam.end, E820Kind::Reserved));
        map.sort_by_key(|e| e.addr);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum()
    }

    /// Checks the map for `size` bytes, without PCI and with the ECAM
    /// window reserved, and returns the one without.
    fn check_map(size: u64) -> Vec<E820Entry> {
        let plain = e820_map(size, None);
        let with_pci = e820_map(size, Some(PCI_ECAM));
        check_entries(size, &plain);
        check_entries(size, &with_pci);
        let in_hole = |map: &[E820Entry]| -> Vec<E820Entry> {
            map.iter()
                .filter(|e| e.addr >= MMIO_HOLE_START && e.addr < HIGH_RAM_START)
                .copied()
                .collect()
        };
        assert_eq!(in_hole(&plain), [], "{size:#x}: nothing in the hole");
        assert_eq!(
            in_hole(&with_pci),
            [E820Entry {
                addr: PCI_ECAM.start,
                size: PCI_ECAM.end - PCI_ECAM.start,
                kind: E820Kind::Reserved
            }],
            "{size:#x}: only the ECAM window in the hole"
        );
        let mut without_ecam = with_pci.clone();
        without_ecam.retain(|e| e.addr != PCI_ECAM.start);
        assert_eq!(without_ecam, plain, "{size:#x}: the rest unchanged");
        plain
    }

    fn check_entries(size: u64, map: &[E820Entry]) {
        for pair in map.windows(2) {
            assert!(
                pair[0].addr + pair[0].size <= pair[1].addr,
                "{size:#x}: {pair:?} unsorted or overlapping"
            );
        }
        for e in map {
            assert!(e.size > 0, "{size:#x}: empty entry {e:?}");
            let end = e.addr + e.size;
            assert!(
                e.kind != E820Kind::Ram || end <= MMIO_HOLE_START || e.addr >= HIGH_RAM_START,
                "{size:#x}: {e:?} reaches into the MMIO hole"
            );
        }
        // Everything but the firmware areas below 1 MiB is RAM.
        assert_eq!(
            ram_total(map),
            size - (HIMEM_START - EBDA_START),
            "{size:#x}"
        );
        // And every RAM byte is backed by a region the core maps.
        let regions = ram_regions(size);
        assert_eq!(regions.iter().map(|r| r.1).sum::<u64>(), size);
        for e in map.iter().filter(|e| e.kind == E820Kind::Ram) {
            assert!(
                regions
                    .iter()
                    .any(|&(start, len)| start.0 <= e.addr && e.addr + e.size <= start.0 + len),
                "{size:#x}: {e:?} not backed by RAM"
            );
        }
    }

    #[test]
    fn e820_small_guest_has_no_high_ram() {
        let map = check_map(128 * MIB);
        assert_eq!(map.len(), 4);
        assert_eq!(map[3].addr + map[3].size, 128 * MIB);
        assert_eq!(ram_regions(128 * MIB), vec![(GuestAddress(0), 128 * MIB)]);
    }

    #[test]
    fn e820_large_guest_splits_around_the_hole() {
        let size = 5 * GIB;
        let map = check_map(size);
        assert_eq!(map[3].addr + map[3].size, MMIO_HOLE_START);
        assert_eq!(
            map[4],
            E820Entry {
                addr: HIGH_RAM_START,
                size: 2 * GIB,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(
            ram_regions(size),
            vec![
                (GuestAddress(0), 3 * GIB),
                (GuestAddress(HIGH_RAM_START), 2 * GIB)
            ]
        );
    }

    #[test]
    fn e820_odd_sizes() {
        for size in [
            MIN_MEMORY,
            MIN_MEMORY + PAGE_SIZE,
            3 * GIB,
            3 * GIB + PAGE_SIZE,
            3 * GIB - PAGE_SIZE,
            7 * GIB + 3 * MIB + 5 * PAGE_SIZE,
        ] {
            check_map(size);
        }
        assert_eq!(
            e820_map(3 * GIB, None).len(),
            4,
            "exactly 3 GiB needs no high RAM"
        );
    }

    #[test]
    fn memory_size_validation() {
        let host = 16 * GIB;
        assert!(validate_memory_size(512 * MIB, host).is_ok());
        assert!(validate_memory_size(MIN_MEMORY, host).is_ok());
        let err = validate_memory_size(32 * MIB, host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 64 MiB"), "{err}");
        let err = validate_memory_size(MIN_MEMORY + 1, host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("page size"), "{err}");
        let err = validate_memory_size(32 * GIB, host)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than this host allows"), "{err}");
        let err = validate_memory_size(2 << 40, u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1048576 MiB"), "1 TiB cap: {err}");
        assert!(validate_memory_size(!(PAGE_SIZE - 1), u64::MAX).is_err());
    }
}
