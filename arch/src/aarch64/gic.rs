//! The in-kernel VGIC: GICv3 (with an ITS when KVM offers one) or GICv2,
//! chosen from `--gic`, and how the device tree describes it.
//!
//! The device is created with the VM, before any vCPU, so the GIC choice
//! and its vCPU limit are settled before vCPUs exist. KVM wants the
//! initialisation (CTRL_INIT) after all vCPUs exist; [`Vgic::init`] does it
//! from `configure_boot`. KVM_IRQFD fails with EAGAIN until then (arm64
//! KVM requires an initialised VGIC), so irqfds are registered after
//! `configure_boot`.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V2_ADDR_TYPE_CPU,
    KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};

use super::layout::{
    vgic_nr_irqs, GICV2_CPU, GICV2_DIST_SIZE, GICV3_MAX_VCPUS, GIC_DIST, GIC_ITS, GIC_REDIST_BASE,
    GIC_REDIST_SIZE,
};
use crate::{kvm_err, Error, GicChoice, Result};

/// Which GIC architecture the guest got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GicVersion {
    /// GICv2 (GIC-400 hosts such as the Raspberry Pi 4 and 5).
    V2,
    /// GICv3.
    V3,
}

impl GicVersion {
    /// Most vCPUs this GIC can serve in tandem's memory map.
    pub fn max_vcpus(self) -> usize {
        match self {
            GicVersion::V2 => fdt::GICV2_MAX_CPUS,
            GicVersion::V3 => GICV3_MAX_VCPUS,
        }
    }

    /// Whether a VM with this GIC and `pci` gets a GICv2m frame: a GICv2
    /// has no ITS to send MSIs through (a GICv3 without one gets none).
    pub fn has_v2m(self, pci: bool) -> bool {
        pci && self == GicVersion::V2
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            GicVersion::V2 => "GICv2",
            GicVersion::V3 => "GICv3",
        }
    }

    /// The device tree view of this GIC for `vcpus` vCPUs.
    pub fn fdt_gic(self, vcpus: usize, has_its: bool) -> fdt::Gic {
        match self {
            GicVersion::V2 => fdt::Gic::V2 {
                dist: fdt::Region::new(GIC_DIST.base, GICV2_DIST_SIZE),
                cpu: GICV2_CPU,
            },
            GicVersion::V3 => fdt::Gic::V3 {
                dist: GIC_DIST,
                redist: fdt::Region::new(GIC_REDIST_BASE, vcpus as u64 * GIC_REDIST_SIZE),
                its: has_its.then_some(GIC_ITS),
            },
        }
    }
}

/// The VGIC device fds; dropping them does not remove the VGIC from the VM.
#[derive(Debug)]
pub struct Vgic {
    version: GicVersion,
    gic: DeviceFd,
    its: Option<DeviceFd>,
    /// Interrupt IDs it has (KVM_DEV_ARM_VGIC_GRP_NR_IRQS).
    nr_irqs: u32,
}

fn create_device(vm: &VmFd, type_: u32) -> std::result::Result<DeviceFd, kvm_ioctls::Error> {
    let mut device = kvm_create_device {
        type_,
        fd: 0,
        flags: 0,
    };
    vm.create_device(&mut device)
}

/// The user address KVM reads an attribute value from.
fn addr_of<T>(value: &T) -> u64 {
    value as *const T as u64
}

/// Sets one attribute; `addr` points at its value (see [`addr_of`]), or is
/// 0 for control commands. The value must outlive the call.
fn set_attr(device: &DeviceFd, group: u32, attr: u32, addr: u64, what: &'static str) -> Result<()> {
    let attr = kvm_device_attr {
        flags: 0,
        group,
        attr: u64::from(attr),
        addr,
    };
    device.set_device_attr(&attr).map_err(kvm_err(what))
}

impl Vgic {
    /// Creates the VGIC `choice` asks for (Auto: v3, else v2), places its
    /// registers and sizes it, with room for a GICv2m frame's SPIs when
    /// the VM has `pci` and gets a GICv2; [`Vgic::init`] finishes it later.
    pub fn create(vm: &VmFd, choice: GicChoice, pci: bool) -> Result<Self> {
        let v3 = || create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3);
        let v2 = || create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2);
        let (version, gic) = match choice {
            GicChoice::V3 => (GicVersion::V3, v3().map_err(|e| no_gic("GICv3", e, "v2"))?),
            GicChoice::V2 => (GicVersion::V2, v2().map_err(|e| no_gic("GICv2", e, "v3"))?),
            GicChoice::Auto => match v3() {
                Ok(fd) => (GicVersion::V3, fd),
                Err(e3) => {
                    log::info!("no in-kernel GICv3 ({e3}); trying GICv2");
                    let fd = v2().map_err(|e2| {
                        Error::Config(format!(
                            "KVM offers no in-kernel GIC: GICv3: {e3}; GICv2: {e2}"
                        ))
                    })?;
                    (GicVersion::V2, fd)
                }
            },
        };
        let its = match version {
            GicVersion::V3 => Self::place_v3(vm, &gic)?,
            GicVersion::V2 => {
                Self::place_v2(&gic)?;
                None
            }
        };
        let nr_irqs = vgic_nr_irqs(version.has_v2m(pci));
        set_attr(
            &gic,
            KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
            0,
            addr_of(&nr_irqs),
            "set VGIC interrupt count",
        )?;
        log::info!(
            "in-kernel {}{}",
            version.name(),
            if its.is_some() { " with ITS" } else { "" }
        );
        Ok(Self {
            version,
            gic,
            its,
            nr_irqs,
        })
    }

    fn place_v2(gic: &DeviceFd) -> Result<()> {
        let group = KVM_DEV_ARM_VGIC_GRP_ADDR;
        set_attr(
            gic,
            group,
            KVM_VGIC_V2_ADDR_TYPE_DIST,
            addr_of(&GIC_DIST.base),
            "place GICv2 distributor",
        )?;
        set_attr(
            gic,
            group,
            KVM_VGIC_V2_ADDR_TYPE_CPU,
            addr_of(&GICV2_CPU.base),
            "place GICv2 CPU interface",
        )
    }

    /// Places the v3 registers and, when KVM can, adds an ITS.
    fn place_v3(vm: &VmFd, gic: &DeviceFd) -> Result<Option<DeviceFd>> {
        let group = KVM_DEV_ARM_VGIC_GRP_ADDR;
        set_attr(
            gic,
            group,
            KVM_VGIC_V3_ADDR_TYPE_DIST,
            addr_of(&GIC_DIST.base),
            "place GICv3 distributor",
        )?;
        // One contiguous region; KVM sizes it from the vCPU count at init.
        set_attr(
            gic,
            group,
            KVM_VGIC_V3_ADDR_TYPE_REDIST,
            addr_of(&GIC_REDIST_BASE),
            "place GICv3 redistributors",
        )?;
        match create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS) {
            Ok(its) => {
                set_attr(
                    &its,
                    group,
                    KVM_VGIC_ITS_ADDR_TYPE,
                    addr_of(&GIC_ITS.base),
                    "place GICv3 ITS",
                )?;
                Ok(Some(its))
            }
            Err(e) => {
                log::info!("no in-kernel ITS ({e}); guest gets no MSI controller");
                Ok(None)
            }
        }
    }

    /// Initialises the VGIC (then its ITS); all vCPUs must exist.
    pub fn init(&self) -> Result<()> {
        let (ctrl, init) = (KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT);
        set_attr(&self.gic, ctrl, init, 0, "initialise VGIC")?;
        if let Some(its) = &self.its {
            set_attr(its, ctrl, init, 0, "initialise ITS")?;
        }
        Ok(())
    }

    /// The GIC architecture in use.
    pub fn version(&self) -> GicVersion {
        self.version
    }

    /// Interrupt IDs the VGIC has, private ones included.
    pub fn nr_irqs(&self) -> u32 {
        self.nr_irqs
    }

    /// The GIC device, for snapshots (see vgic_state.rs).
    pub fn device(&self) -> &DeviceFd {
        &self.gic
    }

    /// The ITS device, if the guest has one.
    pub fn its(&self) -> Option<&DeviceFd> {
        self.its.as_ref()
    }

    /// The device tree view of this VGIC for `vcpus` vCPUs.
    pub fn fdt_gic(&self, vcpus: usize) -> fdt::Gic {
        self.version.fdt_gic(vcpus, self.its.is_some())
    }
}

fn no_gic(name: &str, error: kvm_ioctls::Error, other: &str) -> Error {
    Error::Config(format!(
        "this host's KVM cannot provide an in-kernel {name} ({error}); try --gic {other} or --gic auto"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdt_view_matches_the_memory_map() {
        let fdt::Gic::V3 { dist, redist, its } = GicVersion::V3.fdt_gic(4, true) else {
            panic!("expected GICv3");
        };
        assert_eq!(dist, GIC_DIST);
        assert_eq!(
            redist,
            fdt::Region::new(GIC_REDIST_BASE, 4 * GIC_REDIST_SIZE)
        );
        assert_eq!(its, Some(GIC_ITS));
        assert!(matches!(
            GicVersion::V3.fdt_gic(1, false),
            fdt::Gic::V3 { its: None, .. }
        ));
        let fdt::Gic::V2 { dist, cpu } = GicVersion::V2.fdt_gic(2, true) else {
            panic!("expected GICv2");
        };
        assert_eq!(dist, fdt::Region::new(GIC_DIST.base, 0x1000));
        assert_eq!(cpu, GICV2_CPU);
        assert_eq!(GicVersion::V2.max_vcpus(), 8);
    }

    #[test]
    fn only_a_gicv2_with_pci_gets_the_v2m_frame_and_its_spis() {
        assert!(GicVersion::V2.has_v2m(true));
        assert!(!GicVersion::V2.has_v2m(false));
        assert!(!GicVersion::V3.has_v2m(true));
        assert_eq!(vgic_nr_irqs(true), 192);
        assert_eq!(vgic_nr_irqs(false), 128, "as before PCI");
    }
}
