//! The JSON bodies of the API, shaped as Firecracker's (same field names,
//! optionality and defaults) plus tandem's extensions as optional fields.
//! Serde checks the shapes and refuses unknown fields; each struct's
//! `validate()` checks what serde cannot, each error one line.

mod balloon;
mod control;
mod devices;
mod machine;
mod snapshot;
mod vm_config;

use log::warn;
use serde_json::Value;

pub use balloon::{Balloon, BalloonStatistics, BalloonStatsUpdate, BalloonUpdate, MAX_BALLOON_MIB};
pub use control::{
    Action, InstanceActionInfo, InstanceInfo, InstanceState, Logger, Metrics, RequestedVmState,
    VersionInfo, VmStateRequest,
};
pub use devices::{Drive, EntropyDevice, NetworkInterface, PartialDrive, Vsock};
pub use machine::{BootSource, MachineConfig, MachineConfigUpdate, MAX_VCPUS};
pub use snapshot::{
    MigrateParams, NetworkOverride, SnapshotCreateParams, SnapshotLoadParams, SnapshotType,
    VsockOverride,
};
pub use vm_config::{FullVmConfiguration, UNSUPPORTED_CONFIG_KEYS};

/// Refuses a value outside `allowed`, naming the field and the choices.
pub(crate) fn check_choice(
    field: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<(), String> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(format!(
            "{field} {v:?} is not one of {}",
            allowed.join(", ")
        )),
        _ => Ok(()),
    }
}

/// Firecracker's id rule: non-empty, alphanumeric or `_`.
pub fn check_id(field: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if !id.chars().all(|c| c == '_' || c.is_alphanumeric()) {
        return Err(format!(
            "{field} {id:?} may hold only letters, digits and _"
        ));
    }
    Ok(())
}

/// A MAC address as six two-digit hex bytes separated by `:`.
pub fn check_mac(mac: &str) -> Result<(), String> {
    let bytes: Vec<&str> = mac.split(':').collect();
    let well_formed = bytes.len() == 6
        && bytes
            .iter()
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
    if !well_formed {
        return Err(format!(
            "guest_mac {mac:?} is not of the form aa:bb:cc:dd:ee:ff"
        ));
    }
    Ok(())
}

/// Rate limiters are accepted so Firecracker configurations load, but not
/// enforced: say so in the log rather than silently.
pub(crate) fn check_rate_limiter(
    owner: &str,
    field: &str,
    limiter: &Option<Value>,
) -> Result<(), String> {
    match limiter {
        None => Ok(()),
        Some(Value::Object(_)) => {
            warn!("{owner}: {field} accepted but not enforced by tandem yet");
            Ok(())
        }
        Some(_) => Err(format!("{owner}: {field} must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use ::devices::virtio::IoEngine;

    fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn machine_config_defaults_and_round_trip() {
        let config: MachineConfig = parse(json!({"vcpu_count": 2, "mem_size_mib": 256})).unwrap();
        assert!(!config.smt && !config.track_dirty_pages);
        assert_eq!(config.cpu_template, None);
        config.validate().unwrap();
        let full = MachineConfig {
            gic_version: Some("v3".into()),
            console: Some("virtio".into()),
            cpu_template: Some("None".into()),
            ..config
        };
        full.validate().unwrap();
        let back: MachineConfig = parse(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(back, full);
    }

    #[test]
    fn machine_config_refusals() {
        let base = MachineConfig::default();
        let zero = MachineConfig {
            vcpu_count: 0,
            ..base.clone()
        };
        assert!(zero.validate().unwrap_err().contains("vcpu_count 0"));
        let many = MachineConfig {
            vcpu_count: 33,
            ..base.clone()
        };
        assert!(many.validate().is_err());
        let no_mem = MachineConfig {
            mem_size_mib: 0,
            ..base.clone()
        };
        assert!(no_mem.validate().unwrap_err().contains("mem_size_mib"));
        let odd_smt = MachineConfig {
            vcpu_count: 3,
            smt: true,
            ..base.clone()
        };
        assert!(odd_smt.validate().is_err());
        let template = MachineConfig {
            cpu_template: Some("T2".into()),
            ..base.clone()
        };
        assert!(template
            .validate()
            .unwrap_err()
            .contains("not supported by tandem"));
        let huge = MachineConfig {
            huge_pages: Some("2M".into()),
            ..base.clone()
        };
        assert!(huge
            .validate()
            .unwrap_err()
            .contains("not supported by tandem"));
        let gic = MachineConfig {
            gic_version: Some("v4".into()),
            ..base.clone()
        };
        assert!(gic.validate().unwrap_err().contains("gic_version"));
        let console = MachineConfig {
            console: Some("tty".into()),
            ..base
        };
        assert!(console.validate().unwrap_err().contains("console"));
        let unknown = parse::<MachineConfig>(json!({"vcpu_count": 1, "mem_size_mib": 8, "x": 1}));
        assert!(unknown.unwrap_err().contains("unknown field `x`"));
        assert!(parse::<MachineConfig>(json!({"vcpu_count": 300, "mem_size_mib": 8})).is_err());
    }

    #[test]
    fn machine_config_update() {
        let update: MachineConfigUpdate = parse(json!({"mem_size_mib": 512})).unwrap();
        update.validate().unwrap();
        let next = MachineConfig::default().updated(&update);
        assert_eq!((next.vcpu_count, next.mem_size_mib), (1, 512));
        assert!(MachineConfigUpdate::default().validate().is_err());
        let zero: MachineConfigUpdate = parse(json!({"vcpu_count": 0})).unwrap();
        assert!(zero.validate().is_err());
    }

    #[test]
    fn drive_round_trip_and_refusals() {
        let body = json!({
            "drive_id": "rootfs", "path_on_host": "/img", "is_root_device": true,
            "cache_type": "Writeback", "io_engine": "Sync",
            "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 1}}
        });
        let drive: Drive = parse(body.clone()).unwrap();
        drive.validate().unwrap();
        assert!(!drive.read_only());
        assert_eq!(drive.engine(), IoEngine::Sync);
        assert_eq!(serde_json::to_value(&drive).unwrap(), body);
        // Async (io_uring) is accepted; absent means Sync.
        let mut body = body;
        body["io_engine"] = json!("Async");
        let drive: Drive = parse(body).unwrap();
        drive.validate().unwrap();
        assert_eq!(drive.engine(), IoEngine::Async);
        let plain = json!({"drive_id": "d1", "path_on_host": "/img", "is_root_device": false});
        assert_eq!(parse::<Drive>(plain).unwrap().engine(), IoEngine::Sync);

        let refused = |patch: Value| {
            let mut body =
                json!({"drive_id": "d1", "path_on_host": "/img", "is_root_device": false});
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            parse::<Drive>(body).and_then(|d| d.validate()).unwrap_err()
        };
        assert!(refused(json!({"io_engine": "Bogus"})).contains("io_engine"));
        assert!(refused(json!({"io_engine": "async"})).contains("io_engine"));
        assert!(refused(json!({"socket": "/vhost.sock"})).contains("vhost-user"));
        assert!(refused(json!({"cache_type": "None"})).contains("cache_type"));
        assert!(refused(json!({"drive_id": "a-b"})).contains("letters, digits and _"));
        assert!(refused(json!({"drive_id": ""})).contains("empty"));
        assert!(refused(json!({"path_on_host": ""})).contains("path_on_host"));
        assert!(refused(json!({"rate_limiter": 5})).contains("object"));
        assert!(refused(json!({"extra": 1})).contains("unknown field"));
    }

    #[test]
    fn partial_drive_needs_a_change() {
        let patch: PartialDrive = parse(json!({"drive_id": "d"})).unwrap();
        assert!(patch.validate().is_err());
        let patch: PartialDrive = parse(json!({"drive_id": "d", "path_on_host": "/x"})).unwrap();
        patch.validate().unwrap();
    }

    #[test]
    fn network_interface_mac_and_name() {
        let ok = |mac: &str| {
            let iface = NetworkInterface {
                iface_id: "eth0".into(),
                host_dev_name: "tap0".into(),
                guest_mac: Some(mac.into()),
                mtu: None,
                rx_rate_limiter: None,
                tx_rate_limiter: None,
            };
            iface.validate()
        };
        ok("06:00:AC:10:00:02").unwrap();
        for bad in [
            "06:00:ac:10:00",
            "06:00:ac:10:00:0g",
            "0600ac100002",
            "06:00:ac:10:00:002",
        ] {
            assert!(ok(bad).unwrap_err().contains("guest_mac"), "{bad}");
        }
        let long: NetworkInterface = parse(json!({
            "iface_id": "eth0", "host_dev_name": "a_very_long_tap_name"
        }))
        .unwrap();
        assert!(long.validate().is_err());
        let mtu: NetworkInterface =
            parse(json!({"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 9000})).unwrap();
        assert!(mtu
            .validate()
            .unwrap_err()
            .contains("not supported by tandem"));
    }

    #[test]
    fn logger_levels_are_case_insensitive() {
        let logger: Logger = parse(json!({"level": "wARNing", "show_level": true})).unwrap();
        assert_eq!(logger.level_filter(), Ok(log::LevelFilter::Warn));
        assert_eq!(Logger::default().level_filter(), Ok(log::LevelFilter::Info));
        let bad: Logger = parse(json!({"level": "Loud"})).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn actions_states_and_info() {
        let action: InstanceActionInfo = parse(json!({"action_type": "InstanceStart"})).unwrap();
        assert_eq!(action.action_type, Action::InstanceStart);
        assert!(parse::<InstanceActionInfo>(json!({"action_type": "Reboot"})).is_err());
        let state: VmStateRequest = parse(json!({"state": "Paused"})).unwrap();
        assert_eq!(state.state, RequestedVmState::Paused);
        let info = InstanceInfo {
            app_name: "tandem".into(),
            id: "vm1".into(),
            state: InstanceState::NotStarted,
            vmm_version: "0.1.0".into(),
        };
        assert_eq!(serde_json::to_value(&info).unwrap()["state"], "Not started");
    }
}
