//! The VM's lifecycle, in one place:
//!
//! ```text
//!   NotStarted ──start──► Running ◄──resume── Paused ──snapshot──┐
//!       │   │                │ └────pause─────►  ▲ ◄─────────────┘
//!       │   └──────────────restore───────────────┘
//!       └────────stop────────┴───────stop────────┴──► Stopped
//! ```
//!
//! A [`Vm`] is configured only while NotStarted (its [`VmResources`]);
//! `start` builds the machine by the one boot path and runs it; `restore`
//! builds it by the same path from a snapshot and leaves it Paused. Every
//! change of state goes through [`VmState::check_transition`] (restore
//! through [`VmState::check_restore`]), so an operation the state does not
//! allow is one error, not scattered checks.
//! Snapshots, migration and hot-plug hang on this object: they act on a
//! Paused VM's machine.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use devices::{ExitReason, ExitSignal};

use crate::api::models::{NetworkOverride, SnapshotType, VsockOverride};
use crate::machine::{Machine, SavedMemory};
use crate::migration;
use crate::resources::VmResources;
use crate::snapshot::Snapshot;

/// Where a VM is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmState {
    /// Configured, not built yet.
    NotStarted,
    /// The guest runs.
    Running,
    /// Every vCPU and device worker is parked and guest time stands still.
    Paused,
    /// The machine is gone; the process is about to exit.
    Stopped,
}

impl VmState {
    /// The name Firecracker's API uses (`GET /`).
    pub fn api_name(self) -> &'static str {
        match self {
            VmState::NotStarted => "Not started",
            VmState::Running => "Running",
            VmState::Paused => "Paused",
            VmState::Stopped => "Stopped",
        }
    }

    /// Restore builds the machine, so only a VM without one may: NotStarted.
    pub fn check_restore(self) -> Result<()> {
        match self {
            VmState::NotStarted => Ok(()),
            _ => bail!("a snapshot can only be loaded into a VM that is not started"),
        }
    }

    /// Refuses every transition the diagram above does not have.
    pub fn check_transition(self, next: VmState) -> Result<()> {
        use VmState::*;
        match (self, next) {
            (NotStarted, Running) | (Running, Paused) | (Paused, Running) => Ok(()),
            (NotStarted | Running | Paused, Stopped) => Ok(()),
            (NotStarted, Paused) => bail!("the VM is not started"),
            (Running, Running) => bail!("the VM is already started"),
            (Stopped, _) => bail!("the VM is stopped"),
            (from, to) => bail!(
                "the VM cannot go from {} to {}",
                from.api_name(),
                to.api_name()
            ),
        }
    }
}

/// Pause and resume counts and the latest latencies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleStats {
    /// Completed pauses.
    pub pauses: u64,
    /// Completed resumes.
    pub resumes: u64,
    /// How long the last pause took.
    pub last_pause: Duration,
    /// How long the last resume took.
    pub last_resume: Duration,
}

/// How a saved VM (a snapshot, a migration) is brought back.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Run it at once (else it stays Paused).
    pub resume: bool,
    /// Log dirty pages for diff snapshots (also on if the saved
    /// configuration had it).
    pub track_dirty: bool,
    /// Interfaces put on other TAPs than they were saved with.
    pub network_overrides: Vec<NetworkOverride>,
    /// The vsock device's new host socket.
    pub vsock_override: Option<VsockOverride>,
}

impl RestoreOptions {
    /// Changes the saved configuration `resources` as these options ask;
    /// an override naming a device the snapshot lacks is an error.
    fn apply_to(&self, resources: &mut VmResources) -> Result<()> {
        resources.track_dirty_pages |= self.track_dirty;
        for new in &self.network_overrides {
            let Some(iface) = resources.nets.iter_mut().find(|n| n.id == new.iface_id) else {
                bail!(
                    "network_overrides: the snapshot has no interface {:?}",
                    new.iface_id
                );
            };
            iface.net.tap.clone_from(&new.host_dev_name);
        }
        if let Some(new) = &self.vsock_override {
            let Some(vsock) = resources.vsock.as_mut() else {
                bail!("vsock_override: the snapshot has no vsock device");
            };
            vsock.uds_path = new.uds_path.clone().into();
        }
        Ok(())
    }
}

/// One VM: its configuration, its state and, once started, its machine.
pub struct Vm {
    id: String,
    state: VmState,
    resources: VmResources,
    machine: Option<Machine>,
    exit: Arc<ExitSignal>,
    stats: LifecycleStats,
    started_at: Option<Instant>,
}

impl Vm {
    /// A VM named `id`, not started, ending its run through `exit`.
    pub fn new(id: String, resources: VmResources, exit: Arc<ExitSignal>) -> Vm {
        Vm {
            id,
            state: VmState::NotStarted,
            resources,
            machine: None,
            exit,
            stats: LifecycleStats::default(),
            started_at: None,
        }
    }

    /// The VM's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the VM is in its life.
    pub fn state(&self) -> VmState {
        self.state
    }

    /// What the VM is (or will be) built from.
    pub fn resources(&self) -> &VmResources {
        &self.resources
    }

    /// The configuration, to change before start.
    pub fn configure(&mut self) -> Result<&mut VmResources> {
        if self.state != VmState::NotStarted {
            bail!("the VM is already started: its configuration is fixed");
        }
        Ok(&mut self.resources)
    }

    /// Builds the machine and runs it. On failure nothing is left behind
    /// and the VM stays NotStarted.
    pub fn start(&mut self) -> Result<()> {
        self.state.check_transition(VmState::Running)?;
        self.resources.choose_missing_macs()?;
        self.machine = Some(Machine::boot(&self.resources, self.exit.clone())?);
        self.started_at = Some(Instant::now());
        self.state = VmState::Running;
        Ok(())
    }

    /// Parks the guest; see [`Machine::pause`]. Pausing a paused VM does
    /// nothing, as in Firecracker.
    pub fn pause(&mut self) -> Result<()> {
        if self.state == VmState::Paused {
            return Ok(());
        }
        self.state.check_transition(VmState::Paused)?;
        let began = Instant::now();
        self.running_machine()?.pause()?;
        self.stats.pauses += 1;
        self.stats.last_pause = began.elapsed();
        self.state = VmState::Paused;
        Ok(())
    }

    /// Lets a paused guest go on where it stopped. Resuming a running VM
    /// does nothing, as in Firecracker.
    pub fn resume(&mut self) -> Result<()> {
        match self.state {
            VmState::Paused => {}
            VmState::Running => return Ok(()),
            other => other.check_transition(VmState::Paused)?,
        }
        let began = Instant::now();
        self.running_machine()?.resume()?;
        self.stats.resumes += 1;
        self.stats.last_resume = began.elapsed();
        self.state = VmState::Running;
        Ok(())
    }

    /// Saves a paused VM: its state to the file `snapshot`, its RAM to the
    /// file `memory` (written first and synced, so a state file never
    /// names memory that is not all there).
    pub fn snapshot(&mut self, snapshot: &Path, memory: &Path, kind: SnapshotType) -> Result<()> {
        if self.state != VmState::Paused {
            bail!("the VM must be paused to take a snapshot");
        }
        let config = crate::api::convert::full_config(&self.resources);
        let machine = self.running_machine()?;
        let state = machine.save_state()?;
        let file =
            File::create(memory).with_context(|| format!("memory file {}", memory.display()))?;
        machine.save_memory(&file, kind)?;
        file.sync_all()
            .with_context(|| format!("memory file {}", memory.display()))?;
        Snapshot::new(config, state).save(snapshot)
    }

    /// Rebuilds the VM `snapshot` and `memory` hold in this NotStarted
    /// one, Paused where it was saved, as `options` say (run at once, log
    /// dirty pages, other TAPs). On failure nothing is left behind and
    /// the VM stays NotStarted.
    pub fn restore(
        &mut self,
        snapshot: &Path,
        memory: &Path,
        options: &RestoreOptions,
    ) -> Result<()> {
        self.check_restorable()?;
        let saved = Snapshot::load(snapshot)?;
        let memory_file =
            File::open(memory).with_context(|| format!("memory file {}", memory.display()))?;
        let memory = SavedMemory {
            file: &memory_file,
            shared: false,
        };
        self.rebuild(&saved, memory, options)
            .with_context(|| format!("snapshot file {}", snapshot.display()))
    }

    /// Whether a snapshot or a migration can be loaded into this VM:
    /// NotStarted, nothing configured that the snapshot would replace.
    pub fn check_restorable(&self) -> Result<()> {
        self.state.check_restore()?;
        let r = &self.resources;
        if r.boot.is_some() || !r.drives.is_empty() || !r.nets.is_empty() {
            bail!("a snapshot cannot be loaded after a boot source or devices were configured");
        }
        Ok(())
    }

    /// Builds the machine `saved` and `memory` describe in this VM (see
    /// [`Self::restore`]); a migration's destination does the same.
    pub fn rebuild(
        &mut self,
        saved: &Snapshot,
        memory: SavedMemory,
        options: &RestoreOptions,
    ) -> Result<()> {
        let mut resources =
            crate::api::convert::from_config_file(&saved.config).map_err(|e| anyhow!("{e}"))?;
        options.apply_to(&mut resources)?;
        let machine = Machine::restore(&resources, self.exit.clone(), &saved.machine, memory)?;
        self.machine = Some(machine);
        self.resources = resources;
        self.started_at = Some(Instant::now());
        self.state = VmState::Paused;
        match options.resume {
            true => self.resume(),
            false => Ok(()),
        }
    }

    /// Moves the running (or paused) guest to the tandem listening for a
    /// migration on `destination` (src/migration/): RAM while it runs,
    /// then paused, the rest and its state. Once the destination runs it,
    /// this VM stops and the process is told to exit; on any failure
    /// before that, it carries on as it was.
    pub fn migrate(&mut self, destination: &migration::Endpoint) -> Result<migration::Report> {
        let was_running = match self.state {
            VmState::Running => true,
            VmState::Paused => false,
            _ => bail!("only a running or paused VM can be migrated"),
        };
        match self.send_to(destination, was_running) {
            Ok(report) => {
                self.stop();
                self.exit.raise(ExitReason::Migrated);
                Ok(report)
            }
            Err(e) => {
                let machine = self.running_machine()?;
                if let Err(e) = machine.hand_over_devices(false) {
                    log::error!("after the failed migration: {e:#}");
                }
                machine.forget_dirty_log();
                if was_running && self.state == VmState::Paused {
                    self.resume()?;
                }
                Err(e)
            }
        }
    }

    /// [`Self::migrate`]'s steps up to the destination's answer.
    fn send_to(
        &mut self,
        destination: &migration::Endpoint,
        was_running: bool,
    ) -> Result<migration::Report> {
        let config = crate::api::convert::full_config(&self.resources);
        let machine = self.running_machine()?;
        let mut sender = migration::Sender::connect(destination, machine)?;
        if machine.dirty_log_exact() {
            sender.precopy(machine)?;
        }
        let paused_at = Instant::now();
        if was_running {
            self.pause()?;
        }
        let machine = self.running_machine()?;
        // The destination may be on this host and open the same disks.
        machine.hand_over_devices(true)?;
        sender.finish(machine, config, paused_at)
    }

    /// Stops the vCPUs and devices and frees the machine; idempotent.
    pub fn stop(&mut self) {
        if let Some(mut machine) = self.machine.take() {
            machine.stop();
        }
        self.state = VmState::Stopped;
    }

    /// The machine of a started VM, for runtime requests.
    pub fn machine(&mut self) -> Option<&mut Machine> {
        self.machine.as_mut()
    }

    fn running_machine(&mut self) -> Result<&mut Machine> {
        match self.machine.as_mut() {
            Some(machine) => Ok(machine),
            None => bail!("the VM is not started"),
        }
    }

    /// Pause and resume counts and latencies.
    pub fn lifecycle_stats(&self) -> LifecycleStats {
        self.stats
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.started_at.map(|t| t.elapsed()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VmState::*;

    #[test]
    fn only_the_drawn_transitions_are_allowed() {
        let all = [NotStarted, Running, Paused, Stopped];
        let allowed = [
            (NotStarted, Running),
            (Running, Paused),
            (Paused, Running),
            (NotStarted, Stopped),
            (Running, Stopped),
            (Paused, Stopped),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        let err = NotStarted.check_transition(Paused).unwrap_err();
        assert_eq!(err.to_string(), "the VM is not started");
        let err = Running.check_transition(Running).unwrap_err();
        assert_eq!(err.to_string(), "the VM is already started");
        let err = Stopped.check_transition(Running).unwrap_err();
        assert_eq!(err.to_string(), "the VM is stopped");
    }

    #[test]
    fn a_vm_that_fails_to_start_stays_not_started_and_configurable() {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut vm = Vm::new("t".into(), VmResources::default(), exit);
        let err = vm.start().unwrap_err();
        assert_eq!(err.to_string(), "no kernel: set the boot source first");
        assert_eq!(vm.state(), NotStarted);
        assert!(vm.configure().is_ok());
        assert_eq!(vm.pause().unwrap_err().to_string(), "the VM is not started");
        assert_eq!(
            vm.resume().unwrap_err().to_string(),
            "the VM is not started"
        );
        vm.stop();
        assert_eq!(vm.state(), Stopped);
        assert!(vm.configure().is_err());
        assert!(vm.start().is_err());
    }
}
