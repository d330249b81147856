//! The whole VM configuration in one JSON object: what `GET /vm/config`
//! answers and what `--config-file` holds, with Firecracker's kebab-case
//! keys. Keys of Firecracker's that tandem does not implement yet are
//! refused by name before serde sees the rest.

use std::collections::HashSet;

use serde::{de::Error as _, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{
    Balloon, BootSource, Drive, EntropyDevice, Logger, MachineConfig, Metrics, NetworkInterface,
    Vsock,
};

/// Top-level keys of Firecracker's configuration that tandem refuses with
/// "not supported by tandem yet" rather than as unknown.
pub const UNSUPPORTED_CONFIG_KEYS: [&str; 5] = [
    "cpu-config",
    "memory-hotplug",
    "mmds-config",
    "pmem",
    "serial",
];

/// Every configured resource of one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FullVmConfiguration {
    /// Kernel, initrd, command line.
    #[serde(rename = "boot-source", skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    /// Block devices, in the order they were added.
    pub drives: Vec<Drive>,
    /// vCPUs and memory; absent means Firecracker's defaults.
    #[serde(rename = "machine-config", skip_serializing_if = "Option::is_none")]
    pub machine_config: Option<MachineConfig>,
    /// Net devices, in the order they were added.
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The virtio-rng device, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy: Option<EntropyDevice>,
    /// The virtio-vsock device, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    /// The virtio-balloon device, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balloon: Option<Balloon>,
    /// Logger settings, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// Metrics settings, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// The keys serde reads; a separate type so that the public one can check
/// unsupported keys first (serde cannot name them in its own error).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SupportedKeys {
    boot_source: Option<BootSource>,
    #[serde(default)]
    drives: Vec<Drive>,
    machine_config: Option<MachineConfig>,
    #[serde(default)]
    network_interfaces: Vec<NetworkInterface>,
    entropy: Option<EntropyDevice>,
    vsock: Option<Vsock>,
    balloon: Option<Balloon>,
    logger: Option<Logger>,
    metrics: Option<Metrics>,
}

impl<'de> Deserialize<'de> for FullVmConfiguration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let object = Map::<String, Value>::deserialize(deserializer)?;
        if let Some(key) = UNSUPPORTED_CONFIG_KEYS
            .iter()
            .find(|key| object.contains_key(**key))
        {
            return Err(D::Error::custom(format!(
                "\"{key}\" is not supported by tandem yet"
            )));
        }
        let keys: SupportedKeys =
            serde_json::from_value(Value::Object(object)).map_err(D::Error::custom)?;
        Ok(FullVmConfiguration {
            boot_source: keys.boot_source,
            drives: keys.drives,
            machine_config: keys.machine_config,
            network_interfaces: keys.network_interfaces,
            entropy: keys.entropy,
            vsock: keys.vsock,
            balloon: keys.balloon,
            logger: keys.logger,
            metrics: keys.metrics,
        })
    }
}

impl FullVmConfiguration {
    /// Checks a configuration meant to boot (a `--config-file`): every part,
    /// a boot source, unique ids and at most one root drive.
    pub fn validate(&self) -> Result<(), String> {
        self.boot_source
            .as_ref()
            .ok_or("\"boot-source\" is required")?
            .validate()?;
        if let Some(machine) = &self.machine_config {
            machine.validate()?;
        }
        let mut drive_ids = HashSet::new();
        for drive in &self.drives {
            drive.validate()?;
            if !drive_ids.insert(drive.drive_id.as_str()) {
                return Err(format!("drive_id {:?} appears twice", drive.drive_id));
            }
        }
        if self.drives.iter().filter(|d| d.is_root_device).count() > 1 {
            return Err("more than one drive has is_root_device true".into());
        }
        let mut iface_ids = HashSet::new();
        for iface in &self.network_interfaces {
            iface.validate()?;
            if !iface_ids.insert(iface.iface_id.as_str()) {
                return Err(format!("iface_id {:?} appears twice", iface.iface_id));
            }
        }
        if let Some(entropy) = &self.entropy {
            entropy.validate()?;
        }
        if let Some(vsock) = &self.vsock {
            vsock.validate()?;
        }
        if let Some(balloon) = &self.balloon {
            balloon.validate()?;
        }
        if let Some(logger) = &self.logger {
            logger.validate()?;
        }
        if let Some(metrics) = &self.metrics {
            metrics.validate()?;
        }
        Ok(())
    }

    /// Parses and validates a `--config-file`'s contents.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let config: FullVmConfiguration =
            serde_json::from_slice(bytes).map_err(|e| format!("VM configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config_file() -> Value {
        json!({
            "boot-source": {"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"},
            "drives": [{"drive_id": "rootfs", "path_on_host": "/rootfs.ext4",
                        "is_root_device": true, "is_read_only": false}],
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": false,
                               "track_dirty_pages": false, "gic_version": "auto"},
            "network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0",
                                    "guest_mac": "06:00:ac:10:00:02"}],
            "entropy": {},
            "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock"},
            "logger": {"level": "Debug"},
            "metrics": {"metrics_path": "/tmp/metrics"}
        })
    }

    #[test]
    fn config_file_round_trips() {
        let text = config_file().to_string();
        let config = FullVmConfiguration::from_json(text.as_bytes()).unwrap();
        assert_eq!(config.drives.len(), 1);
        assert_eq!(serde_json::to_value(&config).unwrap(), config_file());
    }

    #[test]
    fn unsupported_keys_are_named() {
        for key in UNSUPPORTED_CONFIG_KEYS {
            let mut file = config_file();
            file[key] = json!({});
            let err = FullVmConfiguration::from_json(file.to_string().as_bytes()).unwrap_err();
            assert!(
                err.contains(&format!("\"{key}\" is not supported by tandem yet")),
                "{err}"
            );
        }
        let mut file = config_file();
        file["gizmo"] = json!(1);
        let err = FullVmConfiguration::from_json(file.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("unknown field `gizmo`"), "{err}");
    }

    #[test]
    fn config_file_checks_the_whole() {
        let check = |edit: &dyn Fn(&mut Value)| {
            let mut file = config_file();
            edit(&mut file);
            FullVmConfiguration::from_json(file.to_string().as_bytes()).unwrap_err()
        };
        let err = check(&|f| {
            f.as_object_mut().unwrap().remove("boot-source");
        });
        assert!(err.contains("boot-source"), "{err}");
        let err = check(&|f| {
            let drive = f["drives"][0].clone();
            f["drives"].as_array_mut().unwrap().push(drive);
        });
        assert!(err.contains("appears twice"), "{err}");
        let err = check(&|f| f["machine-config"]["vcpu_count"] = json!(0));
        assert!(err.contains("vcpu_count"), "{err}");
        let err = check(&|f| f["network-interfaces"][0]["guest_mac"] = json!("nope"));
        assert!(err.contains("guest_mac"), "{err}");
        let empty = FullVmConfiguration::default();
        let shown = serde_json::to_value(&empty).unwrap();
        assert_eq!(shown, json!({"drives": [], "network-interfaces": []}));
    }
}
