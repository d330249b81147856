//! `PUT /snapshot/create` and `PUT /snapshot/load` bodies, as Firecracker
//! has them. Fields tandem does not act on yet (a UFFD memory backend,
//! overrides, realtime clock) are accepted by serde and refused by
//! `validate()` with one line, so a client never believes it got what it
//! did not.

use serde::{Deserialize, Serialize};

/// Full (all of RAM) or Diff (pages written since the last snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType {
    /// All of guest RAM.
    #[default]
    Full,
    /// Pages dirtied since the previous snapshot.
    Diff,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreateParams {
    /// Where the VM state goes.
    pub snapshot_path: String,
    /// Where guest RAM goes.
    pub mem_file_path: String,
    /// Full by default.
    #[serde(default)]
    pub snapshot_type: SnapshotType,
}

impl SnapshotCreateParams {
    /// Refuses what tandem cannot do yet.
    pub fn validate(&self) -> Result<(), String> {
        non_empty("snapshot_path", &self.snapshot_path)?;
        non_empty("mem_file_path", &self.mem_file_path)?;
        Ok(())
    }
}

/// `PUT /migrate` (a tandem extension): where the guest goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateParams {
    /// Where a tandem started with `--migrate-listen` listens: a Unix
    /// socket (PATH or unix:PATH) or tcp:IP:PORT.
    pub destination: String,
}

impl MigrateParams {
    /// Refuses an empty or malformed destination.
    pub fn validate(&self) -> Result<(), String> {
        non_empty("destination", &self.destination)?;
        self.endpoint().map(drop)
    }

    /// The destination, parsed.
    pub fn endpoint(&self) -> Result<crate::migration::Endpoint, String> {
        self.destination.parse()
    }
}

/// How guest RAM is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemoryBackendType {
    /// Mapped from a file.
    File,
    /// Served by a userfaultfd handler.
    Uffd,
}

/// `mem_backend` of a load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackend {
    /// File or Uffd.
    pub backend_type: MemoryBackendType,
    /// The memory file (or the UFFD handler's socket).
    pub backend_path: String,
}

/// `PUT /snapshot/load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoadParams {
    /// The VM state file.
    pub snapshot_path: String,
    /// How RAM is loaded (or the deprecated `mem_file_path`).
    pub mem_backend: Option<MemoryBackend>,
    /// Deprecated form of `mem_backend` with a File backend.
    pub mem_file_path: Option<String>,
    /// Run the VM once loaded (else it stays Paused).
    #[serde(default)]
    pub resume_vm: bool,
    /// Dirty-page tracking for later diff snapshots (on as well if the
    /// snapshot's machine configuration had it).
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Deprecated name of `track_dirty_pages`.
    #[serde(default)]
    pub enable_diff_snapshots: bool,
    /// New TAP names per interface.
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// A new vsock socket path.
    pub vsock_override: Option<VsockOverride>,
    /// Advance kvmclock by the wall-clock time since the snapshot.
    #[serde(default)]
    pub clock_realtime: bool,
}

/// A loaded snapshot's interface on another TAP than it was saved with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface, as the snapshot's configuration names it.
    pub iface_id: String,
    /// The TAP it uses from now on.
    pub host_dev_name: String,
}

/// A loaded snapshot's vsock device on another host socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// The Unix socket it listens on from now on.
    pub uds_path: String,
}

impl SnapshotLoadParams {
    /// The memory file: exactly one of the two forms, a File backend.
    pub fn memory_file(&self) -> Result<&str, String> {
        match (&self.mem_backend, &self.mem_file_path) {
            (Some(_), Some(_)) => Err("give mem_backend or mem_file_path, not both".into()),
            (None, None) => Err("mem_backend is required".into()),
            (None, Some(path)) => Ok(path),
            (Some(backend), None) => match backend.backend_type {
                MemoryBackendType::File => Ok(&backend.backend_path),
                MemoryBackendType::Uffd => {
                    Err("the Uffd memory backend is not supported by tandem yet".into())
                }
            },
        }
    }

    /// Refuses what tandem cannot do yet.
    pub fn validate(&self) -> Result<(), String> {
        non_empty("snapshot_path", &self.snapshot_path)?;
        non_empty("the memory file path", self.memory_file()?)?;
        for (i, o) in self.network_overrides.iter().enumerate() {
            non_empty("network_overrides: iface_id", &o.iface_id)?;
            non_empty("network_overrides: host_dev_name", &o.host_dev_name)?;
            if self.network_overrides[..i]
                .iter()
                .any(|earlier| earlier.iface_id == o.iface_id)
            {
                return Err(format!(
                    "network_overrides: {:?} is given twice",
                    o.iface_id
                ));
            }
        }
        if let Some(vsock) = &self.vsock_override {
            non_empty("vsock_override: uds_path", &vsock.uds_path)?;
        }
        match self.clock_realtime {
            true => Err("clock_realtime is not supported by tandem yet".into()),
            false => Ok(()),
        }
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), String> {
    match value.is_empty() {
        true => Err(format!("{field} must not be empty")),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<SnapshotLoadParams, String> {
        let params: SnapshotLoadParams = serde_json::from_str(body).map_err(|e| e.to_string())?;
        params.validate().map(|()| params)
    }

    #[test]
    fn load_takes_either_memory_form_and_refuses_what_tandem_lacks() {
        let ok = load(r#"{"snapshot_path":"s","mem_backend":{"backend_type":"File","backend_path":"m"},"resume_vm":true}"#).unwrap();
        assert_eq!(ok.memory_file(), Ok("m"));
        assert!(ok.resume_vm);
        let tracked = load(r#"{"snapshot_path":"s","mem_file_path":"m","track_dirty_pages":true}"#);
        assert!(tracked.unwrap().track_dirty_pages);
        assert_eq!(
            load(r#"{"snapshot_path":"s","mem_file_path":"m"}"#)
                .unwrap()
                .memory_file(),
            Ok("m")
        );
        for (body, words) in [
            (r#"{"snapshot_path":"s"}"#, "mem_backend is required"),
            (
                r#"{"snapshot_path":"s","mem_file_path":"m","mem_backend":{"backend_type":"File","backend_path":"m"}}"#,
                "not both",
            ),
            (
                r#"{"snapshot_path":"s","mem_backend":{"backend_type":"Uffd","backend_path":"u"}}"#,
                "Uffd",
            ),
            (
                r#"{"snapshot_path":"s","mem_file_path":"m","clock_realtime":true}"#,
                "clock_realtime",
            ),
            (
                r#"{"snapshot_path":"","mem_file_path":"m"}"#,
                "snapshot_path must not be empty",
            ),
            (
                r#"{"snapshot_path":"s","mem_file_path":"m","bogus":1}"#,
                "unknown field",
            ),
            (
                r#"{"snapshot_path":"s","mem_file_path":"m","network_overrides":[{"iface_id":"eth0"}]}"#,
                "missing field `host_dev_name`",
            ),
            (
                r#"{"snapshot_path":"s","mem_file_path":"m","network_overrides":[{"iface_id":"eth0","host_dev_name":""}]}"#,
                "host_dev_name must not be empty",
            ),
            (
                r#"{"snapshot_path":"s","mem_file_path":"m","network_overrides":[{"iface_id":"a","host_dev_name":"t1"},{"iface_id":"a","host_dev_name":"t2"}]}"#,
                "\"a\" is given twice",
            ),
        ] {
            let err = load(body).unwrap_err();
            assert!(err.contains(words), "{body}: {err}");
        }
    }

    #[test]
    fn network_overrides_name_new_taps() {
        let params = load(r#"{"snapshot_path":"s","mem_file_path":"m","network_overrides":[{"iface_id":"eth0","host_dev_name":"tap7"}]}"#).unwrap();
        let tap7 = NetworkOverride {
            iface_id: "eth0".into(),
            host_dev_name: "tap7".into(),
        };
        assert_eq!(params.network_overrides, [tap7]);
        let params = load(
            r#"{"snapshot_path":"s","mem_file_path":"m","vsock_override":{"uds_path":"/v2"}}"#,
        )
        .unwrap();
        assert_eq!(params.vsock_override.unwrap().uds_path, "/v2");
        let empty = r#"{"snapshot_path":"s","mem_file_path":"m","vsock_override":{"uds_path":""}}"#;
        assert!(load(empty)
            .unwrap_err()
            .contains("uds_path must not be empty"));
    }

    #[test]
    fn create_is_full_by_default_or_diff() {
        let full: SnapshotCreateParams =
            serde_json::from_str(r#"{"snapshot_path":"s","mem_file_path":"m"}"#).unwrap();
        assert_eq!(full.snapshot_type, SnapshotType::Full);
        assert!(full.validate().is_ok());
        let diff: SnapshotCreateParams = serde_json::from_str(
            r#"{"snapshot_path":"s","mem_file_path":"m","snapshot_type":"Diff"}"#,
        )
        .unwrap();
        assert_eq!(diff.snapshot_type, SnapshotType::Diff);
        assert!(diff.validate().is_ok());
    }
}
