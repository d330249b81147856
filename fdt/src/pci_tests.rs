//! The PCIe host bridge and GICv2m nodes, decoded back: what Linux's
//! pci-host-generic and gic-v2m drivers read, and that the bridge names an
//! MSI controller only when the machine has one (a GICv2 without v2m gets
//! none, so its devices fall back to INTx instead of failing to probe).

use crate::decode::Node;
use crate::nodes::{GIC_PHANDLE, ITS_PHANDLE, V2M_PHANDLE};
use crate::tests::{built, gic_v2, gic_v3, machine};
use crate::*;

const ECAM: Region = Region::new(0x40_1000_0000, 0x1000_0000);
const MMIO32: Region = Region::new(0x1000_0000, 0x2eff_0000);
const MMIO64: Region = Region::new(0x80_0000_0000, 0x80_0000_0000);
const V2M: V2mFrame = V2mFrame {
    frame: Region::new(0x0802_0000, 0x1000),
    first_spi: 48,
    spis: 64,
};

fn host() -> PciHost {
    PciHost {
        ecam: ECAM,
        buses: (0, 255),
        mmio32: MMIO32,
        mmio64: Some(MMIO64),
        intx_spis: [3, 4, 5, 6],
    }
}

fn with_pci(gic: Gic, v2m: Option<V2mFrame>) -> Node {
    let mut m = machine(gic, 2);
    m.gic_v2m = v2m;
    m.pci = Some(host());
    built(&m)
}

fn bridge(root: &Node) -> &Node {
    root.find("/pcie@4010000000").expect("the host bridge node")
}

#[test]
fn the_bridge_describes_ecam_buses_and_windows() {
    let root = with_pci(gic_v3(None), None);
    let pci = bridge(&root);
    assert_eq!(pci.string("compatible"), Some("pci-host-ecam-generic"));
    assert_eq!(pci.string("device_type"), Some("pci"));
    assert_eq!(pci.u32("#address-cells"), Some(3));
    assert_eq!(pci.u32("#size-cells"), Some(2));
    assert_eq!(pci.u64s("reg"), Some(vec![ECAM.base, ECAM.size]));
    assert_eq!(pci.u32s("bus-range"), Some(vec![0, 255]));
    assert!(pci.has("dma-coherent"));
    let ranges = pci.u32s("ranges").unwrap();
    assert_eq!(
        ranges,
        vec![
            0x0200_0000,
            0,
            0x1000_0000,
            0,
            0x1000_0000,
            0,
            0x2eff_0000, // 32-bit
            0x4300_0000,
            0x80,
            0,
            0x80,
            0,
            0x80,
            0, // 64-bit prefetchable
        ]
    );
}

#[test]
fn intx_pins_are_swizzled_across_slots_onto_level_spis() {
    let root = with_pci(gic_v3(None), None);
    let pci = bridge(&root);
    assert_eq!(pci.u32s("interrupt-map-mask"), Some(vec![0x1800, 0, 0, 7]));
    let map = pci.u32s("interrupt-map").unwrap();
    let entries: Vec<&[u32]> = map.chunks(10).collect();
    assert_eq!(entries.len(), 16);
    for entry in &entries {
        let (slot, pin) = (entry[0] >> 11, entry[3]);
        assert_eq!(&entry[1..3], &[0, 0]);
        assert_eq!(
            &entry[4..8],
            &[GIC_PHANDLE, 0, 0, 0],
            "GIC, its address, an SPI"
        );
        let expected = [3, 4, 5, 6][((slot + pin - 1) % 4) as usize];
        assert_eq!(entry[8], expected, "slot {slot} pin {pin}");
        assert_eq!(entry[9], 4, "level-high");
    }
    let gic = root.find("/intc@8000000").unwrap();
    assert_eq!(
        gic.u32("#address-cells"),
        Some(2),
        "the map's 2 parent address cells"
    );
}

#[test]
fn gic_v3_with_its_maps_requester_ids_to_its_device_ids() {
    let root = with_pci(gic_v3(Some(Region::new(0x0802_0000, 0x2_0000))), None);
    let pci = bridge(&root);
    assert_eq!(pci.u32s("msi-map"), Some(vec![0, ITS_PHANDLE, 0, 0x1_0000]));
    assert!(!pci.has("msi-parent"));
}

#[test]
fn gic_v2_with_a_v2m_frame_gets_it_as_msi_parent() {
    let root = with_pci(gic_v2(), Some(V2M));
    let frame = root
        .find("/intc@8000000/v2m@8020000")
        .expect("the v2m frame");
    assert_eq!(frame.string("compatible"), Some("arm,gic-v2m-frame"));
    assert!(frame.has("msi-controller"));
    assert_eq!(frame.u64s("reg"), Some(vec![0x0802_0000, 0x1000]));
    assert_eq!(frame.u32("arm,msi-base-spi"), Some(80), "INTID of SPI 48");
    assert_eq!(frame.u32("arm,msi-num-spis"), Some(64));
    assert_eq!(frame.u32("phandle"), Some(V2M_PHANDLE));
    let gic = root.find("/intc@8000000").unwrap();
    assert!(gic.has("ranges"));
    let pci = bridge(&root);
    assert_eq!(pci.u32("msi-parent"), Some(V2M_PHANDLE));
    assert!(!pci.has("msi-map"));
}

#[test]
fn no_msi_controller_means_none_is_named() {
    for gic in [gic_v2(), gic_v3(None)] {
        let root = with_pci(gic, None);
        let pci = bridge(&root);
        assert!(!pci.has("msi-parent") && !pci.has("msi-map"), "{gic:?}");
    }
    let plain = built(&machine(gic_v2(), 2));
    let gic = plain.find("/intc@8000000").unwrap();
    assert!(
        !gic.has("#address-cells"),
        "without PCI or v2m the GICv2 node is as before"
    );
}

#[test]
fn impossible_pci_and_v2m_descriptions_are_refused() {
    let mut m = machine(gic_v3(None), 1);
    m.gic_v2m = Some(V2M);
    assert!(build(&m).unwrap_err().to_string().contains("needs a GICv2"));

    let mut m = machine(gic_v2(), 1);
    m.gic_v2m = Some(V2mFrame {
        first_spi: 980,
        spis: 64,
        ..V2M
    });
    assert!(build(&m).unwrap_err().to_string().contains("out of range"));

    let mut m = machine(gic_v2(), 1);
    m.pci = Some(PciHost {
        ecam: Region::new(ECAM.base, 1 << 20),
        ..host()
    });
    assert!(build(&m).unwrap_err().to_string().contains("ECAM window"));

    m.pci = Some(PciHost {
        intx_spis: [3, 4, 5, 1000],
        ..host()
    });
    assert!(build(&m).unwrap_err().to_string().contains("INTx SPI 1000"));

    m.pci = Some(PciHost {
        mmio64: Some(Region::new(MMIO64.base, 0)),
        ..host()
    });
    assert!(build(&m)
        .unwrap_err()
        .to_string()
        .contains("empty PCI memory window"));
}
