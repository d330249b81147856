//! Machine shape and boot: `PUT`/`PATCH /machine-config` and
//! `PUT /boot-source`, with Firecracker's ranges and defaults and tandem's
//! platform extensions (`gic_version`, `console`, `legacy_pit`, `pmu`,
//! `transport`).

use serde::{Deserialize, Serialize};

use super::check_choice;

/// Firecracker's vCPU count range.
pub const MAX_VCPUS: u8 = 32;

/// `PUT /machine-config`: vCPUs, memory and tandem's platform choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs, 1..=32.
    pub vcpu_count: u8,
    /// Guest memory in MiB.
    pub mem_size_mib: u64,
    /// Simultaneous multithreading (x86_64 only in Firecracker).
    #[serde(default)]
    pub smt: bool,
    /// Dirty page tracking for diff snapshots.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Firecracker's static CPU template: only "None" is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Huge pages backing guest memory: only "None" is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
    /// tandem extension: "auto", "v2" or "v3" (aarch64 interrupt controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gic_version: Option<String>,
    /// tandem extension: "serial" (ttyS0) or "virtio" (hvc0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// tandem extension: an in-kernel 8254 PIT (x86_64; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_pit: Option<bool>,
    /// tandem extension: a PMUv3 in each vCPU (aarch64; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmu: Option<bool>,
    /// tandem extension: "mmio" (virtio-mmio) or "pci" (virtio-pci behind
    /// a PCIe host bridge); default "mmio".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

impl Default for MachineConfig {
    /// Firecracker's defaults before any PUT: 1 vCPU, 128 MiB.
    fn default() -> Self {
        MachineConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            smt: false,
            track_dirty_pages: false,
            cpu_template: None,
            huge_pages: None,
            gic_version: None,
            console: None,
            legacy_pit: None,
            pmu: None,
            transport: None,
        }
    }
}

impl MachineConfig {
    /// Checks ranges and the values tandem supports.
    pub fn validate(&self) -> Result<(), String> {
        check_vcpu_count(self.vcpu_count, self.smt)?;
        check_mem_size(self.mem_size_mib)?;
        check_cpu_template(self.cpu_template.as_deref())?;
        check_huge_pages(self.huge_pages.as_deref())?;
        check_choice("gic_version", self.gic_version.as_deref(), &GIC_VERSIONS)?;
        check_choice("console", self.console.as_deref(), &CONSOLES)?;
        check_choice("transport", self.transport.as_deref(), &TRANSPORTS)
    }

    /// This configuration with the fields `update` sets replaced.
    pub fn updated(&self, update: &MachineConfigUpdate) -> MachineConfig {
        let mut next = self.clone();
        if let Some(n) = update.vcpu_count {
            next.vcpu_count = n;
        }
        if let Some(mib) = update.mem_size_mib {
            next.mem_size_mib = mib;
        }
        if let Some(smt) = update.smt {
            next.smt = smt;
        }
        if let Some(track) = update.track_dirty_pages {
            next.track_dirty_pages = track;
        }
        let replace = |old: &mut Option<String>, new: &Option<String>| {
            if new.is_some() {
                old.clone_from(new);
            }
        };
        replace(&mut next.cpu_template, &update.cpu_template);
        replace(&mut next.huge_pages, &update.huge_pages);
        replace(&mut next.gic_version, &update.gic_version);
        replace(&mut next.console, &update.console);
        replace(&mut next.transport, &update.transport);
        if update.legacy_pit.is_some() {
            next.legacy_pit = update.legacy_pit;
        }
        if update.pmu.is_some() {
            next.pmu = update.pmu;
        }
        next
    }
}

/// `PATCH /machine-config`: any subset of [`MachineConfig`]'s fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // same fields as MachineConfig
pub struct MachineConfigUpdate {
    pub vcpu_count: Option<u8>,
    pub mem_size_mib: Option<u64>,
    pub smt: Option<bool>,
    pub track_dirty_pages: Option<bool>,
    pub cpu_template: Option<String>,
    pub huge_pages: Option<String>,
    pub gic_version: Option<String>,
    pub console: Option<String>,
    pub legacy_pit: Option<bool>,
    pub pmu: Option<bool>,
    pub transport: Option<String>,
}

impl MachineConfigUpdate {
    /// Checks the fields given; an update that sets nothing is refused.
    pub fn validate(&self) -> Result<(), String> {
        if *self == MachineConfigUpdate::default() {
            return Err("empty PATCH of machine-config: give at least one field".into());
        }
        if let Some(n) = self.vcpu_count {
            check_vcpu_count(n, self.smt.unwrap_or(false))?;
        }
        if let Some(mib) = self.mem_size_mib {
            check_mem_size(mib)?;
        }
        check_cpu_template(self.cpu_template.as_deref())?;
        check_huge_pages(self.huge_pages.as_deref())?;
        check_choice("gic_version", self.gic_version.as_deref(), &GIC_VERSIONS)?;
        check_choice("console", self.console.as_deref(), &CONSOLES)?;
        check_choice("transport", self.transport.as_deref(), &TRANSPORTS)
    }
}

/// `PUT /boot-source`: kernel, initrd and command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the kernel image.
    pub kernel_image_path: String,
    /// Host path of the initrd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
}

impl BootSource {
    /// Refuses an empty kernel path.
    pub fn validate(&self) -> Result<(), String> {
        if self.kernel_image_path.is_empty() {
            return Err("kernel_image_path is empty".into());
        }
        Ok(())
    }
}

const GIC_VERSIONS: [&str; 3] = ["auto", "v2", "v3"];
const CONSOLES: [&str; 2] = ["serial", "virtio"];
const TRANSPORTS: [&str; 2] = ["mmio", "pci"];

fn check_vcpu_count(count: u8, smt: bool) -> Result<(), String> {
    if !(1..=MAX_VCPUS).contains(&count) {
        return Err(format!("vcpu_count {count} is outside 1..={MAX_VCPUS}"));
    }
    if smt && count > 1 && count % 2 == 1 {
        return Err(format!("vcpu_count {count} with smt must be 1 or even"));
    }
    Ok(())
}

fn check_mem_size(mib: u64) -> Result<(), String> {
    if mib == 0 {
        return Err("mem_size_mib must be greater than 0".into());
    }
    Ok(())
}

fn check_cpu_template(template: Option<&str>) -> Result<(), String> {
    match template {
        None | Some("None") => Ok(()),
        Some(other) => Err(format!(
            "cpu_template {other:?} is not supported by tandem yet; only \"None\""
        )),
    }
}

fn check_huge_pages(pages: Option<&str>) -> Result<(), String> {
    match pages {
        None | Some("None") => Ok(()),
        Some(other) => Err(format!(
            "huge_pages {other:?} is not supported by tandem yet; only \"None\""
        )),
    }
}
