//! Firecracker's JSON shapes to tandem's one VM description and back: what
//! a `PUT` changes in [`VmResources`], and what `GET /vm/config` and
//! `GET /machine-config` report from it. The shapes were validated by
//! routes.rs; what is checked here is what depends on the host (SMT and
//! the GIC choice on an architecture that lacks them).

use std::path::PathBuf;

use arch::{Arch, GicChoice, Host};
use devices::virtio::{parse_mac, BlockConfig, IoEngine, NetConfig};

use super::models::{
    Balloon, BootSource, Drive, EntropyDevice, FullVmConfiguration, MachineConfig,
    NetworkInterface, Vsock,
};
use crate::resources::{self, ConsoleKind, NetInterface, Transport, VmResources};

/// Firecracker's memory size before any `PUT /machine-config`.
pub const FIRECRACKER_DEFAULT_MEMORY_MIB: u64 = 128;

/// A fresh VM description with Firecracker's defaults (1 vCPU, 128 MiB).
pub fn firecracker_defaults() -> VmResources {
    VmResources {
        memory_size: FIRECRACKER_DEFAULT_MEMORY_MIB << 20,
        ..VmResources::default()
    }
}

/// Applies `PUT /machine-config` (or a PATCH merged into the current one).
pub fn apply_machine_config(r: &mut VmResources, config: &MachineConfig) -> Result<(), String> {
    // vCPUs are single-threaded cores on both back ends (and Firecracker
    // has no SMT on aarch64 at all).
    if config.smt {
        return Err(format!(
            "smt: tandem presents single-threaded cores on {} (SMT is not modelled yet)",
            Host::NAME
        ));
    }
    let gic = match config.gic_version.as_deref() {
        None | Some("auto") => GicChoice::Auto,
        Some("v2") => GicChoice::V2,
        Some(_) => GicChoice::V3,
    };
    if gic != GicChoice::Auto && !Host::HAS_GIC_CHOICE {
        return Err(format!("gic_version does not apply to {}", Host::NAME));
    }
    if config.legacy_pit == Some(true) && !Host::HAS_LEGACY_PIT {
        return Err(format!("legacy_pit: {} has no PIT", Host::NAME));
    }
    if config.pmu == Some(true) && !Host::HAS_PMU_CHOICE {
        return Err(format!(
            "pmu: a {} guest gets the PMU KVM lists in its CPUID",
            Host::NAME
        ));
    }
    r.vcpus = config.vcpu_count;
    r.memory_size = config.mem_size_mib << 20;
    r.smt = config.smt;
    r.track_dirty_pages = config.track_dirty_pages;
    r.gic = gic;
    r.legacy_pit = config.legacy_pit.unwrap_or(false);
    r.pmu = config.pmu.unwrap_or(false);
    if let Some(transport) = config.transport.as_deref() {
        r.transport = match transport {
            "pci" => Transport::Pci,
            _ => Transport::Mmio,
        };
    }
    if let Some(console) = config.console.as_deref() {
        r.console = match console {
            "virtio" => ConsoleKind::Virtio,
            _ => ConsoleKind::Serial,
        };
    }
    Ok(())
}

/// The machine configuration `r` describes, in Firecracker's shape.
pub fn machine_config(r: &VmResources) -> MachineConfig {
    MachineConfig {
        vcpu_count: r.vcpus,
        mem_size_mib: r.memory_size >> 20,
        smt: r.smt,
        track_dirty_pages: r.track_dirty_pages,
        gic_version: Some(
            match r.gic {
                GicChoice::Auto => "auto",
                GicChoice::V2 => "v2",
                GicChoice::V3 => "v3",
            }
            .into(),
        ),
        console: Some(
            match r.console {
                ConsoleKind::Serial => "serial",
                ConsoleKind::Virtio => "virtio",
            }
            .into(),
        ),
        legacy_pit: Host::HAS_LEGACY_PIT.then_some(r.legacy_pit),
        pmu: Host::HAS_PMU_CHOICE.then_some(r.pmu),
        transport: Some(
            match r.transport {
                Transport::Mmio => "mmio",
                Transport::Pci => "pci",
            }
            .into(),
        ),
        ..MachineConfig::default()
    }
}

/// Applies `PUT /boot-source`.
pub fn apply_boot_source(r: &mut VmResources, boot: &BootSource) {
    r.boot = Some(resources::BootSource {
        kernel: PathBuf::from(&boot.kernel_image_path),
        initrd: boot.initrd_path.as_ref().map(PathBuf::from),
        cmdline: boot.boot_args.clone(),
    });
}

/// Applies `PUT /drives/{id}`.
pub fn apply_drive(r: &mut VmResources, drive: &Drive) -> Result<(), String> {
    r.set_drive(resources::Drive {
        id: drive.drive_id.clone(),
        is_root: drive.is_root_device,
        block: BlockConfig {
            path: PathBuf::from(&drive.path_on_host),
            readonly: drive.read_only(),
            id: Some(drive.drive_id.clone()),
            io_engine: drive.engine(),
        },
    })
    .map_err(|e| e.to_string())
}

/// Applies `PUT /network-interfaces/{id}`.
pub fn apply_network_interface(
    r: &mut VmResources,
    iface: &NetworkInterface,
) -> Result<(), String> {
    let mac = match &iface.guest_mac {
        Some(text) => Some(parse_mac(text).ok_or(format!("'{text}' is not a MAC address"))?),
        None => None,
    };
    r.set_net(NetInterface {
        id: iface.iface_id.clone(),
        net: NetConfig {
            tap: iface.host_dev_name.clone(),
            mac,
        },
    })
    .map_err(|e| e.to_string())
}

/// Applies `PUT /vsock` (a second PUT replaces the device, as in
/// Firecracker).
pub fn apply_vsock(r: &mut VmResources, vsock: &Vsock) {
    r.vsock = Some(resources::VsockDevice {
        id: vsock.vsock_id.clone().unwrap_or_else(|| "vsock".into()),
        guest_cid: vsock.guest_cid,
        uds_path: PathBuf::from(&vsock.uds_path),
    });
}

/// Refuses a balloon target larger than the guest's RAM, as Firecracker
/// does.
pub fn check_balloon_size(r: &VmResources, amount_mib: u32) -> Result<(), String> {
    let ram_mib = r.memory_size >> 20;
    if u64::from(amount_mib) > ram_mib {
        return Err(format!(
            "amount_mib {amount_mib} is more than the guest's {ram_mib} MiB of RAM"
        ));
    }
    Ok(())
}

/// Applies `PUT /balloon` (a second PUT replaces the device).
pub fn apply_balloon(r: &mut VmResources, balloon: &Balloon) -> Result<(), String> {
    check_balloon_size(r, balloon.amount_mib)?;
    r.balloon = Some(resources::BalloonDevice {
        amount_mib: balloon.amount_mib,
        deflate_on_oom: balloon.deflate_on_oom,
        free_page_reporting: balloon.free_page_reporting,
        stats_interval_s: u16::try_from(balloon.stats_polling_interval_s)
            .map_err(|e| e.to_string())?,
    });
    Ok(())
}

/// The balloon's configuration in the API's shape.
pub fn balloon_config(balloon: &resources::BalloonDevice) -> Balloon {
    Balloon {
        amount_mib: balloon.amount_mib,
        deflate_on_oom: balloon.deflate_on_oom,
        stats_polling_interval_s: balloon.stats_interval_s.into(),
        free_page_hinting: false,
        free_page_reporting: balloon.free_page_reporting,
    }
}

/// Applies a whole `--config-file` to a fresh description.
pub fn from_config_file(config: &FullVmConfiguration) -> Result<VmResources, String> {
    let mut r = firecracker_defaults();
    if let Some(machine) = &config.machine_config {
        apply_machine_config(&mut r, machine)?;
    }
    if let Some(boot) = &config.boot_source {
        apply_boot_source(&mut r, boot);
    }
    for drive in &config.drives {
        apply_drive(&mut r, drive)?;
    }
    for iface in &config.network_interfaces {
        apply_network_interface(&mut r, iface)?;
    }
    r.rng = config.entropy.is_some();
    if let Some(vsock) = &config.vsock {
        apply_vsock(&mut r, vsock);
    }
    if let Some(balloon) = &config.balloon {
        apply_balloon(&mut r, balloon)?;
    }
    Ok(r)
}

/// `GET /vm/config`: the description in Firecracker's shape.
pub fn full_config(r: &VmResources) -> FullVmConfiguration {
    let boot_source = r.boot.as_ref().map(|boot| BootSource {
        kernel_image_path: boot.kernel.display().to_string(),
        initrd_path: boot.initrd.as_ref().map(|p| p.display().to_string()),
        boot_args: boot.cmdline.clone(),
    });
    let drives = r
        .drives
        .iter()
        .map(|d| Drive {
            drive_id: d.id.clone(),
            path_on_host: d.block.path.display().to_string(),
            is_root_device: d.is_root,
            is_read_only: Some(d.block.readonly),
            partuuid: None,
            cache_type: None,
            rate_limiter: None,
            // Sync stays implicit, as it was before Async existed.
            io_engine: (d.block.io_engine == IoEngine::Async).then(|| "Async".to_string()),
            socket: None,
        })
        .collect();
    let network_interfaces = r
        .nets
        .iter()
        .map(|n| NetworkInterface {
            iface_id: n.id.clone(),
            host_dev_name: n.net.tap.clone(),
            guest_mac: n.net.mac.map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        })
        .collect();
    FullVmConfiguration {
        boot_source,
        drives,
        machine_config: Some(machine_config(r)),
        network_interfaces,
        entropy: r.rng.then(EntropyDevice::default),
        vsock: r.vsock.as_ref().map(|v| Vsock {
            vsock_id: Some(v.id.clone()),
            guest_cid: v.guest_cid,
            uds_path: v.uds_path.display().to_string(),
        }),
        balloon: r.balloon.as_ref().map(balloon_config),
        logger: None,
        metrics: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_and_get_vm_config_agree() {
        let json = br#"{
            "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0"},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 256},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/r.img",
                        "is_root_device": true, "is_read_only": true},
                       {"drive_id": "data", "path_on_host": "/d.img",
                        "is_root_device": false, "io_engine": "Async"}],
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                    "guest_mac": "06:00:ac:10:00:02"}],
            "entropy": {},
            "vsock": {"guest_cid": 42, "uds_path": "/tmp/v.sock"},
            "balloon": {"amount_mib": 64, "deflate_on_oom": true}
        }"#;
        let config = FullVmConfiguration::from_json(json).unwrap();
        let r = from_config_file(&config).unwrap();
        assert_eq!((r.vcpus, r.memory_size), (2, 256 << 20));
        assert_eq!(r.cmdline(), "console=ttyS0 root=/dev/vda ro");
        assert_eq!(r.nets[0].net.mac, Some([6, 0, 0xac, 0x10, 0, 2]));
        assert!(r.rng);
        let vsock = r.vsock.as_ref().unwrap();
        assert_eq!(
            (vsock.guest_cid, vsock.uds_path.to_str()),
            (42, Some("/tmp/v.sock"))
        );
        let back = full_config(&r);
        assert_eq!(back.vsock.as_ref().unwrap().guest_cid, 42);
        assert_eq!(back.balloon.as_ref().map(|b| b.amount_mib), Some(64));
        let mut too_big = back.balloon.clone().unwrap();
        too_big.amount_mib = 257;
        let mut r2 = r.clone();
        assert!(apply_balloon(&mut r2, &too_big)
            .unwrap_err()
            .contains("256 MiB"));
        assert_eq!(back.drives[0].path_on_host, "/r.img");
        // io_engine is carried (a snapshot's configuration is this one);
        // a drive without it, as in snapshots from before Async, is Sync.
        let engines: Vec<_> = r.drives.iter().map(|d| d.block.io_engine).collect();
        assert_eq!(engines, [IoEngine::Sync, IoEngine::Async]);
        assert_eq!(back.drives[0].io_engine, None);
        assert_eq!(back.drives[1].io_engine.as_deref(), Some("Async"));
        assert_eq!(
            back.network_interfaces[0].guest_mac.as_deref(),
            Some("06:00:ac:10:00:02")
        );
        assert_eq!(back.machine_config.as_ref().unwrap().mem_size_mib, 256);
        assert_eq!(from_config_file(&back).unwrap(), r);
    }

    #[test]
    fn host_dependent_choices_are_checked_here() {
        let mut r = firecracker_defaults();
        let smt = MachineConfig {
            smt: true,
            ..MachineConfig::default()
        };
        assert!(apply_machine_config(&mut r, &smt)
            .unwrap_err()
            .starts_with("smt: "));
        let gic = MachineConfig {
            gic_version: Some("v2".into()),
            ..MachineConfig::default()
        };
        assert_eq!(
            apply_machine_config(&mut r, &gic).is_ok(),
            Host::HAS_GIC_CHOICE
        );
    }

    #[test]
    fn pmu_is_an_aarch64_extension_off_by_default() {
        let mut r = firecracker_defaults();
        assert!(!r.pmu);
        assert_eq!(
            machine_config(&r).pmu,
            Host::HAS_PMU_CHOICE.then_some(false)
        );
        let pmu = MachineConfig {
            pmu: Some(true),
            ..MachineConfig::default()
        };
        match apply_machine_config(&mut r, &pmu) {
            Ok(()) => assert!(Host::HAS_PMU_CHOICE && r.pmu),
            Err(e) => assert!(!Host::HAS_PMU_CHOICE && e.contains("CPUID"), "{e}"),
        }
    }

    #[test]
    fn legacy_pit_is_an_x86_extension_off_by_default() {
        let mut r = firecracker_defaults();
        assert!(!r.legacy_pit);
        let shown = machine_config(&r).legacy_pit;
        assert_eq!(shown, Host::HAS_LEGACY_PIT.then_some(false));
        let pit = MachineConfig {
            legacy_pit: Some(true),
            ..MachineConfig::default()
        };
        match apply_machine_config(&mut r, &pit) {
            Ok(()) => assert!(Host::HAS_LEGACY_PIT && r.legacy_pit),
            Err(e) => assert!(!Host::HAS_LEGACY_PIT && e.contains("has no PIT"), "{e}"),
        }
    }

    #[test]
    fn transport_is_shown_defaults_to_mmio_and_is_kept_when_omitted() {
        let mut r = firecracker_defaults();
        assert_eq!(machine_config(&r).transport.as_deref(), Some("mmio"));
        let pci = MachineConfig {
            transport: Some("pci".into()),
            ..MachineConfig::default()
        };
        apply_machine_config(&mut r, &pci).unwrap();
        assert_eq!(r.transport, Transport::Pci);
        apply_machine_config(&mut r, &MachineConfig::default()).unwrap();
        assert_eq!(r.transport, Transport::Pci, "omitted: unchanged");
        assert_eq!(machine_config(&r).transport.as_deref(), Some("pci"));
        let bad = MachineConfig {
            transport: Some("isa".into()),
            ..MachineConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("transport"));
    }
}
