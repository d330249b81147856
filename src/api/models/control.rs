//! Control bodies: logger, metrics, actions, pause/resume, and the two
//! answers the VMM builds itself (`GET /`, `GET /version`).

use serde::{Deserialize, Serialize};

/// `PUT /logger`: where and how much tandem logs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// File or named pipe for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
    /// Error, Warning, Info, Debug, Trace or Off, in any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Print each record's level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Print each record's file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only log records from this module path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl Logger {
    /// The level as a filter: Firecracker's default is Info.
    pub fn level_filter(&self) -> Result<log::LevelFilter, String> {
        let Some(level) = self.level.as_deref() else {
            return Ok(log::LevelFilter::Info);
        };
        Ok(match level.to_ascii_lowercase().as_str() {
            "error" => log::LevelFilter::Error,
            "warning" | "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            "off" => log::LevelFilter::Off,
            _ => {
                return Err(format!(
                    "level {level:?} is not one of Error, Warning, Info, Debug, Trace, Off"
                ))
            }
        })
    }

    /// Checks the level.
    pub fn validate(&self) -> Result<(), String> {
        self.level_filter().map(|_| ())
    }
}

/// `PUT /metrics`: where `FlushMetrics` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// File or named pipe for the JSON metrics.
    pub metrics_path: String,
}

impl Metrics {
    /// Refuses an empty path.
    pub fn validate(&self) -> Result<(), String> {
        if self.metrics_path.is_empty() {
            return Err("metrics_path is empty".into());
        }
        Ok(())
    }
}

/// `PUT /actions` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    /// What to do.
    pub action_type: Action,
}

/// Synchronous actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Build and boot the VM from the configuration so far.
    InstanceStart,
    /// Write the metrics now.
    FlushMetrics,
    /// Press Ctrl+Alt+Del (x86_64 i8042).
    SendCtrlAltDel,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateRequest {
    /// The state asked for.
    pub state: RequestedVmState,
}

/// The states a client may ask the VM to enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedVmState {
    /// Stop the vCPUs.
    Paused,
    /// Run the vCPUs again.
    Resumed,
}

/// `GET /` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name ("tandem").
    pub app_name: String,
    /// Instance id.
    pub id: String,
    /// Lifecycle state.
    pub state: InstanceState,
    /// tandem's version.
    pub vmm_version: String,
}

/// The lifecycle states `GET /` reports, spelled as Firecracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstanceState {
    /// Configuring; InstanceStart not yet received.
    #[serde(rename = "Not started")]
    NotStarted,
    /// vCPUs running.
    Running,
    /// vCPUs paused through `PATCH /vm`.
    Paused,
}

/// `GET /version` answer; the key keeps Firecracker's name so its clients
/// read it, the value is tandem's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// tandem's version.
    pub firecracker_version: String,
}
