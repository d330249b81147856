//! The PCI host bridge and its MSI controller as the back end describes
//! them, decoded from the blob: `msi-map` to the ITS on a GICv3 with one,
//! the emulated GICv2m frame as `msi-parent` on a GICv2, INTx alone on a
//! GICv3 without ITS, and no PCI at all without the ECAM device. Nothing
//! here needs KVM.

use fdt::decode::{decode, Node};
use fdt::Region;

use super::gic::GicVersion;
use super::layout::*;
use super::machine_fdt::{build, BootMachine};
use super::{pci_devices, platform_devices};
use crate::{DeviceInfo, DeviceKind, MemoryLayout, Result};

const GIC_PATH: &str = "/intc@8000000";
const BRIDGE_PATH: &str = "/pcie@c000000";
const V2M_PATH: &str = "/intc@8000000/v2m@8020000";
const ITS_PATH: &str = "/intc@8000000/msi-controller@8020000";

fn machine_layout() -> MemoryLayout {
    memory_layout(1 << 30, 4096).unwrap()
}

fn try_tree(gic: GicVersion, its: bool, devices: &[DeviceInfo]) -> Result<Node> {
    let layout = machine_layout();
    let blob = build(&BootMachine {
        mpidrs: vec![0, 1],
        ram: Region::new(RAM_BASE, 1 << 30),
        gic: gic.fdt_gic(2, its),
        cmdline: "",
        initrd: None,
        devices,
        pci: &layout.pci,
        pmu: false,
    })?;
    Ok(decode(&blob).unwrap())
}

/// The tree of a machine with PCI on `gic`, with the devices the back end
/// lists for it.
fn tree_with_pci(gic: GicVersion, its: bool) -> Node {
    let mut devices = platform_devices();
    devices.extend(pci_devices(&machine_layout(), gic, true));
    try_tree(gic, its, &devices).unwrap()
}

#[test]
fn the_back_end_lists_a_v2m_frame_only_on_a_gicv2() {
    let layout = machine_layout();
    let v3 = pci_devices(&layout, GicVersion::V3, true);
    assert_eq!(v3, [crate::pci_ecam_device(&layout)]);
    let v2 = pci_devices(&layout, GicVersion::V2, true);
    assert_eq!(v2[0], crate::pci_ecam_device(&layout));
    for gic in [GicVersion::V2, GicVersion::V3] {
        assert_eq!(pci_devices(&layout, gic, false), [], "no PCI, no devices");
    }
    let frame = v2[1];
    assert_eq!(frame.kind, DeviceKind::GicV2mFrame { spis: 64 });
    assert_eq!(
        (frame.base, frame.len, frame.irq),
        (0x0802_0000, 0x1000, Some(96))
    );
    // Its SPIs are the VGIC's and nobody else's.
    assert_eq!(V2M_SPIS, 96..160);
    assert_eq!(VGIC_NR_IRQS_V2M, 32 + 160);
    assert_eq!(VGIC_NR_IRQS, 32 + 96, "VMs without the frame as before");
    let taken = [SERIAL_SPI, RTC_SPI].into_iter().chain(PCI_INTX_SPIS);
    for spi in taken.chain(DEVICE_SPIS) {
        assert!(!V2M_SPIS.contains(&spi), "SPI {spi}");
    }
}

#[test]
fn the_bridge_has_the_layouts_ecam_windows_and_intx_spis() {
    let layout = machine_layout();
    let root = tree_with_pci(GicVersion::V3, true);
    let pci = root.find(BRIDGE_PATH).expect("the host bridge");
    assert_eq!(pci.string("compatible"), Some("pci-host-ecam-generic"));
    assert_eq!(pci.u64s("reg"), Some(vec![0x0c00_0000, 1 << 20]));
    assert_eq!(pci.u32s("bus-range"), Some(vec![0, 0]), "bus 0 only");
    let ranges = pci.u32s("ranges").unwrap();
    // 32-bit window: 512 MiB at 0x1000_0000; 64-bit: 4 GiB at 3 GiB,
    // right above 1 GiB of RAM.
    assert_eq!(
        &ranges[..7],
        &[0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2000_0000]
    );
    assert_eq!(layout.pci.mmio64, (3 << 30)..(7 << 30));
    let prefetchable_64 = 0x4300_0000;
    assert_eq!(
        &ranges[7..],
        &[prefetchable_64, 0, 0xc000_0000, 0, 0xc000_0000, 1, 0]
    );
    let map = pci.u32s("interrupt-map").unwrap();
    for entry in map.chunks(10) {
        let (slot, pin) = (entry[0] >> 11, entry[3] - 1);
        let spi = layout.pci.intx_irqs[((slot + pin) % 4) as usize];
        assert_eq!(
            &entry[7..],
            &[0, spi, 4],
            "slot {slot} pin {pin}: SPI, level"
        );
    }
}

#[test]
fn gicv3_with_its_maps_msis_to_the_its() {
    let root = tree_with_pci(GicVersion::V3, true);
    let its = root.find(ITS_PATH).expect("the ITS");
    let its_phandle = its.u32("phandle").unwrap();
    let pci = root.find(BRIDGE_PATH).unwrap();
    assert_eq!(pci.u32s("msi-map"), Some(vec![0, its_phandle, 0, 0x1_0000]));
    assert!(!pci.has("msi-parent"));
    assert!(root.find(V2M_PATH).is_none());
}

#[test]
fn gicv2_gets_the_v2m_frame_as_msi_parent() {
    let root = tree_with_pci(GicVersion::V2, false);
    let frame = root.find(V2M_PATH).expect("the v2m frame");
    assert_eq!(frame.string("compatible"), Some("arm,gic-v2m-frame"));
    assert!(frame.has("msi-controller"));
    assert_eq!(frame.u64s("reg"), Some(vec![GIC_V2M.base, GIC_V2M.size]));
    assert_eq!(frame.u32("arm,msi-base-spi"), Some(32 + 96), "an INTID");
    assert_eq!(frame.u32("arm,msi-num-spis"), Some(64));
    let pci = root.find(BRIDGE_PATH).unwrap();
    assert_eq!(pci.u32("msi-parent"), frame.u32("phandle"));
    assert!(!pci.has("msi-map"));
    assert!(
        pci.has("interrupt-map"),
        "INTx until the driver enables MSI-X"
    );
}

#[test]
fn gicv3_without_its_names_no_msi_controller() {
    let root = tree_with_pci(GicVersion::V3, false);
    let pci = root.find(BRIDGE_PATH).unwrap();
    assert!(!pci.has("msi-map") && !pci.has("msi-parent"));
    assert!(pci.has("interrupt-map"));
    assert!(root.find(V2M_PATH).is_none() && root.find(ITS_PATH).is_none());
}

#[test]
fn without_the_ecam_device_there_is_no_pci() {
    for (gic, its) in [
        (GicVersion::V2, false),
        (GicVersion::V3, false),
        (GicVersion::V3, true),
    ] {
        let root = try_tree(gic, its, &platform_devices()).unwrap();
        assert_eq!(root.children_named("pcie@").count(), 0, "{gic:?}");
        assert!(root.find(V2M_PATH).is_none(), "{gic:?}");
        let gic_node = root.find(GIC_PATH).unwrap();
        assert_eq!(gic_node.children_named("v2m@").count(), 0);
    }
}

#[test]
fn a_v2m_frame_on_a_gicv3_or_a_second_bridge_is_refused() {
    let frame = pci_devices(&machine_layout(), GicVersion::V2, true)[1];
    let err = try_tree(GicVersion::V3, true, &[frame]).unwrap_err();
    assert!(err.to_string().contains("needs a GICv2"), "{err}");
    let ecam = crate::pci_ecam_device(&machine_layout());
    let err = try_tree(GicVersion::V3, true, &[ecam, ecam]).unwrap_err();
    assert!(err.to_string().contains("second of its kind"), "{err}");
    let half_bus = DeviceInfo {
        len: 1 << 19,
        ..ecam
    };
    let err = try_tree(GicVersion::V3, true, &[half_bus]).unwrap_err();
    assert!(err.to_string().contains("1 MiB buses"), "{err}");
}
