//! What each API request does. Requests are split as Firecracker splits
//! them: configuration (`PUT` of machine, boot source, devices, logger,
//! metrics) is legal only before InstanceStart and changes the VM's
//! [`VmResources`](crate::resources::VmResources); runtime requests (pause,
//! resume, drive swap, Ctrl+Alt+Del) only after it and act on the machine.
//! Which side a request is on is decided once, in [`phase`], not in each
//! handler; state changes themselves are checked by the lifecycle
//! (src/vm.rs).

use std::path::Path;

use log::info;
use serde::Serialize;

use crate::api::convert;
use crate::api::models::{
    Action, Balloon, BalloonStatistics, InstanceInfo, InstanceState, RequestedVmState, VersionInfo,
};
use crate::api::{ApiRequest, ApiResponse};
use crate::vm::VmState;
use crate::vmm::Vmm;

/// Firecracker's words for a request made on the wrong side of start.
const AFTER_START: &str = "The requested operation is not supported after starting the microVM.";
const NO_BALLOON: &str = "No balloon device configured.";
const NO_BALLOON_STATS: &str =
    "Balloon statistics are not enabled: set stats_polling_interval_s before boot.";
const BEFORE_START: &str = "The requested operation is not supported before starting the microVM.";

/// When a request is legal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Before InstanceStart only.
    PreBoot,
    /// After InstanceStart only.
    Runtime,
    /// Any time.
    Always,
}

fn phase(request: &ApiRequest) -> Phase {
    use ApiRequest::*;
    match request {
        GetInstanceInfo | GetVersion | GetVmConfig | GetMachineConfig | GetBalloon => Phase::Always,
        PatchBalloon(_) => Phase::Always,
        GetBalloonStatistics | PatchBalloonStatistics(_) => Phase::Runtime,
        Action(crate::api::models::Action::FlushMetrics) => Phase::Always,
        PutMachineConfig(_)
        | PatchMachineConfig(_)
        | PutBootSource(_)
        | PutDrive(_)
        | PutNetworkInterface(_)
        | PutEntropy(_)
        | PutVsock(_)
        | PutBalloon(_)
        | PutLogger(_)
        | PutMetrics(_)
        | PutSnapshotLoad(_) => Phase::PreBoot,
        Action(crate::api::models::Action::InstanceStart) => Phase::PreBoot,
        Action(_) | PatchDrive(_) | PatchVm(_) | PutSnapshotCreate(_) | PutMigrate(_) => {
            Phase::Runtime
        }
    }
}

fn json(value: impl Serialize) -> ApiResponse {
    match serde_json::to_value(value) {
        Ok(value) => ApiResponse::Json(value),
        Err(e) => ApiResponse::Fault(format!("cannot encode the answer: {e}")),
    }
}

fn done(result: Result<(), String>) -> ApiResponse {
    match result {
        Ok(()) => ApiResponse::NoContent,
        Err(message) => ApiResponse::Fault(message),
    }
}

fn text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

impl Vmm {
    /// Answers one API request; the VM carries on whatever the answer.
    pub fn handle_api(&mut self, request: ApiRequest) -> ApiResponse {
        let started = self.vm.state() != VmState::NotStarted;
        match (phase(&request), started) {
            (Phase::PreBoot, true) => return ApiResponse::Fault(AFTER_START.into()),
            (Phase::Runtime, false) => return ApiResponse::Fault(BEFORE_START.into()),
            _ => {}
        }
        match request {
            ApiRequest::GetInstanceInfo => json(self.instance_info()),
            ApiRequest::GetVersion => json(VersionInfo {
                firecracker_version: env!("CARGO_PKG_VERSION").into(),
            }),
            ApiRequest::GetVmConfig => json(convert::full_config(self.vm.resources())),
            ApiRequest::GetMachineConfig => json(convert::machine_config(self.vm.resources())),
            ApiRequest::PutMachineConfig(config) => self.configure(|r| {
                let mut merged = convert::machine_config(r);
                // A PUT replaces the whole machine config; the extensions
                // keep their values when the body leaves them out.
                merged.vcpu_count = config.vcpu_count;
                merged.mem_size_mib = config.mem_size_mib;
                merged.smt = config.smt;
                merged.track_dirty_pages = config.track_dirty_pages;
                if config.gic_version.is_some() {
                    merged.gic_version = config.gic_version.clone();
                }
                if config.console.is_some() {
                    merged.console = config.console.clone();
                }
                if config.legacy_pit.is_some() {
                    merged.legacy_pit = config.legacy_pit;
                }
                if config.pmu.is_some() {
                    merged.pmu = config.pmu;
                }
                if config.transport.is_some() {
                    merged.transport = config.transport.clone();
                }
                convert::apply_machine_config(r, &merged)
            }),
            ApiRequest::PatchMachineConfig(update) => self.configure(|r| {
                let merged = convert::machine_config(r).updated(&update);
                convert::apply_machine_config(r, &merged)
            }),
            ApiRequest::PutBootSource(boot) => self.configure(|r| {
                convert::apply_boot_source(r, &boot);
                Ok(())
            }),
            ApiRequest::PutDrive(drive) => self.configure(|r| convert::apply_drive(r, &drive)),
            ApiRequest::PutNetworkInterface(iface) => {
                self.configure(|r| convert::apply_network_interface(r, &iface))
            }
            ApiRequest::PutEntropy(_) => self.configure(|r| {
                r.rng = true;
                Ok(())
            }),
            ApiRequest::PutVsock(vsock) => self.configure(|r| {
                convert::apply_vsock(r, &vsock);
                Ok(())
            }),
            ApiRequest::PutBalloon(balloon) => {
                self.configure(|r| convert::apply_balloon(r, &balloon))
            }
            ApiRequest::PatchBalloon(update) => done(self.set_balloon_target(update.amount_mib)),
            ApiRequest::GetBalloon => match self.balloon_config() {
                Ok(balloon) => json(balloon),
                Err(message) => ApiResponse::Fault(message),
            },
            ApiRequest::PatchBalloonStatistics(update) => {
                done(self.set_balloon_stats_interval(update.stats_polling_interval_s))
            }
            ApiRequest::GetBalloonStatistics => match self.vm.machine().and_then(|m| m.balloon()) {
                Some(control) if control.stats_enabled() => {
                    let stats = control.stats();
                    json(BalloonStatistics::new(
                        stats.target_pages,
                        stats.actual_pages,
                        control.guest_stats(),
                    ))
                }
                // Firecracker's answer: statistics exist only when
                // configured before boot.
                Some(_) => ApiResponse::Fault(NO_BALLOON_STATS.into()),
                None => ApiResponse::Fault(NO_BALLOON.into()),
            },
            ApiRequest::PutLogger(logger) => done(self.set_logger(&logger)),
            ApiRequest::PutMetrics(metrics) => {
                done(self.set_metrics(Path::new(&metrics.metrics_path)))
            }
            ApiRequest::Action(Action::InstanceStart) => done(self.start().map_err(text)),
            ApiRequest::Action(Action::FlushMetrics) => done(self.flush_metrics()),
            ApiRequest::Action(Action::SendCtrlAltDel) => done(self.send_ctrl_alt_del()),
            ApiRequest::PatchVm(request) => done(
                match request.state {
                    RequestedVmState::Paused => self.vm.pause(),
                    RequestedVmState::Resumed => self.vm.resume(),
                }
                .map_err(text),
            ),
            ApiRequest::PutSnapshotCreate(params) => done(
                self.vm
                    .snapshot(
                        Path::new(&params.snapshot_path),
                        Path::new(&params.mem_file_path),
                        params.snapshot_type,
                    )
                    .map_err(text),
            ),
            ApiRequest::PutSnapshotLoad(params) => done(self.load_snapshot(&params).map_err(text)),
            ApiRequest::PutMigrate(params) => {
                let migrated = params
                    .endpoint()
                    .map_err(anyhow::Error::msg)
                    .and_then(|to| {
                        let report = self.vm.migrate(&to)?;
                        log::info!("migrated to {to}: {report:?}");
                        Ok(report)
                    });
                match migrated {
                    Ok(report) => json(report),
                    Err(e) => ApiResponse::Fault(text(e)),
                }
            }
            ApiRequest::PatchDrive(drive) => done(self.swap_drive(
                &drive.drive_id,
                drive.path_on_host.as_deref().map(Path::new),
            )),
        }
    }

    fn instance_info(&self) -> InstanceInfo {
        InstanceInfo {
            app_name: "tandem".into(),
            id: self.vm.id().into(),
            state: match self.vm.state() {
                VmState::Running => InstanceState::Running,
                VmState::Paused => InstanceState::Paused,
                VmState::NotStarted | VmState::Stopped => InstanceState::NotStarted,
            },
            vmm_version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Runs `change` on the configuration of a VM not started yet; a
    /// refused change leaves the configuration as it was.
    fn configure(
        &mut self,
        change: impl FnOnce(&mut crate::resources::VmResources) -> Result<(), String>,
    ) -> ApiResponse {
        let resources = match self.vm.configure() {
            Ok(resources) => resources,
            Err(e) => return ApiResponse::Fault(text(e)),
        };
        let mut candidate = resources.clone();
        match change(&mut candidate) {
            Ok(()) => {
                *resources = candidate;
                ApiResponse::NoContent
            }
            Err(message) => ApiResponse::Fault(message),
        }
    }

    fn send_ctrl_alt_del(&mut self) -> Result<(), String> {
        let machine = self.vm.machine().ok_or(BEFORE_START)?;
        machine.send_ctrl_alt_del().map_err(text)?;
        info!("API: Ctrl+Alt+Del sent to the guest");
        Ok(())
    }

    /// The balloon's configuration, with the running target in
    /// `amount_mib` once started.
    fn balloon_config(&mut self) -> Result<Balloon, String> {
        let configured = self.vm.resources().balloon.ok_or(NO_BALLOON)?;
        let mut balloon = convert::balloon_config(&configured);
        if let Some(control) = self.vm.machine().and_then(|m| m.balloon()) {
            balloon.amount_mib = control.stats().target_pages / 256;
            balloon.stats_polling_interval_s = control.stats_interval_s().into();
        }
        Ok(balloon)
    }

    /// A new statistics interval for the running balloon, which asks the
    /// guest for statistics at once (Firecracker's rules: runtime only,
    /// and statistics cannot be turned on or off).
    fn set_balloon_stats_interval(&mut self, seconds: u32) -> Result<(), String> {
        let control = self
            .vm
            .machine()
            .and_then(|m| m.balloon())
            .ok_or(NO_BALLOON)?;
        let seconds = u16::try_from(seconds).map_err(|e| e.to_string())?;
        control
            .set_stats_interval(seconds)
            .map_err(|e| e.to_string())?;
        info!("API: balloon statistics every {seconds} s");
        Ok(())
    }

    /// A new balloon target: the configuration before start, the running
    /// device (which interrupts the guest) after.
    fn set_balloon_target(&mut self, amount_mib: u32) -> Result<(), String> {
        convert::check_balloon_size(self.vm.resources(), amount_mib)?;
        if self.vm.state() == VmState::NotStarted {
            let resources = self.vm.configure().map_err(text)?;
            let balloon = resources.balloon.as_mut().ok_or(NO_BALLOON)?;
            balloon.amount_mib = amount_mib;
            return Ok(());
        }
        let control = self
            .vm
            .machine()
            .and_then(|m| m.balloon())
            .ok_or(NO_BALLOON)?;
        control.set_target(amount_mib * 256);
        info!("API: balloon target now {amount_mib} MiB");
        Ok(())
    }

    fn swap_drive(&mut self, id: &str, path: Option<&Path>) -> Result<(), String> {
        let Some(path) = path else {
            // Only rate limiters were given: accepted and logged by routes.
            return Ok(());
        };
        let machine = self.vm.machine().ok_or(BEFORE_START)?;
        machine.swap_drive(id, path).map_err(text)?;
        info!("API: drive {id} now backed by {}", path.display());
        Ok(())
    }
}
