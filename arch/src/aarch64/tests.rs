//! The device tree the back end builds for each machine shape (GICv2, v3,
//! v3 with ITS; 1 and 2 vCPUs; with and without initrd), decoded and
//! checked against the memory map and the devices the core passed in.
//! Nothing here needs KVM.

use fdt::decode::{decode, Node};
use fdt::Region;

use super::gic::GicVersion;
use super::layout::*;
use super::machine_fdt::{build, BootMachine};
use super::platform_devices;
use crate::{AddressSpace, DeviceInfo, DeviceKind};

fn virtio(index: u64) -> DeviceInfo {
    DeviceInfo {
        kind: DeviceKind::VirtioMmio,
        space: AddressSpace::Mmio,
        base: VIRTIO_MMIO.start + index * 0x200,
        len: 0x200,
        irq: Some(DEVICE_SPIS.start + index as u32),
    }
}

struct Shape {
    gic: GicVersion,
    its: bool,
    vcpus: usize,
    initrd: Option<Region>,
}

fn build_tree(shape: &Shape, devices: &[DeviceInfo]) -> Node {
    let ram = Region::new(RAM_BASE, 256 << 20);
    let layout = memory_layout(ram.size, 4096).unwrap();
    let blob = build(&BootMachine {
        mpidrs: (0..shape.vcpus as u64)
            .map(|i| 0x8000_0000 | i)
            .map(|m| m & 0xff_00ff_ffff)
            .collect(),
        ram,
        gic: shape.gic.fdt_gic(shape.vcpus, shape.its),
        cmdline: "root=/dev/vda quiet",
        initrd: shape.initrd,
        devices,
        pci: &layout.pci,
        pmu: false,
    })
    .unwrap();
    decode(&blob).unwrap()
}

fn all_devices() -> Vec<DeviceInfo> {
    let mut devices = platform_devices();
    devices.extend([virtio(0), virtio(1)]);
    devices
}

fn shapes() -> Vec<Shape> {
    let initrd = Some(Region::new(RAM_BASE + (200 << 20), 0x12_3456));
    let mut shapes = Vec::new();
    for (gic, its) in [
        (GicVersion::V2, false),
        (GicVersion::V3, false),
        (GicVersion::V3, true),
    ] {
        for vcpus in [1, 2] {
            for initrd in [None, initrd] {
                shapes.push(Shape {
                    gic,
                    its,
                    vcpus,
                    initrd,
                });
            }
        }
    }
    shapes
}

#[test]
fn every_shape_describes_exactly_its_gic_cpus_and_initrd() {
    for shape in shapes() {
        let root = build_tree(&shape, &all_devices());
        let gic = root.find(&format!("/intc@{:x}", GIC_DIST.base)).unwrap();
        let reg = gic.u64s("reg").unwrap();
        match shape.gic {
            GicVersion::V2 => {
                assert_eq!(gic.string("compatible"), Some("arm,cortex-a15-gic"));
                assert_eq!(
                    reg,
                    [
                        GIC_DIST.base,
                        GICV2_DIST_SIZE,
                        GICV2_CPU.base,
                        GICV2_CPU.size
                    ]
                );
            }
            GicVersion::V3 => {
                assert_eq!(gic.string("compatible"), Some("arm,gic-v3"));
                let redist = shape.vcpus as u64 * GIC_REDIST_SIZE;
                assert_eq!(reg, [GIC_DIST.base, GIC_DIST.size, GIC_REDIST_BASE, redist]);
            }
        }
        let its_path = format!(
            "/intc@{:x}/msi-controller@{:x}",
            GIC_DIST.base, GIC_ITS.base
        );
        assert_eq!(root.find(&its_path).is_some(), shape.its);

        let cpus: Vec<u64> = root
            .find("/cpus")
            .unwrap()
            .children_named("cpu@")
            .map(|c| c.u64("reg").unwrap())
            .collect();
        assert_eq!(
            cpus,
            (0..shape.vcpus as u64).collect::<Vec<_>>(),
            "MPIDR bit 31 is masked off"
        );

        let chosen = root.find("/chosen").unwrap();
        assert_eq!(chosen.string("bootargs"), Some("root=/dev/vda quiet"));
        match shape.initrd {
            Some(r) => {
                assert_eq!(chosen.u64("linux,initrd-start"), Some(r.base));
                assert_eq!(chosen.u64("linux,initrd-end"), Some(r.base + r.size));
            }
            None => assert!(!chosen.has("linux,initrd-start") && !chosen.has("linux,initrd-end")),
        }
        let memory = root.find(&format!("/memory@{RAM_BASE:x}")).unwrap();
        assert_eq!(memory.u64s("reg"), Some(vec![RAM_BASE, 256 << 20]));
    }
}

#[test]
fn devices_appear_at_their_place_with_their_spi() {
    let devices = all_devices();
    let root = build_tree(
        &Shape {
            gic: GicVersion::V3,
            its: false,
            vcpus: 1,
            initrd: None,
        },
        &devices,
    );
    let prefix = |kind| match kind {
        DeviceKind::Serial => "uart",
        DeviceKind::Rtc => "rtc",
        _ => "virtio_mmio",
    };
    for device in &devices {
        let node = root
            .find(&format!("/{}@{:x}", prefix(device.kind), device.base))
            .unwrap();
        assert_eq!(node.u64s("reg"), Some(vec![device.base, device.len]));
        // GIC_SPI, the irqfd GSI (= SPI number), edge rising.
        assert_eq!(
            node.u32s("interrupts"),
            Some(vec![0, device.irq.unwrap(), 1])
        );
    }
    assert_eq!(
        root.find("/chosen").unwrap().string("stdout-path"),
        Some("/uart@9000000")
    );
    assert_eq!(root.children_named("virtio_mmio@").count(), 2);
}

#[test]
fn platform_devices_sit_outside_the_virtio_window_and_spis() {
    let devices = platform_devices();
    assert_eq!(
        devices.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [DeviceKind::Serial, DeviceKind::Rtc]
    );
    for d in devices {
        assert_eq!(d.space, AddressSpace::Mmio);
        assert!(!VIRTIO_MMIO.contains(&d.base));
        assert!(!DEVICE_SPIS.contains(&d.irq.unwrap()));
        assert!(d.irq.unwrap() < VGIC_NR_IRQS - 32);
    }
}

#[test]
fn devices_the_machine_cannot_have_are_errors() {
    let pio = DeviceInfo {
        space: AddressSpace::Pio,
        ..virtio(0)
    };
    let no_irq = DeviceInfo {
        irq: None,
        ..virtio(0)
    };
    let i8042 = DeviceInfo {
        kind: DeviceKind::I8042,
        ..virtio(0)
    };
    for (device, words) in [
        (pio, "port I/O"),
        (no_irq, "no interrupt line"),
        (i8042, "does not exist on aarch64"),
    ] {
        let err = build(&BootMachine {
            mpidrs: vec![0],
            ram: Region::new(RAM_BASE, 64 << 20),
            gic: GicVersion::V3.fdt_gic(1, false),
            cmdline: "",
            initrd: None,
            devices: &[device],
            pci: &memory_layout(64 << 20, 4096).unwrap().pci,
            pmu: false,
        })
        .unwrap_err();
        assert!(err.to_string().contains(words), "{err}");
    }
}

#[test]
fn a_nul_in_the_command_line_is_a_config_error() {
    let err = build(&BootMachine {
        mpidrs: vec![0],
        ram: Region::new(RAM_BASE, 64 << 20),
        gic: GicVersion::V2.fdt_gic(1, false),
        cmdline: "a\0b",
        initrd: None,
        devices: &[],
        pci: &memory_layout(64 << 20, 4096).unwrap().pci,
        pmu: false,
    })
    .unwrap_err();
    assert!(matches!(err, crate::Error::Config(_)), "{err}");
}
