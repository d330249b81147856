//! Writes the nodes of a validated [`MachineDescription`] with `vm-fdt`,
//! following the Linux device tree bindings of each device.

use vm_fdt::FdtWriter;

use crate::{
    Chosen, DeviceKind, FdtDevice, Gic, MachineDescription, PciHost, PsciMethod, Region, Result,
    V2mFrame,
};

/// phandles of the nodes others point at.
pub(crate) const GIC_PHANDLE: u32 = 1;
pub(crate) const ITS_PHANDLE: u32 = 2;
pub(crate) const APB_PCLK_PHANDLE: u32 = 3;
pub(crate) const V2M_PHANDLE: u32 = 4;

/// First cell of a GIC interrupt specifier.
pub(crate) const GIC_SPI: u32 = 0;
pub(crate) const GIC_PPI: u32 = 1;
/// Third cell: trigger type (include/dt-bindings/interrupt-controller/irq.h).
pub(crate) const IRQ_TYPE_EDGE_RISING: u32 = 1;
pub(crate) const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// GICv2 PPIs carry a mask of the CPUs they reach in bits 8..16.
const GICV2_PPI_CPU_MASK_SHIFT: u32 = 8;

pub(crate) fn write(m: &MachineDescription) -> Result<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "tandem")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    write_chosen(&mut fdt, &m.chosen, &m.devices)?;
    for region in &m.memory {
        let node = fdt.begin_node(&format!("memory@{:x}", region.base))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[region.base, region.size])?;
        fdt.end_node(node)?;
    }
    write_cpus(&mut fdt, &m.cpus)?;
    write_psci(&mut fdt, m.psci)?;
    write_gic(&mut fdt, &m.gic, m.gic_v2m, m.pci.is_some())?;
    write_timer(&mut fdt, m)?;
    if let Some(ppi) = m.pmu_ppi {
        write_pmu(&mut fdt, ppi, m)?;
    }
    write_apb_pclk(&mut fdt, m.apb_pclk_hz)?;
    for device in &m.devices {
        write_device(&mut fdt, device, m.uart_clock_hz)?;
    }
    if let Some(pci) = &m.pci {
        write_pci(&mut fdt, pci, &m.gic, m.gic_v2m.is_some())?;
    }

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

fn reg(region: &Region) -> [u64; 2] {
    [region.base, region.size]
}

/// Node name of a device, also used as its path under `/`.
pub(crate) fn device_node_name(device: &FdtDevice) -> String {
    let prefix = match device.kind {
        DeviceKind::Serial16550 => "uart",
        DeviceKind::Pl031Rtc => "rtc",
        DeviceKind::VirtioMmio => "virtio_mmio",
    };
    format!("{prefix}@{:x}", device.region.base)
}

fn write_chosen(fdt: &mut FdtWriter, chosen: &Chosen, devices: &[FdtDevice]) -> Result<()> {
    let node = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", &chosen.bootargs)?;
    if let Some(serial) = devices.iter().find(|d| d.kind == DeviceKind::Serial16550) {
        fdt.property_string("stdout-path", &format!("/{}", device_node_name(serial)))?;
    }
    if let Some(initrd) = chosen.initrd {
        fdt.property_u64("linux,initrd-start", initrd.base)?;
        fdt.property_u64("linux,initrd-end", initrd.base + initrd.size)?;
    }
    fdt.end_node(node)?;
    Ok(())
}

fn write_cpus(fdt: &mut FdtWriter, mpidrs: &[u64]) -> Result<()> {
    let cpus = fdt.begin_node("cpus")?;
    // Two cells so that Aff3 (MPIDR bits 32..40) fits.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 0)?;
    for &mpidr in mpidrs {
        let cpu = fdt.begin_node(&format!("cpu@{mpidr:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u64("reg", mpidr)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;
    Ok(())
}

fn write_psci(fdt: &mut FdtWriter, method: PsciMethod) -> Result<()> {
    let node = fdt.begin_node("psci")?;
    // The guest asks PSCI_VERSION at run time; 0.2 is the floor it may assume.
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    let conduit = match method {
        PsciMethod::Hvc => "hvc",
        PsciMethod::Smc => "smc",
    };
    fdt.property_string("method", conduit)?;
    fdt.end_node(node)?;
    Ok(())
}

/// The GIC node. Children (the ITS, a v2m frame) and PCI's interrupt-map
/// need it to have an address space: 2 cells, like the root's.
fn write_gic(fdt: &mut FdtWriter, gic: &Gic, v2m: Option<V2mFrame>, pci: bool) -> Result<()> {
    let dist = match gic {
        Gic::V2 { dist, .. } | Gic::V3 { dist, .. } => dist,
    };
    let node = fdt.begin_node(&format!("intc@{:x}", dist.base))?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_phandle(GIC_PHANDLE)?;
    match gic {
        Gic::V2 { dist, cpu } => {
            fdt.property_string("compatible", "arm,cortex-a15-gic")?;
            fdt.property_array_u64("reg", &[dist.base, dist.size, cpu.base, cpu.size])?;
            if v2m.is_some() || pci {
                fdt.property_u32("#address-cells", 2)?;
                fdt.property_u32("#size-cells", 2)?;
                fdt.property_null("ranges")?;
            }
            if let Some(v2m) = v2m {
                let frame = fdt.begin_node(&format!("v2m@{:x}", v2m.frame.base))?;
                fdt.property_string("compatible", "arm,gic-v2m-frame")?;
                fdt.property_null("msi-controller")?;
                fdt.property_array_u64("reg", &reg(&v2m.frame))?;
                // INTIDs: SPIs start at 32.
                fdt.property_u32("arm,msi-base-spi", 32 + v2m.first_spi)?;
                fdt.property_u32("arm,msi-num-spis", v2m.spis)?;
                fdt.property_phandle(V2M_PHANDLE)?;
                fdt.end_node(frame)?;
            }
        }
        Gic::V3 { dist, redist, its } => {
            fdt.property_string("compatible", "arm,gic-v3")?;
            fdt.property_array_u64("reg", &[dist.base, dist.size, redist.base, redist.size])?;
            fdt.property_u32("#redistributor-regions", 1)?;
            // The ITS child uses the same address space as the root.
            fdt.property_u32("#address-cells", 2)?;
            fdt.property_u32("#size-cells", 2)?;
            fdt.property_null("ranges")?;
            if let Some(its) = its {
                let its_node = fdt.begin_node(&format!("msi-controller@{:x}", its.base))?;
                fdt.property_string("compatible", "arm,gic-v3-its")?;
                fdt.property_null("msi-controller")?;
                fdt.property_u32("#msi-cells", 1)?;
                fdt.property_array_u64("reg", &reg(its))?;
                fdt.property_phandle(ITS_PHANDLE)?;
                fdt.end_node(its_node)?;
            }
        }
    }
    fdt.end_node(node)?;
    Ok(())
}

/// Trigger cell of the timer and PMU PPIs: level-high, plus the CPU mask
/// on GICv2.
pub(crate) fn timer_ppi_flags(gic: &Gic, cpus: usize) -> u32 {
    match gic {
        Gic::V2 { .. } => {
            let mask = (1u32 << cpus.min(crate::GICV2_MAX_CPUS)) - 1;
            IRQ_TYPE_LEVEL_HIGH | (mask << GICV2_PPI_CPU_MASK_SHIFT)
        }
        Gic::V3 { .. } => IRQ_TYPE_LEVEL_HIGH,
    }
}

fn write_timer(fdt: &mut FdtWriter, m: &MachineDescription) -> Result<()> {
    let flags = timer_ppi_flags(&m.gic, m.cpus.len());
    let cells: Vec<u32> = m
        .timer_ppis
        .iter()
        .flat_map(|&ppi| [GIC_PPI, ppi, flags])
        .collect();
    let node = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    fdt.property_array_u32("interrupts", &cells)?;
    // KVM keeps the timer running in every guest power state.
    fdt.property_null("always-on")?;
    fdt.end_node(node)?;
    Ok(())
}

fn write_pmu(fdt: &mut FdtWriter, ppi: u32, m: &MachineDescription) -> Result<()> {
    let flags = timer_ppi_flags(&m.gic, m.cpus.len());
    let node = fdt.begin_node("pmu")?;
    fdt.property_string("compatible", "arm,armv8-pmuv3")?;
    fdt.property_array_u32("interrupts", &[GIC_PPI, ppi, flags])?;
    fdt.end_node(node)?;
    Ok(())
}

fn write_apb_pclk(fdt: &mut FdtWriter, hz: u32) -> Result<()> {
    let node = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", hz)?;
    fdt.property_string("clock-output-names", "apb_pclk")?;
    fdt.property_phandle(APB_PCLK_PHANDLE)?;
    fdt.end_node(node)?;
    Ok(())
}

fn write_device(fdt: &mut FdtWriter, device: &FdtDevice, uart_clock_hz: u32) -> Result<()> {
    let node = fdt.begin_node(&device_node_name(device))?;
    fdt.property_array_u64("reg", &reg(&device.region))?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, device.spi, IRQ_TYPE_EDGE_RISING])?;
    match device.kind {
        DeviceKind::Serial16550 => {
            fdt.property_string("compatible", "ns16550a")?;
            fdt.property_u32("clock-frequency", uart_clock_hz)?;
            fdt.property_u32("reg-shift", 0)?;
            fdt.property_u32("reg-io-width", 1)?;
        }
        DeviceKind::Pl031Rtc => {
            fdt.property_string_list(
                "compatible",
                vec!["arm,pl031".into(), "arm,primecell".into()],
            )?;
            fdt.property_u32("clocks", APB_PCLK_PHANDLE)?;
            fdt.property_string("clock-names", "apb_pclk")?;
        }
        DeviceKind::VirtioMmio => {
            fdt.property_string("compatible", "virtio,mmio")?;
            fdt.property_null("dma-coherent")?;
        }
    }
    fdt.end_node(node)?;
    Ok(())
}

/// PCI address space codes (phys.hi): 32-bit and 64-bit memory, and the
/// prefetchable bit.
const PCI_MEMORY32: u32 = 0x0200_0000;
const PCI_MEMORY64: u32 = 0x0300_0000;
const PCI_PREFETCHABLE: u32 = 0x4000_0000;
/// Device slots the INTx map covers (the swizzle repeats every 4).
const INTX_SLOTS: u32 = 4;

/// `ranges` entry: PCI address (3 cells), CPU address (2), size (2); PCI
/// addresses equal CPU addresses.
fn pci_range(space: u32, window: &Region) -> [u32; 7] {
    let (base_hi, base_lo) = ((window.base >> 32) as u32, window.base as u32);
    let (size_hi, size_lo) = ((window.size >> 32) as u32, window.size as u32);
    [space, base_hi, base_lo, base_hi, base_lo, size_hi, size_lo]
}

fn write_pci(fdt: &mut FdtWriter, pci: &PciHost, gic: &Gic, v2m: bool) -> Result<()> {
    let node = fdt.begin_node(&format!("pcie@{:x}", pci.ecam.base))?;
    fdt.property_string("compatible", "pci-host-ecam-generic")?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_array_u64("reg", &reg(&pci.ecam))?;
    fdt.property_array_u32(
        "bus-range",
        &[u32::from(pci.buses.0), u32::from(pci.buses.1)],
    )?;
    fdt.property_u32("linux,pci-domain", 0)?;
    fdt.property_null("dma-coherent")?;
    let mut ranges = pci_range(PCI_MEMORY32, &pci.mmio32).to_vec();
    if let Some(window) = &pci.mmio64 {
        ranges.extend(pci_range(PCI_MEMORY64 | PCI_PREFETCHABLE, window));
    }
    fdt.property_array_u32("ranges", &ranges)?;
    // Slot bits of phys.hi and the pin; each entry: the child's address
    // (3 cells) and pin, the GIC and its 2 address cells, its specifier.
    fdt.property_array_u32("interrupt-map-mask", &[(INTX_SLOTS - 1) << 11, 0, 0, 7])?;
    let map: Vec<u32> = (0..INTX_SLOTS)
        .flat_map(|slot| (1..=4u32).map(move |pin| (slot, pin)))
        .flat_map(|(slot, pin)| {
            let spi = pci.intx_spis[((slot + pin - 1) % 4) as usize];
            let level = IRQ_TYPE_LEVEL_HIGH;
            [
                slot << 11,
                0,
                0,
                pin,
                GIC_PHANDLE,
                0,
                0,
                GIC_SPI,
                spi,
                level,
            ]
        })
        .collect();
    fdt.property_array_u32("interrupt-map", &map)?;
    match gic {
        // Requester id = ITS device id, for all 65536 of them.
        Gic::V3 { its: Some(_), .. } => {
            fdt.property_array_u32("msi-map", &[0, ITS_PHANDLE, 0, 0x1_0000])?
        }
        Gic::V2 { .. } if v2m => fdt.property_u32("msi-parent", V2M_PHANDLE)?,
        // No MSI controller: none named, or the guest's PCI probe fails.
        _ => {}
    }
    fdt.end_node(node)?;
    Ok(())
}
