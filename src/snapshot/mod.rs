//! Snapshots of a paused VM. A snapshot is two files: guest RAM, written
//! and mapped back by src/memory.rs, and the state, here: the VM's
//! configuration in the `--config-file` shape (restore builds the same
//! machine from it, every device at the same address), guest time at the
//! pause, and the back end's VM and vCPU state. `file.rs` frames it with a
//! format version and a checksum. What the state holds is documented in
//! docs/snapshots.md.

mod file;

use std::path::Path;

use anyhow::{bail, Context, Result};
use arch::{Arch, GuestClock, Host};
use serde::{Deserialize, Serialize};

use crate::api::models::FullVmConfiguration;
use crate::device_manager::DevicesState;

pub use file::{FORMAT_VERSION, MAX_BODY};

/// What a paused machine saves of itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct MachineState {
    /// Guest time when the VM was paused.
    pub clock: Option<GuestClock>,
    /// The back end's VM-wide state.
    pub vm: <Host as Arch>::VmState,
    /// Each vCPU's state, in index order.
    pub vcpus: Vec<<Host as Arch>::VcpuState>,
    /// The devices' state.
    pub devices: DevicesState,
}

/// The state file's contents.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Which tandem wrote it (for people; the format version decides).
    pub tandem_version: String,
    /// The architecture of the VM (`target_arch` spelling).
    pub arch: String,
    /// The VM's resources, as `GET /vm/config` shows them.
    pub config: FullVmConfiguration,
    /// The machine.
    pub machine: MachineState,
}

/// The fields read before the rest, to refuse a foreign snapshot with a
/// clear reason rather than a parse error deep in another arch's state.
#[derive(Deserialize)]
struct Identity {
    arch: String,
}

impl Snapshot {
    /// A snapshot of this build's architecture.
    pub fn new(config: FullVmConfiguration, machine: MachineState) -> Snapshot {
        Snapshot {
            tandem_version: env!("CARGO_PKG_VERSION").into(),
            arch: Host::NAME.into(),
            config,
            machine,
        }
    }

    /// Writes the state file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let body = serde_json::to_vec(self).context("encoding the snapshot")?;
        file::write(path, &body)
    }

    /// A state file's bytes, framed and checksummed, for a migration.
    pub fn to_framed(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self).context("encoding the snapshot")?;
        Ok(file::frame(&body))
    }

    /// Reads a state file written by [`Snapshot::save`] on this
    /// architecture.
    pub fn load(path: &Path) -> Result<Snapshot> {
        let body = file::read(path)?;
        Self::decode(&body).with_context(|| format!("snapshot file {}", path.display()))
    }

    /// The snapshot in framed `bytes` ([`Self::to_framed`]).
    pub fn from_framed(bytes: &[u8]) -> Result<Snapshot> {
        Self::decode(&file::check(bytes)?)
    }

    /// A checked body of this architecture.
    fn decode(body: &[u8]) -> Result<Snapshot> {
        let identity: Identity = serde_json::from_slice(body)?;
        if identity.arch != Host::NAME {
            bail!(
                "a snapshot of an {} VM cannot be restored on {}",
                identity.arch,
                Host::NAME
            );
        }
        let mut snapshot: Snapshot = serde_json::from_slice(body)?;
        upgrade(&mut snapshot.config);
        Ok(snapshot)
    }
}

/// Fills in what older tandems did without saying: a snapshot written
/// before `legacy_pit` existed is of a VM that had a PIT (x86_64).
fn upgrade(config: &mut FullVmConfiguration) {
    if let Some(machine) = &mut config.machine_config {
        if Host::HAS_LEGACY_PIT && machine.legacy_pit.is_none() {
            machine.legacy_pit = Some(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_from_before_legacy_pit_had_one() {
        let mut old = FullVmConfiguration {
            machine_config: Some(Default::default()),
            ..Default::default()
        };
        upgrade(&mut old);
        let pit = old.machine_config.as_ref().unwrap().legacy_pit;
        assert_eq!(pit, Host::HAS_LEGACY_PIT.then_some(true));
        let mut new = FullVmConfiguration {
            machine_config: Some(crate::api::models::MachineConfig {
                legacy_pit: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        upgrade(&mut new);
        assert_eq!(new.machine_config.unwrap().legacy_pit, Some(false));
    }

    #[test]
    fn another_architectures_snapshot_is_refused_by_name() {
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("s");
        let other = if Host::NAME == "x86_64" {
            "aarch64"
        } else {
            "x86_64"
        };
        file::write(&path, format!("{{\"arch\":\"{other}\"}}").as_bytes()).unwrap();
        let err = format!("{:#}", Snapshot::load(&path).unwrap_err());
        assert!(
            err.contains(&format!("an {other} VM cannot be restored")),
            "{err}"
        );
    }
}
