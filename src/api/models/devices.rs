//! Device bodies: `PUT`/`PATCH /drives/{id}`, `PUT /network-interfaces/{id}`
//! `PUT /entropy` and `PUT /vsock`. Features of Firecracker's that tandem lacks (vhost-user
//! drives, io_uring, MTU) are refused by name; rate limiters are accepted
//! and logged as not enforced.

use devices::virtio::IoEngine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{check_choice, check_id, check_mac, check_rate_limiter};

/// `PUT /drives/{drive_id}`: a virtio-blk drive backed by a host file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// Drive id: alphanumeric and `_`.
    pub drive_id: String,
    /// Host path of the backing file. Optional in Firecracker's schema only
    /// for vhost-user drives, which tandem refuses: `validate` requires it.
    #[serde(default)]
    pub path_on_host: String,
    /// Whether this drive holds the root file system.
    pub is_root_device: bool,
    /// Read-only drive (absent means false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Partition UUID of the root partition (root device only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// "Unsafe" (default) or "Writeback".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<String>,
    /// Accepted for compatibility, not enforced yet (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<Value>,
    /// "Sync" (default) or "Async" (io_uring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<String>,
    /// vhost-user-blk socket: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

impl Drive {
    /// The engine `io_engine` names (checked by [`Drive::validate`]).
    pub fn engine(&self) -> IoEngine {
        match self.io_engine.as_deref() {
            Some("Async") => IoEngine::Async,
            _ => IoEngine::Sync,
        }
    }

    /// Whether the guest may only read this drive.
    pub fn read_only(&self) -> bool {
        self.is_read_only.unwrap_or(false)
    }

    /// Checks the id and refuses what tandem does not implement, by name.
    pub fn validate(&self) -> Result<(), String> {
        check_id("drive_id", &self.drive_id)?;
        if self.socket.is_some() {
            return Err(format!(
                "drive {}: vhost-user drives (socket) are not supported by tandem yet",
                self.drive_id
            ));
        }
        if self.path_on_host.is_empty() {
            return Err(format!("drive {}: path_on_host is required", self.drive_id));
        }
        check_choice(
            "cache_type",
            self.cache_type.as_deref(),
            &["Unsafe", "Writeback"],
        )?;
        check_choice("io_engine", self.io_engine.as_deref(), &["Sync", "Async"])?;
        check_rate_limiter(&self.drive_id, "rate_limiter", &self.rate_limiter)
    }
}

/// `PATCH /drives/{drive_id}`: swap the backing file after boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    /// Drive id, as in the path.
    pub drive_id: String,
    /// New host path of the backing file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// Accepted for compatibility, not enforced yet (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<Value>,
}

impl PartialDrive {
    /// Checks the id; a PATCH must change something.
    pub fn validate(&self) -> Result<(), String> {
        check_id("drive_id", &self.drive_id)?;
        if self.path_on_host.is_none() && self.rate_limiter.is_none() {
            return Err("empty PATCH of a drive: give path_on_host or rate_limiter".into());
        }
        if self.path_on_host.as_deref() == Some("") {
            return Err(format!("drive {}: path_on_host is empty", self.drive_id));
        }
        check_rate_limiter(&self.drive_id, "rate_limiter", &self.rate_limiter)
    }
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device on a host TAP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// Interface id: alphanumeric and `_`.
    pub iface_id: String,
    /// Name of the host TAP device.
    pub host_dev_name: String,
    /// Guest MAC, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// MTU advertised to the guest: in Firecracker's schema, refused by tandem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Accepted for compatibility, not enforced yet (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<Value>,
    /// Accepted for compatibility, not enforced yet (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<Value>,
}

impl NetworkInterface {
    /// Checks the id, the TAP name and the MAC.
    pub fn validate(&self) -> Result<(), String> {
        check_id("iface_id", &self.iface_id)?;
        // IFNAMSIZ is 16 with the terminating NUL.
        if self.host_dev_name.is_empty() || self.host_dev_name.len() > 15 {
            return Err(format!(
                "host_dev_name {:?} must be 1 to 15 bytes long",
                self.host_dev_name
            ));
        }
        if let Some(mac) = &self.guest_mac {
            check_mac(mac)?;
        }
        if self.mtu.is_some() {
            return Err(format!(
                "network interface {}: mtu is not supported by tandem yet",
                self.iface_id
            ));
        }
        check_rate_limiter(&self.iface_id, "rx_rate_limiter", &self.rx_rate_limiter)?;
        check_rate_limiter(&self.iface_id, "tx_rate_limiter", &self.tx_rate_limiter)
    }
}

/// `PUT /entropy`: a virtio-rng device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntropyDevice {
    /// Accepted for compatibility, not enforced yet (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<Value>,
}

impl EntropyDevice {
    /// Checks the rate limiter's shape.
    pub fn validate(&self) -> Result<(), String> {
        check_rate_limiter("entropy", "rate_limiter", &self.rate_limiter)
    }
}

/// `PUT /vsock`: a virtio-vsock device whose host side is Unix sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Informative id (Firecracker keeps it; one device per VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_id: Option<String>,
    /// The guest's CID, 3 or more.
    pub guest_cid: u32,
    /// Host programs connect here; guest connections to port P reach
    /// `<uds_path>_P`.
    pub uds_path: String,
}

impl Vsock {
    /// Checks the CID, the path and the id.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.vsock_id {
            check_id("vsock_id", id)?;
        }
        if self.guest_cid < 3 {
            return Err(format!(
                "guest_cid {} is reserved: use 3 or more",
                self.guest_cid
            ));
        }
        if self.uds_path.is_empty() {
            return Err("uds_path is required".into());
        }
        Ok(())
    }
}
