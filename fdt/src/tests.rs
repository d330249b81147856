//! Builds trees for each machine shape, decodes them and checks every node
//! a guest kernel relies on.

use crate::decode::{decode, Node};
use crate::nodes::{APB_PCLK_PHANDLE, GIC_PHANDLE, ITS_PHANDLE};
use crate::*;

const DIST: Region = Region::new(0x0800_0000, 0x1_0000);
const V2_CPU: Region = Region::new(0x0801_0000, 0x2000);
const ITS: Region = Region::new(0x0802_0000, 0x2_0000);
const REDIST: Region = Region::new(0x0804_0000, 0x2_0000);
const RAM: Region = Region::new(0x8000_0000, 0x1000_0000);

pub(crate) fn gic_v3(its: Option<Region>) -> Gic {
    Gic::V3 {
        dist: DIST,
        redist: REDIST,
        its,
    }
}

pub(crate) fn gic_v2() -> Gic {
    Gic::V2 {
        dist: DIST,
        cpu: V2_CPU,
    }
}

fn device(kind: DeviceKind, base: u64, spi: u32) -> FdtDevice {
    FdtDevice {
        kind,
        region: Region::new(base, 0x1000),
        spi,
    }
}

pub(crate) fn machine(gic: Gic, cpus: usize) -> MachineDescription {
    MachineDescription {
        cpus: (0..cpus as u64).collect(),
        memory: vec![RAM],
        gic,
        timer_ppis: ARMV8_TIMER_PPIS,
        pmu_ppi: None,
        psci: PsciMethod::Hvc,
        chosen: Chosen {
            bootargs: "console=ttyS0 quiet".into(),
            initrd: None,
        },
        devices: vec![
            device(DeviceKind::Serial16550, 0x0900_0000, 1),
            device(DeviceKind::Pl031Rtc, 0x0901_0000, 2),
            device(DeviceKind::VirtioMmio, 0x0a00_0000, 8),
            device(DeviceKind::VirtioMmio, 0x0a00_1000, 9),
        ],
        apb_pclk_hz: 24_000_000,
        uart_clock_hz: 1_843_200,
        gic_v2m: None,
        pci: None,
    }
}

pub(crate) fn built(m: &MachineDescription) -> Node {
    decode(&build(m).expect("build")).expect("decode")
}

#[test]
fn root_declares_two_cell_addresses_and_the_gic_as_parent() {
    let root = built(&machine(gic_v3(None), 1));
    assert_eq!(root.u32("#address-cells"), Some(2));
    assert_eq!(root.u32("#size-cells"), Some(2));
    assert_eq!(root.u32("interrupt-parent"), Some(GIC_PHANDLE));
    let memory = root.find("/memory@80000000").unwrap();
    assert_eq!(memory.string("device_type"), Some("memory"));
    assert_eq!(memory.u64s("reg"), Some(vec![RAM.base, RAM.size]));
}

#[test]
fn gic_v3_without_its_has_dist_and_redist_only() {
    let root = built(&machine(gic_v3(None), 1));
    let gic = root.find("/intc@8000000").unwrap();
    assert_eq!(gic.string("compatible"), Some("arm,gic-v3"));
    assert!(gic.has("interrupt-controller"));
    assert_eq!(gic.u32("#interrupt-cells"), Some(3));
    assert_eq!(gic.u32("phandle"), Some(GIC_PHANDLE));
    let reg = vec![DIST.base, DIST.size, REDIST.base, REDIST.size];
    assert_eq!(gic.u64s("reg"), Some(reg));
    assert!(gic.children.is_empty(), "no ITS node expected");
}

#[test]
fn gic_v3_with_its_has_an_msi_controller_child() {
    let root = built(&machine(gic_v3(Some(ITS)), 2));
    let its = root.find("/intc@8000000/msi-controller@8020000").unwrap();
    assert_eq!(its.string("compatible"), Some("arm,gic-v3-its"));
    assert!(its.has("msi-controller"));
    assert_eq!(its.u32("#msi-cells"), Some(1));
    assert_eq!(its.u64s("reg"), Some(vec![ITS.base, ITS.size]));
    assert_eq!(its.u32("phandle"), Some(ITS_PHANDLE));
    let gic = root.find("/intc@8000000").unwrap();
    assert!(gic.has("ranges"));
    assert_eq!(gic.u32("#address-cells"), Some(2));
}

#[test]
fn gic_v2_has_dist_and_cpu_interface_and_masks_timer_ppis() {
    let root = built(&machine(gic_v2(), 2));
    let gic = root.find("/intc@8000000").unwrap();
    assert_eq!(gic.string("compatible"), Some("arm,cortex-a15-gic"));
    let reg = vec![DIST.base, DIST.size, V2_CPU.base, V2_CPU.size];
    assert_eq!(gic.u64s("reg"), Some(reg));
    assert!(gic.children.is_empty());
    assert!(!gic.has("#redistributor-regions"));
    // Level-high (4) and CPUs 0 and 1 in the mask.
    let timer = root.find("/timer").unwrap();
    assert_eq!(timer.u32s("interrupts").unwrap()[2], 0x304);
}

#[test]
fn timer_lists_the_four_ppis_level_high_and_always_on() {
    let root = built(&machine(gic_v3(None), 1));
    let timer = root.find("/timer").unwrap();
    assert_eq!(timer.string("compatible"), Some("arm,armv8-timer"));
    assert!(timer.has("always-on"));
    let expected = vec![1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4];
    assert_eq!(timer.u32s("interrupts"), Some(expected));
}

#[test]
fn pmu_node_only_with_a_pmu_and_its_ppi_masked_as_the_timers() {
    assert!(built(&machine(gic_v3(None), 2)).find("/pmu").is_none());
    for (gic, flags) in [(gic_v3(None), 4), (gic_v2(), 0x304)] {
        let mut m = machine(gic, 2);
        m.pmu_ppi = Some(PMU_PPI);
        let root = built(&m);
        let pmu = root.find("/pmu").unwrap();
        assert_eq!(pmu.string("compatible"), Some("arm,armv8-pmuv3"));
        assert_eq!(pmu.u32s("interrupts"), Some(vec![1, 7, flags]));
    }
}

#[test]
fn cpus_are_listed_by_mpidr_with_psci_enable_method() {
    for count in [1usize, 2] {
        let mut m = machine(gic_v3(None), count);
        m.cpus = (0..count as u64).map(|i| 0x1_0000_0100 + i).collect();
        let root = built(&m);
        let cpus = root.find("/cpus").unwrap();
        assert_eq!(cpus.u32("#address-cells"), Some(2));
        assert_eq!(cpus.u32("#size-cells"), Some(0));
        let regs: Vec<u64> = cpus
            .children_named("cpu@")
            .map(|cpu| {
                assert_eq!(cpu.string("device_type"), Some("cpu"));
                assert_eq!(cpu.string("enable-method"), Some("psci"));
                assert_eq!(cpu.name, format!("cpu@{:x}", cpu.u64("reg").unwrap()));
                cpu.u64("reg").unwrap()
            })
            .collect();
        assert_eq!(regs, m.cpus);
    }
}

#[test]
fn psci_is_0_2_compatible_over_hvc() {
    let root = built(&machine(gic_v3(None), 1));
    let psci = root.find("/psci").unwrap();
    let compatible = psci.strings("compatible").unwrap();
    assert!(compatible.contains(&"arm,psci-0.2"));
    assert_eq!(psci.string("method"), Some("hvc"));
}

#[test]
fn chosen_has_bootargs_stdout_and_initrd_only_when_given() {
    let mut m = machine(gic_v3(None), 1);
    let chosen = built(&m).find("/chosen").cloned().unwrap();
    assert_eq!(chosen.string("bootargs"), Some("console=ttyS0 quiet"));
    assert_eq!(chosen.string("stdout-path"), Some("/uart@9000000"));
    assert!(!chosen.has("linux,initrd-start"));
    assert!(!chosen.has("linux,initrd-end"));

    m.chosen.initrd = Some(Region::new(0x8f00_0000, 0x12_3000));
    let chosen = built(&m).find("/chosen").cloned().unwrap();
    assert_eq!(chosen.u64("linux,initrd-start"), Some(0x8f00_0000));
    assert_eq!(chosen.u64("linux,initrd-end"), Some(0x8f12_3000));
}

#[test]
fn devices_have_their_registers_edge_spis_and_bindings() {
    let root = built(&machine(gic_v3(None), 1));
    let uart = root.find("/uart@9000000").unwrap();
    assert_eq!(uart.string("compatible"), Some("ns16550a"));
    assert_eq!(uart.u64s("reg"), Some(vec![0x0900_0000, 0x1000]));
    assert_eq!(uart.u32s("interrupts"), Some(vec![0, 1, 1]));
    assert_eq!(uart.u32("clock-frequency"), Some(1_843_200));
    assert_eq!(uart.u32("reg-shift"), Some(0));
    assert_eq!(uart.u32("reg-io-width"), Some(1));

    let rtc = root.find("/rtc@9010000").unwrap();
    assert_eq!(
        rtc.strings("compatible"),
        Some(vec!["arm,pl031", "arm,primecell"])
    );
    assert_eq!(rtc.u32s("interrupts"), Some(vec![0, 2, 1]));
    assert_eq!(rtc.u32("clocks"), Some(APB_PCLK_PHANDLE));
    assert_eq!(rtc.string("clock-names"), Some("apb_pclk"));
    let clock = root.find("/apb-pclk").unwrap();
    assert_eq!(clock.string("compatible"), Some("fixed-clock"));
    assert_eq!(clock.u32("phandle"), Some(APB_PCLK_PHANDLE));
    assert_eq!(clock.u32("clock-frequency"), Some(24_000_000));
    assert_eq!(clock.u32("#clock-cells"), Some(0));

    let virtio: Vec<&Node> = root.children_named("virtio_mmio@").collect();
    assert_eq!(virtio.len(), 2);
    for (node, (base, spi)) in virtio.iter().zip([(0x0a00_0000, 8), (0x0a00_1000, 9)]) {
        assert_eq!(node.string("compatible"), Some("virtio,mmio"));
        assert_eq!(node.u64s("reg"), Some(vec![base, 0x1000]));
        assert_eq!(node.u32s("interrupts"), Some(vec![0, spi, 1]));
        assert!(node.has("dma-coherent"));
    }
}

#[test]
fn no_serial_means_no_stdout_path() {
    let mut m = machine(gic_v3(None), 1);
    m.devices.retain(|d| d.kind != DeviceKind::Serial16550);
    let root = built(&m);
    assert!(!root.find("/chosen").unwrap().has("stdout-path"));
}

#[test]
fn invalid_descriptions_are_refused() {
    type Mutation = Box<dyn Fn(&mut MachineDescription)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("no CPUs", Box::new(|m| m.cpus.clear())),
        ("no RAM", Box::new(|m| m.memory.clear())),
        (
            "GICv2 supports at most 8",
            Box::new(|m| {
                m.gic = gic_v2();
                m.cpus = (0..9).collect();
            }),
        ),
        ("share an MPIDR", Box::new(|m| m.cpus = vec![0, 1, 0])),
        ("SPI 988", Box::new(|m| m.devices[0].spi = 988)),
        ("not a PPI", Box::new(|m| m.timer_ppis[0] = 16)),
        ("not a free PPI", Box::new(|m| m.pmu_ppi = Some(11))),
        ("not a free PPI", Box::new(|m| m.pmu_ppi = Some(16))),
        (
            "empty initrd",
            Box::new(|m| m.chosen.initrd = Some(Region::new(0x9000_0000, 0))),
        ),
        ("NUL", Box::new(|m| m.chosen.bootargs = "a\0b".into())),
    ];
    for (expected, mutate) in cases {
        let mut m = machine(gic_v3(None), 2);
        mutate(&mut m);
        let err = build(&m).expect_err(expected).to_string();
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
    }
}

#[test]
fn eight_cpus_fit_gic_v2() {
    let root = built(&machine(gic_v2(), 8));
    assert_eq!(
        root.find("/cpus").unwrap().children_named("cpu@").count(),
        8
    );
    assert_eq!(
        root.find("/timer").unwrap().u32s("interrupts").unwrap()[2],
        0xff04
    );
}

#[test]
fn decoder_rejects_truncated_and_corrupted_blobs_without_panicking() {
    let blob = build(&machine(gic_v3(Some(ITS)), 2)).unwrap();
    assert!(decode(&[]).is_err());
    assert!(decode(b"not a device tree at all, clearly").is_err());
    for len in 0..blob.len() {
        assert!(
            decode(&blob[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    for i in 0..blob.len() {
        let mut corrupt = blob.clone();
        corrupt[i] ^= 0xa5;
        let _ = decode(&corrupt);
    }
}
