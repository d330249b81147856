//! The aarch64 guest-physical memory map and the pure arithmetic around it:
//! RAM sizing to the host page size, the IPA width the VM needs (RAM, and
//! with PCI the 64-bit BAR window above it), the vCPU limit per GIC, and
//! where the initrd and device tree go in RAM.
//!
//! ```text
//!   0x0800_0000  GIC distributor            64 KiB
//!   0x0801_0000  GICv2 CPU interface        8 KiB (in a 64 KiB slot)
//!   0x0802_0000  GICv3 ITS                  128 KiB
//!     (GICv2)    GICv2m MSI frame           4 KiB (in a 64 KiB slot), SPIs 96..160
//!   0x0804_0000  GICv3 redistributors       128 KiB per vCPU, up to 0x0900_0000
//!   0x0900_0000  16550 UART                 4 KiB, SPI 1
//!   0x0901_0000  PL031 RTC                  4 KiB, SPI 2
//!   0x0a00_0000  virtio-mmio window         32 MiB, SPIs 8..96
//!   0x0c00_0000  PCI ECAM (bus 0)           1 MiB; INTx on SPIs 4..8
//!   0x1000_0000  PCI 32-bit BAR window      512 MiB
//!   0x8000_0000  RAM                        kernel at the start, initrd and
//!                                           device tree at the end
//!   (1 GiB aligned above RAM) PCI 64-bit BAR window, 4 GiB
//! ```
//! Every MMIO slot is 64 KiB aligned so the map holds for 64 KiB host pages.

use std::ops::Range;

use fdt::Region;
use vm_memory::GuestAddress;

use crate::{Error, MemoryLayout, PciLayout, Result};

/// GIC distributor (GICv3 size; GICv2 uses the first 4 KiB).
pub const GIC_DIST: Region = Region::new(0x0800_0000, 0x1_0000);
/// GICv2 CPU interface (KVM_VGIC_V2_CPU_SIZE).
pub const GICV2_CPU: Region = Region::new(0x0801_0000, 0x2000);
/// GICv2 distributor size (KVM_VGIC_V2_DIST_SIZE).
pub const GICV2_DIST_SIZE: u64 = 0x1000;
/// GICv3 interrupt translation service (KVM_VGIC_V3_ITS_SIZE).
pub const GIC_ITS: Region = Region::new(0x0802_0000, 0x2_0000);
/// The emulated GICv2m MSI frame: a GICv2 has no ITS, so its slot is free.
/// 4 KiB of registers; the rest of the 64 KiB slot stays unmapped.
pub const GIC_V2M: Region = Region::new(GIC_ITS.base, 0x1000);
/// First GICv3 redistributor; one frame pair per vCPU follows.
pub const GIC_REDIST_BASE: u64 = 0x0804_0000;
/// One vCPU's redistributor (RD_base + SGI_base frames).
pub const GIC_REDIST_SIZE: u64 = 0x2_0000;
/// The console UART.
pub const SERIAL: Region = Region::new(0x0900_0000, 0x1000);
/// The PL031 real-time clock.
pub const RTC: Region = Region::new(0x0901_0000, 0x1000);
/// Where virtio-mmio transports go.
pub const VIRTIO_MMIO: Range<u64> = 0x0a00_0000..0x0c00_0000;
/// SPI of the UART (its KVM irqfd GSI).
pub const SERIAL_SPI: u32 = 1;
/// SPI of the RTC.
pub const RTC_SPI: u32 = 2;
/// SPIs handed to virtio devices.
pub const DEVICE_SPIS: Range<u32> = 8..96;
/// The PCI host bridge's ECAM window, bus 0 only.
pub const PCI_ECAM: Range<u64> = 0x0c00_0000..0x0c10_0000;
/// Where 32-bit memory BARs go, below RAM.
pub const PCI_MMIO32: Range<u64> = 0x1000_0000..0x3000_0000;
/// SPIs of PCI INTA-INTD (after the swizzle).
pub const PCI_INTX_SPIS: [u32; 4] = [4, 5, 6, 7];
/// Size of the 64-bit BAR window, placed 1 GiB aligned above RAM.
pub const PCI_MMIO64_SIZE: u64 = 4 << 30;
/// SPIs the GICv2m frame's MSIs set: 64, after the virtio SPIs (one
/// per MSI-X vector, so a few virtio-pci devices with a vector per queue).
pub const V2M_SPIS: Range<u32> = DEVICE_SPIS.end..DEVICE_SPIS.end + 64;
/// Interrupt lines the VGIC is sized for: 32 private ones, then the SPIs.
pub const VGIC_NR_IRQS: u32 = 32 + DEVICE_SPIS.end;
/// The same on a GICv2 with a v2m frame, whose SPIs come last.
pub const VGIC_NR_IRQS_V2M: u32 = 32 + V2M_SPIS.end;
/// Start of RAM: 2 GiB, above every device.
pub const RAM_BASE: u64 = 0x8000_0000;
/// Smallest RAM a guest may have.
pub const MIN_RAM: u64 = 64 << 20;
/// Largest device tree and the block it must not cross (arm64 booting.rst).
pub const FDT_MAX_SIZE: u64 = 2 << 20;
/// The initrd must lie in a 1 GiB aligned window of at most 32 GiB that also
/// holds the kernel (arm64 booting.rst); the kernel is at RAM_BASE.
const INITRD_WINDOW_END: u64 = RAM_BASE + (32 << 30);
/// IPA width KVM uses when the VM type does not name one.
pub const DEFAULT_IPA_BITS: u32 = 40;
/// Smallest IPA width KVM accepts.
const MIN_IPA_BITS: u32 = 32;

/// Most vCPUs whose GICv3 redistributors fit below the UART.
pub const GICV3_MAX_VCPUS: usize = ((SERIAL.base - GIC_REDIST_BASE) / GIC_REDIST_SIZE) as usize;

// The slots of the map do not overlap and all sit below RAM.
const _: () = {
    assert!(GIC_DIST.base + GIC_DIST.size <= GICV2_CPU.base);
    assert!(GICV2_CPU.base + GICV2_CPU.size <= GIC_ITS.base);
    assert!(GIC_ITS.base + GIC_ITS.size <= GIC_REDIST_BASE);
    assert!(GIC_V2M.base == GIC_ITS.base && GIC_V2M.size <= GIC_ITS.size);
    assert!(SERIAL.base + SERIAL.size <= RTC.base);
    assert!(RTC.base + RTC.size <= VIRTIO_MMIO.start);
    assert!(VIRTIO_MMIO.end <= RAM_BASE);
    assert!(SERIAL_SPI < DEVICE_SPIS.start && RTC_SPI < DEVICE_SPIS.start);
    assert!(PCI_INTX_SPIS[3] < SERIAL_SPI || PCI_INTX_SPIS[0] > RTC_SPI);
    assert!(PCI_INTX_SPIS[3] < DEVICE_SPIS.start && DEVICE_SPIS.end <= V2M_SPIS.start);
    // KVM sizes the VGIC in multiples of 32 interrupts, and a GICv2 has
    // at most 1020 interrupt IDs (1020-1023 are special).
    assert!(VGIC_NR_IRQS & 31 == 0 && VGIC_NR_IRQS_V2M & 31 == 0);
    assert!(VGIC_NR_IRQS_V2M <= 1020);
};

/// Interrupt IDs the VGIC gets: room for the v2m frame's SPIs only when
/// the VM has the frame, so every other VM's VGIC stays as it was.
pub fn vgic_nr_irqs(has_v2m: bool) -> u32 {
    if has_v2m {
        VGIC_NR_IRQS_V2M
    } else {
        VGIC_NR_IRQS
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

/// Rounds `value` down to a multiple of `align` (a power of two).
pub fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}

/// The memory map for `memory_size` bytes of RAM on a host with
/// `page_size` pages: RAM rounded up to whole pages.
pub fn memory_layout(memory_size: u64, page_size: u64) -> Result<MemoryLayout> {
    if !page_size.is_power_of_two() || page_size < 4096 {
        return Err(Error::Config(format!(
            "host page size {page_size} is not a power of two of at least 4096"
        )));
    }
    if memory_size < MIN_RAM {
        return Err(Error::Config(format!(
            "memory {} MiB is below the aarch64 minimum of {} MiB",
            memory_size >> 20,
            MIN_RAM >> 20
        )));
    }
    let size = align_up(memory_size, page_size)
        .filter(|size| RAM_BASE.checked_add(*size).is_some())
        .ok_or_else(|| Error::Config(format!("memory size {memory_size:#x} is too large")))?;
    let mmio64_start = (RAM_BASE + size).next_multiple_of(1 << 30);
    Ok(MemoryLayout {
        ram: vec![(GuestAddress(RAM_BASE), size)],
        device_mmio: VIRTIO_MMIO,
        device_irqs: DEVICE_SPIS,
        pci: PciLayout {
            ecam: PCI_ECAM,
            mmio32: PCI_MMIO32,
            mmio64: mmio64_start..mmio64_start + PCI_MMIO64_SIZE,
            intx_irqs: PCI_INTX_SPIS,
        },
    })
}

/// IPA bits needed to address everything below `end` (exclusive).
pub fn ipa_bits_needed(end: u64) -> u32 {
    let bits = u64::BITS - end.saturating_sub(1).leading_zeros();
    bits.max(MIN_IPA_BITS)
}

/// The highest thing in a VM's guest-physical map, which sets the IPA
/// width it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpaTop {
    /// RAM, ending here (exclusive): a VM without PCI.
    Ram(u64),
    /// The PCI 64-bit BAR window, above RAM: a guest may place a BAR at
    /// its last byte, so the VM must be able to map it.
    PciWindow(Range<u64>),
}

impl IpaTop {
    /// The top of `layout`'s map, with or without its PCI windows.
    pub fn of(layout: &MemoryLayout, pci: bool) -> Self {
        let ram_end = layout
            .ram
            .iter()
            .map(|(start, size)| start.0 + size)
            .max()
            .unwrap_or(RAM_BASE);
        if pci && layout.pci.mmio64.end > ram_end {
            Self::PciWindow(layout.pci.mmio64.clone())
        } else {
            Self::Ram(ram_end)
        }
    }

    /// IPA bits needed to reach it.
    pub fn bits(&self) -> u32 {
        match self {
            Self::Ram(end) => ipa_bits_needed(*end),
            Self::PciWindow(window) => ipa_bits_needed(window.end),
        }
    }
}

/// The KVM_CREATE_VM type for a VM whose map reaches `top`, given the
/// host's KVM_CAP_ARM_VM_IPA_SIZE (`host_limit`, 0 when the capability is
/// missing and the width is fixed at 40 bits).
pub fn vm_type_for_ipa(top: &IpaTop, host_limit: i32) -> Result<u64> {
    let needed_bits = top.bits();
    let (limit, vm_type) = match u32::try_from(host_limit) {
        Ok(0) | Err(_) => (DEFAULT_IPA_BITS, 0),
        Ok(limit) => (limit, u64::from(needed_bits)),
    };
    if needed_bits > limit {
        let (what, fix) = match top {
            IpaTop::Ram(_) => ("guest memory".to_owned(), "use less memory"),
            IpaTop::PciWindow(w) => (
                format!("the PCI 64-bit BAR window {:#x}..{:#x}", w.start, w.end),
                "use less memory (the window sits above RAM) or no PCI",
            ),
        };
        return Err(Error::Config(format!(
            "{what} ends above the host's {limit}-bit guest physical address \
             space ({needed_bits} bits needed): {fix}"
        )));
    }
    Ok(vm_type)
}

/// Checks `vcpus` against KVM's limit and the GIC's.
pub fn check_vcpus(vcpus: u8, gic_limit: usize, kvm_max: usize, gic_name: &str) -> Result<()> {
    let limit = gic_limit.min(kvm_max);
    if vcpus == 0 || usize::from(vcpus) > limit {
        return Err(Error::Config(format!(
            "{vcpus} vCPUs requested; this host allows 1..={limit} with {gic_name} \
             (KVM max {kvm_max}, {gic_name} max {gic_limit})"
        )));
    }
    Ok(())
}

/// Where boot data lands in RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPlacement {
    /// Device tree address: 2 MiB aligned, the last such block of RAM.
    pub fdt: u64,
    /// Initrd range, page aligned, just below the device tree.
    pub initrd: Option<Region>,
}

/// Places the device tree at the top 2 MiB block of `ram` and the initrd
/// (if `initrd_size` is given) below it, above `kernel_end`.
pub fn place_boot_data(
    ram: Region,
    kernel_end: u64,
    initrd_size: Option<u64>,
    page_size: u64,
) -> Result<BootPlacement> {
    let ram_end = ram.base + ram.size;
    let fdt = align_down(ram_end.saturating_sub(FDT_MAX_SIZE), FDT_MAX_SIZE);
    let no_room = |what: &str| {
        Error::Config(format!(
            "{what} does not fit in {} MiB of RAM after the kernel: give the VM more memory",
            ram.size >> 20
        ))
    };
    if fdt < align_up(kernel_end, page_size).unwrap_or(u64::MAX) {
        return Err(no_room("the device tree"));
    }
    let initrd = match initrd_size {
        None => None,
        Some(size) => {
            let top = fdt.min(INITRD_WINDOW_END);
            let base = top
                .checked_sub(size)
                .map(|b| align_down(b, page_size))
                .filter(|&b| b >= kernel_end)
                .ok_or_else(|| no_room("the initrd"))?;
            Some(Region::new(base, size))
        }
    };
    Ok(BootPlacement { fdt, initrd })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE_SIZES: [u64; 3] = [4 << 10, 16 << 10, 64 << 10];

    #[test]
    fn ram_is_rounded_up_to_every_host_page_size() {
        for page in PAGE_SIZES {
            let layout = memory_layout((128 << 20) + 1, page).unwrap();
            let (start, size) = layout.ram[0];
            assert_eq!(start, GuestAddress(RAM_BASE));
            assert_eq!(size, (128 << 20) + page, "page size {page}");
            assert_eq!(start.0 % page, 0);
            let exact = memory_layout(256 << 20, page).unwrap();
            assert_eq!(exact.ram[0].1, 256 << 20);
        }
    }

    #[test]
    fn mmio_slots_are_64k_aligned_and_redistributors_fill_their_window() {
        let slots = [GIC_DIST.base, GICV2_CPU.base, GIC_ITS.base, GIC_REDIST_BASE];
        let slots = slots
            .into_iter()
            .chain([SERIAL.base, RTC.base, VIRTIO_MMIO.start]);
        for base in slots.chain([VIRTIO_MMIO.end, RAM_BASE]) {
            assert_eq!(base % (64 << 10), 0, "{base:#x}");
        }
        let redist_end = GIC_REDIST_BASE + GICV3_MAX_VCPUS as u64 * GIC_REDIST_SIZE;
        assert!(redist_end <= SERIAL.base);
        assert!(
            redist_end + GIC_REDIST_SIZE > SERIAL.base,
            "limit uses the whole window"
        );
    }

    #[test]
    fn bad_memory_sizes_and_page_sizes_are_refused() {
        assert!(memory_layout(MIN_RAM - 1, 4096).is_err());
        assert!(memory_layout(u64::MAX - 4096, 4096).is_err());
        assert!(memory_layout(u64::MAX, 4096).is_err());
        assert!(memory_layout(MIN_RAM, 3000).is_err());
        assert!(memory_layout(MIN_RAM, 0).is_err());
        assert!(memory_layout(MIN_RAM, 4096).is_ok());
    }

    #[test]
    fn ipa_bits_cover_the_end_of_ram() {
        assert_eq!(ipa_bits_needed(RAM_BASE + (64 << 20)), 32);
        assert_eq!(ipa_bits_needed(1 << 32), 32);
        assert_eq!(ipa_bits_needed((1 << 32) + 1), 33);
        assert_eq!(ipa_bits_needed(RAM_BASE + (4 << 30)), 33);
        assert_eq!(ipa_bits_needed(1 << 40), 40);
        assert_eq!(ipa_bits_needed((1 << 40) + 4096), 41);
        assert_eq!(ipa_bits_needed(u64::MAX), 64);
    }

    #[test]
    fn ipa_limit_check_picks_the_vm_type() {
        let ram = |bits: u32| IpaTop::Ram(1 << bits);
        // Capability present: ask for exactly what is needed.
        assert_eq!(vm_type_for_ipa(&ram(33), 44).unwrap(), 33);
        assert_eq!(vm_type_for_ipa(&ram(44), 44).unwrap(), 44);
        let err = vm_type_for_ipa(&ram(45), 44).unwrap_err().to_string();
        assert!(err.contains("44-bit") && err.contains("45 bits"), "{err}");
        assert!(err.starts_with("guest memory ends above"), "{err}");
        // Capability absent: default type, fixed 40 bits.
        assert_eq!(vm_type_for_ipa(&ram(32), 0).unwrap(), 0);
        assert_eq!(vm_type_for_ipa(&ram(40), 0).unwrap(), 0);
        assert!(vm_type_for_ipa(&ram(41), 0)
            .unwrap_err()
            .to_string()
            .contains("40-bit"));
    }

    #[test]
    fn without_pci_the_ipa_covers_ram_only_as_before() {
        let layout = memory_layout(1 << 30, 4096).unwrap();
        let top = IpaTop::of(&layout, false);
        assert_eq!(top, IpaTop::Ram(RAM_BASE + (1 << 30)));
        assert_eq!(top.bits(), 32);
        assert_eq!(vm_type_for_ipa(&top, 44).unwrap(), 32);
    }

    #[test]
    fn with_pci_the_ipa_covers_the_64_bit_window_above_ram() {
        // 1 GiB of RAM ends at 3 GiB (32 bits); the window is 3..7 GiB.
        let layout = memory_layout(1 << 30, 4096).unwrap();
        assert_eq!(layout.pci.mmio64, (3 << 30)..(7 << 30));
        let top = IpaTop::of(&layout, true);
        assert_eq!(top, IpaTop::PciWindow(layout.pci.mmio64.clone()));
        assert_eq!(top.bits(), 33);
        assert_eq!(vm_type_for_ipa(&top, 44).unwrap(), 33);
        // 1 TiB - 2 GiB of RAM fills 40 bits; the window needs 41.
        let big = memory_layout((1 << 40) - RAM_BASE, 4096).unwrap();
        assert_eq!(IpaTop::of(&big, false).bits(), 40);
        assert_eq!(vm_type_for_ipa(&IpaTop::of(&big, false), 0).unwrap(), 0);
        let err = vm_type_for_ipa(&IpaTop::of(&big, true), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PCI 64-bit BAR window 0x10000000000..0x10100000000")
                && err.contains("40-bit")
                && err.contains("41 bits needed"),
            "{err}"
        );
        assert!(vm_type_for_ipa(&IpaTop::of(&big, true), 41).is_ok());
    }

    #[test]
    fn vcpu_limits_follow_the_gic_and_kvm() {
        assert!(check_vcpus(8, fdt::GICV2_MAX_CPUS, 512, "GICv2").is_ok());
        let err = check_vcpus(9, fdt::GICV2_MAX_CPUS, 512, "GICv2").unwrap_err();
        assert!(err.to_string().contains("1..=8"), "{err}");
        assert!(check_vcpus(0, GICV3_MAX_VCPUS, 512, "GICv3").is_err());
        assert!(check_vcpus(4, GICV3_MAX_VCPUS, 2, "GICv3").is_err());
        assert!(check_vcpus(126, GICV3_MAX_VCPUS, 512, "GICv3").is_ok());
        assert!(check_vcpus(127, GICV3_MAX_VCPUS, 512, "GICv3").is_err());
    }

    #[test]
    fn fdt_sits_in_the_last_2m_block_and_initrd_below_it() {
        for page in PAGE_SIZES {
            let ram = Region::new(RAM_BASE, (256 << 20) + page);
            let kernel_end = RAM_BASE + (40 << 20);
            let placed = place_boot_data(ram, kernel_end, Some(5_000_001), page).unwrap();
            assert_eq!(placed.fdt % FDT_MAX_SIZE, 0);
            assert!(placed.fdt + FDT_MAX_SIZE <= ram.base + ram.size);
            assert!(placed.fdt + FDT_MAX_SIZE > ram.base + ram.size - FDT_MAX_SIZE);
            let initrd = placed.initrd.unwrap();
            assert_eq!(initrd.base % page, 0);
            assert_eq!(initrd.size, 5_000_001);
            assert!(initrd.base >= kernel_end);
            assert!(initrd.base + initrd.size <= placed.fdt);
            assert_eq!(
                place_boot_data(ram, kernel_end, None, page).unwrap().initrd,
                None
            );
        }
    }

    #[test]
    fn initrd_stays_within_32g_of_the_kernel_on_big_guests() {
        let ram = Region::new(RAM_BASE, 64 << 30);
        let placed = place_boot_data(ram, RAM_BASE + (64 << 20), Some(1 << 20), 4096).unwrap();
        assert_eq!(placed.fdt, RAM_BASE + (64 << 30) - FDT_MAX_SIZE);
        let initrd = placed.initrd.unwrap();
        assert!(initrd.base + initrd.size <= RAM_BASE + (32 << 30));
    }

    #[test]
    fn boot_data_that_does_not_fit_is_an_error() {
        let ram = Region::new(RAM_BASE, 64 << 20);
        let err = place_boot_data(ram, RAM_BASE + (60 << 20), Some(3 << 20), 4096).unwrap_err();
        assert!(err.to_string().contains("initrd does not fit"), "{err}");
        let err = place_boot_data(ram, RAM_BASE + (63 << 20), None, 4096).unwrap_err();
        assert!(
            err.to_string().contains("device tree does not fit"),
            "{err}"
        );
        assert!(place_boot_data(ram, RAM_BASE + (60 << 20), Some(2 << 20), 4096).is_ok());
    }
}
