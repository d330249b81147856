//! The routing table: (method, path, body) to a typed, validated
//! [`ApiRequest`], or a one-line fault. Runs on the connection thread, so
//! the VMM's main thread only ever sees requests it can act on. Follows
//! Firecracker: unknown paths and wrong methods are 400 faults, ids in the
//! path must equal the ids in the body, bodies refuse unknown fields.

use serde::de::DeserializeOwned;

use super::models::{
    check_id, Action, Balloon, BalloonStatsUpdate, BalloonUpdate, BootSource, Drive, EntropyDevice,
    InstanceActionInfo, Logger, MachineConfig, MachineConfigUpdate, Metrics, MigrateParams,
    NetworkInterface, PartialDrive, SnapshotCreateParams, SnapshotLoadParams, VmStateRequest,
    Vsock,
};

/// A request the VMM's main thread acts on.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is named after its endpoint
pub enum ApiRequest {
    GetInstanceInfo,
    GetVersion,
    GetVmConfig,
    GetMachineConfig,
    PutMachineConfig(MachineConfig),
    PatchMachineConfig(MachineConfigUpdate),
    PutBootSource(BootSource),
    PutDrive(Drive),
    PatchDrive(PartialDrive),
    PutNetworkInterface(NetworkInterface),
    PutEntropy(EntropyDevice),
    PutVsock(Vsock),
    GetBalloon,
    GetBalloonStatistics,
    PutBalloon(Balloon),
    PatchBalloon(BalloonUpdate),
    PatchBalloonStatistics(BalloonStatsUpdate),
    PutLogger(Logger),
    PutMetrics(Metrics),
    Action(Action),
    PatchVm(VmStateRequest),
    PutSnapshotCreate(SnapshotCreateParams),
    PutSnapshotLoad(SnapshotLoadParams),
    PutMigrate(MigrateParams),
}

/// The main thread's answer to an [`ApiRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum ApiResponse {
    /// 204, no body.
    NoContent,
    /// 200 with this JSON body.
    Json(serde_json::Value),
    /// 400 with `{"fault_message": …}`.
    Fault(String),
}

impl ApiResponse {
    /// The HTTP status code this response is sent with.
    pub fn status(&self) -> u16 {
        match self {
            ApiResponse::NoContent => 204,
            ApiResponse::Json(_) => 200,
            ApiResponse::Fault(_) => 400,
        }
    }

    /// The JSON body, or `None` for 204.
    pub fn body(&self) -> Option<String> {
        match self {
            ApiResponse::NoContent => None,
            ApiResponse::Json(value) => Some(value.to_string()),
            ApiResponse::Fault(message) => {
                Some(serde_json::json!({ "fault_message": message }).to_string())
            }
        }
    }
}

/// Firecracker endpoints tandem does not implement yet, by path prefix.
const UNSUPPORTED_PATHS: [&str; 5] = ["cpu-config", "hotplug", "mmds", "pmem", "serial"];

/// Turns one HTTP request into an [`ApiRequest`], or a fault message.
pub fn parse_request(method: &str, path: &str, body: &[u8]) -> Result<ApiRequest, String> {
    // The query string means nothing to this API; a trailing slash is the
    // same resource.
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let invalid = || format!("Invalid request method and/or path: {method} {path}.");
    let has_body = !body.iter().all(u8::is_ascii_whitespace);
    if !path.starts_with('/') {
        return Err(invalid());
    }

    if method == "GET" {
        let request = match segments.as_slice() {
            [] => ApiRequest::GetInstanceInfo,
            ["version"] => ApiRequest::GetVersion,
            ["vm", "config"] => ApiRequest::GetVmConfig,
            ["machine-config"] => ApiRequest::GetMachineConfig,
            ["balloon"] => ApiRequest::GetBalloon,
            ["balloon", "statistics"] => ApiRequest::GetBalloonStatistics,
            ["balloon", "hinting", ..] => return Err(unsupported(method, trimmed)),
            [first, ..] if UNSUPPORTED_PATHS.contains(first) => {
                return Err(unsupported(method, trimmed))
            }
            _ => return Err(invalid()),
        };
        if has_body {
            return Err(format!("GET {trimmed} takes no body"));
        }
        return Ok(request);
    }

    let what = format!("{method} {trimmed}");
    match (method, segments.as_slice()) {
        (_, [first, ..]) if UNSUPPORTED_PATHS.contains(first) => Err(unsupported(method, trimmed)),
        ("PUT", ["machine-config"]) => {
            let config: MachineConfig = json_body(&what, body)?;
            config.validate()?;
            Ok(ApiRequest::PutMachineConfig(config))
        }
        ("PATCH", ["machine-config"]) => {
            let update: MachineConfigUpdate = json_body(&what, body)?;
            update.validate()?;
            Ok(ApiRequest::PatchMachineConfig(update))
        }
        ("PUT", ["boot-source"]) => {
            let boot: BootSource = json_body(&what, body)?;
            boot.validate()?;
            Ok(ApiRequest::PutBootSource(boot))
        }
        ("PUT" | "PATCH", ["drives"]) | ("PUT", ["network-interfaces"]) => {
            Err(format!("{what}: the id is missing from the path"))
        }
        ("PUT", ["drives", id]) => {
            let drive: Drive = json_body(&what, body)?;
            same_id("drive_id", id, &drive.drive_id)?;
            drive.validate()?;
            Ok(ApiRequest::PutDrive(drive))
        }
        ("PATCH", ["drives", id]) => {
            let drive: PartialDrive = json_body(&what, body)?;
            same_id("drive_id", id, &drive.drive_id)?;
            drive.validate()?;
            Ok(ApiRequest::PatchDrive(drive))
        }
        ("PUT", ["network-interfaces", id]) => {
            let iface: NetworkInterface = json_body(&what, body)?;
            same_id("iface_id", id, &iface.iface_id)?;
            iface.validate()?;
            Ok(ApiRequest::PutNetworkInterface(iface))
        }
        // Firecracker updates rate limiters here; tandem enforces none yet.
        ("PATCH", ["network-interfaces", _]) => Err(unsupported(method, trimmed)),
        ("PUT", ["entropy"]) => {
            let entropy: EntropyDevice = json_body(&what, body)?;
            entropy.validate()?;
            Ok(ApiRequest::PutEntropy(entropy))
        }
        ("PUT", ["vsock"]) => {
            let vsock: Vsock = json_body(&what, body)?;
            vsock.validate()?;
            Ok(ApiRequest::PutVsock(vsock))
        }
        ("PUT", ["balloon"]) => {
            let balloon: Balloon = json_body(&what, body)?;
            balloon.validate()?;
            Ok(ApiRequest::PutBalloon(balloon))
        }
        ("PATCH", ["balloon"]) => {
            let update: BalloonUpdate = json_body(&what, body)?;
            update.validate()?;
            Ok(ApiRequest::PatchBalloon(update))
        }
        // Free page hinting is not implemented.
        (_, ["balloon", "hinting", ..]) => Err(unsupported(method, trimmed)),
        ("PATCH", ["balloon", "statistics"]) => {
            let update: BalloonStatsUpdate = json_body(&what, body)?;
            update.interval()?;
            Ok(ApiRequest::PatchBalloonStatistics(update))
        }
        ("PUT", ["logger"]) => {
            let logger: Logger = json_body(&what, body)?;
            logger.validate()?;
            Ok(ApiRequest::PutLogger(logger))
        }
        ("PUT", ["metrics"]) => {
            let metrics: Metrics = json_body(&what, body)?;
            metrics.validate()?;
            Ok(ApiRequest::PutMetrics(metrics))
        }
        ("PUT", ["actions"]) => {
            let action: InstanceActionInfo = json_body(&what, body)?;
            Ok(ApiRequest::Action(action.action_type))
        }
        ("PATCH", ["vm"]) => Ok(ApiRequest::PatchVm(json_body(&what, body)?)),
        ("PUT", ["snapshot", "create"]) => {
            let params: SnapshotCreateParams = json_body(&what, body)?;
            params.validate()?;
            Ok(ApiRequest::PutSnapshotCreate(params))
        }
        ("PUT", ["snapshot", "load"]) => {
            let params: SnapshotLoadParams = json_body(&what, body)?;
            params.validate()?;
            Ok(ApiRequest::PutSnapshotLoad(params))
        }
        ("PUT", ["migrate"]) => {
            let params: MigrateParams = json_body(&what, body)?;
            params.validate()?;
            Ok(ApiRequest::PutMigrate(params))
        }
        _ => Err(invalid()),
    }
}

fn unsupported(method: &str, path: &str) -> String {
    format!("{method} {path} is not supported by tandem yet")
}

fn json_body<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("{what} needs a JSON body; the request had none"));
    }
    serde_json::from_slice(body).map_err(|e| format!("{what}: invalid body: {e}"))
}

fn same_id(field: &str, in_path: &str, in_body: &str) -> Result<(), String> {
    check_id(field, in_path)?;
    if in_path != in_body {
        return Err(format!(
            "{field} in the path ({in_path:?}) differs from {field} in the body ({in_body:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::models::RequestedVmState;

    fn ok(method: &str, path: &str, body: &str) -> ApiRequest {
        parse_request(method, path, body.as_bytes()).unwrap()
    }

    fn fault(method: &str, path: &str, body: &str) -> String {
        parse_request(method, path, body.as_bytes()).unwrap_err()
    }

    #[test]
    fn every_endpoint() {
        assert_eq!(ok("GET", "/", ""), ApiRequest::GetInstanceInfo);
        assert_eq!(ok("GET", "/version", ""), ApiRequest::GetVersion);
        assert_eq!(ok("GET", "/vm/config", ""), ApiRequest::GetVmConfig);
        assert_eq!(
            ok("GET", "/machine-config", ""),
            ApiRequest::GetMachineConfig
        );
        let put_machine = ok(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":2,"mem_size_mib":64}"#,
        );
        assert!(matches!(put_machine, ApiRequest::PutMachineConfig(c) if c.vcpu_count == 2));
        let patch_machine = ok("PATCH", "/machine-config", r#"{"mem_size_mib":64}"#);
        assert!(
            matches!(patch_machine, ApiRequest::PatchMachineConfig(u) if u.mem_size_mib == Some(64))
        );
        let boot = ok("PUT", "/boot-source", r#"{"kernel_image_path":"/k"}"#);
        assert!(matches!(boot, ApiRequest::PutBootSource(b) if b.kernel_image_path == "/k"));
        let drive = r#"{"drive_id":"root","path_on_host":"/r","is_root_device":true}"#;
        assert!(
            matches!(ok("PUT", "/drives/root", drive), ApiRequest::PutDrive(d) if d.is_root_device)
        );
        let patch = r#"{"drive_id":"root","path_on_host":"/r2"}"#;
        assert!(matches!(
            ok("PATCH", "/drives/root", patch),
            ApiRequest::PatchDrive(_)
        ));
        let net = r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#;
        assert!(matches!(
            ok("PUT", "/network-interfaces/eth0", net),
            ApiRequest::PutNetworkInterface(_)
        ));
        assert!(matches!(
            ok("PUT", "/entropy", "{}"),
            ApiRequest::PutEntropy(_)
        ));
        let balloon = ok(
            "PUT",
            "/balloon",
            r#"{"amount_mib":64,"deflate_on_oom":true}"#,
        );
        assert!(matches!(balloon, ApiRequest::PutBalloon(b) if b.amount_mib == 64));
        let patch = ok("PATCH", "/balloon", r#"{"amount_mib":256}"#);
        assert!(matches!(patch, ApiRequest::PatchBalloon(b) if b.amount_mib == 256));
        let stats = ok(
            "PATCH",
            "/balloon/statistics",
            r#"{"stats_polling_interval_s":5}"#,
        );
        assert!(
            matches!(stats, ApiRequest::PatchBalloonStatistics(u) if u.stats_polling_interval_s == 5)
        );
        assert!(fault(
            "PATCH",
            "/balloon/statistics",
            r#"{"stats_polling_interval_s":65536}"#
        )
        .contains("more than 65535"));
        let vsock = ok("PUT", "/vsock", r#"{"guest_cid":3,"uds_path":"/v.sock"}"#);
        assert!(matches!(vsock, ApiRequest::PutVsock(v) if v.guest_cid == 3));
        assert!(fault("PUT", "/vsock", r#"{"guest_cid":2,"uds_path":"/v"}"#).contains("reserved"));
        assert!(fault("PUT", "/vsock", r#"{"guest_cid":3}"#).contains("uds_path"));
        assert!(matches!(
            ok("PUT", "/logger", r#"{"level":"info"}"#),
            ApiRequest::PutLogger(_)
        ));
        let metrics = ok("PUT", "/metrics", r#"{"metrics_path":"/m"}"#);
        assert!(matches!(metrics, ApiRequest::PutMetrics(_)));
        for (name, action) in [
            ("InstanceStart", Action::InstanceStart),
            ("FlushMetrics", Action::FlushMetrics),
            ("SendCtrlAltDel", Action::SendCtrlAltDel),
        ] {
            let body = format!(r#"{{"action_type":"{name}"}}"#);
            assert_eq!(ok("PUT", "/actions", &body), ApiRequest::Action(action));
        }
        let vm = ok("PATCH", "/vm", r#"{"state":"Resumed"}"#);
        assert!(matches!(vm, ApiRequest::PatchVm(s) if s.state == RequestedVmState::Resumed));
    }

    #[test]
    fn trailing_slash_and_query_are_ignored() {
        assert_eq!(ok("GET", "/version/", ""), ApiRequest::GetVersion);
        assert_eq!(
            ok("GET", "/vm/config?pretty=1", ""),
            ApiRequest::GetVmConfig
        );
        assert_eq!(ok("GET", "/?x", ""), ApiRequest::GetInstanceInfo);
        let drive = r#"{"drive_id":"d","path_on_host":"/r","is_root_device":false}"#;
        assert!(matches!(
            ok("PUT", "/drives/d/", drive),
            ApiRequest::PutDrive(_)
        ));
    }

    #[test]
    fn ids_must_match() {
        let drive = r#"{"drive_id":"other","path_on_host":"/r","is_root_device":false}"#;
        assert!(fault("PUT", "/drives/root", drive).contains("differs"));
        let patch = r#"{"drive_id":"other","path_on_host":"/r"}"#;
        assert!(fault("PATCH", "/drives/root", patch).contains("differs"));
        let net = r#"{"iface_id":"eth1","host_dev_name":"tap0"}"#;
        assert!(fault("PUT", "/network-interfaces/eth0", net).contains("differs"));
        let bad_id = r#"{"drive_id":"a.b","path_on_host":"/r","is_root_device":false}"#;
        assert!(fault("PUT", "/drives/a.b", bad_id).contains("letters, digits"));
        assert!(fault("PUT", "/drives", drive).contains("missing from the path"));
    }

    #[test]
    fn wrong_method_and_unknown_path() {
        let invalid = "Invalid request method and/or path";
        assert!(fault("POST", "/machine-config", "{}").contains(invalid));
        assert!(fault("DELETE", "/drives/root", "").contains(invalid));
        assert!(fault("PUT", "/version", "{}").contains(invalid));
        assert!(fault("GET", "/drives/root", "").contains(invalid));
        assert!(fault("GET", "/nothing", "").contains(invalid));
        assert!(fault("PUT", "/drives/a/b", "{}").contains(invalid));
        assert!(fault("GET", "version", "").contains(invalid));
        assert!(fault("GET", "/version", "{}").contains("takes no body"));
    }

    #[test]
    fn unsupported_endpoints_say_so() {
        for (method, path) in [
            ("PATCH", "/balloon/hinting/start"),
            ("GET", "/balloon/hinting/status"),
            ("PUT", "/mmds"),
            ("PUT", "/mmds/config"),
            ("PUT", "/cpu-config"),
            ("PUT", "/hotplug/memory"),
            ("PUT", "/pmem/p0"),
            ("PUT", "/serial"),
            ("PATCH", "/network-interfaces/eth0"),
        ] {
            let message = fault(method, path, "{}");
            assert!(
                message.contains("is not supported by tandem yet"),
                "{path}: {message}"
            );
        }
    }

    #[test]
    fn snapshot_requests_are_routed_and_checked() {
        let create = ok(
            "PUT",
            "/snapshot/create",
            r#"{"snapshot_path":"s","mem_file_path":"m"}"#,
        );
        assert!(matches!(create, ApiRequest::PutSnapshotCreate(p) if p.snapshot_path == "s"));
        let load = ok(
            "PUT",
            "/snapshot/load",
            r#"{"snapshot_path":"s","mem_file_path":"m"}"#,
        );
        assert!(matches!(load, ApiRequest::PutSnapshotLoad(p) if p.memory_file() == Ok("m")));
        assert!(fault("PUT", "/snapshot/load", r#"{"snapshot_path":"s"}"#).contains("mem_backend"));
        assert!(fault("PUT", "/snapshot/other", "{}").contains("Invalid request"));
        let migrate = ok("PUT", "/migrate", r#"{"destination":"/tmp/m.sock"}"#);
        assert!(matches!(migrate, ApiRequest::PutMigrate(p) if p.destination == "/tmp/m.sock"));
        assert!(fault("PUT", "/migrate", r#"{"destination":""}"#).contains("must not be empty"));
        assert!(
            fault("PUT", "/migrate", r#"{"destination":"tcp:example.org:1"}"#)
                .contains("tcp:IP:PORT")
        );
    }

    #[test]
    fn bodies_are_checked() {
        assert!(fault("PUT", "/boot-source", "").contains("needs a JSON body"));
        assert!(fault("PUT", "/actions", "  \r\n").contains("needs a JSON body"));
        let unknown = fault("PUT", "/boot-source", r#"{"kernel_image_path":"/k","x":1}"#);
        assert!(unknown.contains("unknown field `x`"), "{unknown}");
        assert!(fault("PUT", "/logger", "{not json").contains("invalid body"));
        let zero = fault(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count":0,"mem_size_mib":64}"#,
        );
        assert!(zero.contains("vcpu_count 0"), "{zero}");
        assert!(fault("PATCH", "/machine-config", "{}").contains("empty PATCH"));
        assert!(fault("PATCH", "/vm", r#"{"state":"Stopped"}"#).contains("unknown variant"));
        assert!(!fault("PUT", "/actions", r#"{"action_type":"Boom"}"#).contains('\n'));
    }

    #[test]
    fn responses_map_to_status_and_body() {
        assert_eq!(
            (
                ApiResponse::NoContent.status(),
                ApiResponse::NoContent.body()
            ),
            (204, None)
        );
        let json = ApiResponse::Json(serde_json::json!({"a": 1}));
        assert_eq!(
            (json.status(), json.body().unwrap()),
            (200, r#"{"a":1}"#.to_string())
        );
        let fault = ApiResponse::Fault("no \"way\"".into());
        assert_eq!(fault.status(), 400);
        let body: serde_json::Value = serde_json::from_str(&fault.body().unwrap()).unwrap();
        assert_eq!(body["fault_message"], "no \"way\"");
    }
}
