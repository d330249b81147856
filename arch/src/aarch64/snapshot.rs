//! aarch64 snapshots: not written yet. Saving a vCPU needs its register
//! list (KVM_GET_REG_LIST) and MP state, and the VM needs the VGIC's
//! distributor, redistributor/CPU-interface and ITS state, with pending
//! bits; until those exist every snapshot call refuses with one line, so
//! nothing is ever half-saved or half-restored.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One vCPU's state (nothing yet: saving refuses).
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {}

/// The VM's state (nothing yet: saving refuses).
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {}

/// The refusal every aarch64 snapshot call gives.
pub fn unsupported<T>() -> Result<T> {
    Err(Error::Snapshot(
        "aarch64 snapshots are not supported yet (the VGIC state is not saved)".into(),
    ))
}
