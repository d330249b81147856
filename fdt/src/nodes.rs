//! Writes the nodes of a validated [`MachineDescription`] with `vm-fdt`,
//! following the Linux device tree bindings of each device.

use vm_fdt::FdtWriter;

use crate::{Chosen, DeviceKind, FdtDevice, Gic, MachineDescription, PsciMethod, Region, Result};

/// phandles of the nodes others point at.
pub(crate) const GIC_PHANDLE: u32 = 1;
pub(crate) const ITS_PHANDLE: u32 = 2;
pub(crate) const APB_PCLK_PHANDLE: u32 = 3;

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
    write_gic(&mut fdt, &m.gic)?;
    write_timer(&mut fdt, m)?;
    write_apb_pclk(&mut fdt, m.apb_pclk_hz)?;
    for device in &m.devices {
        write_device(&mut fdt, device, m.uart_clock_hz)?;
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

fn write_gic(fdt: &mut FdtWriter, gic: &Gic) -> Result<()> {
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

/// Trigger cell of the timer PPIs: level-high, plus the CPU mask on GICv2.
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
