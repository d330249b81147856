//! The Firecracker-compatible API end to end on this host's /dev/kvm: the
//! tandem binary started as `firecracker` is, configured and started over
//! its Unix socket with a hand-made kernel, paused and resumed (the
//! guest's exit count stops and goes on), metrics lines checked, and every
//! error path answered 400 with the VM carrying on.
//!
//! Tests that need KVM fail when `CI` is set and /dev/kvm is unusable, and
//! skip with a message otherwise; hand-made kernels exist on x86_64 only.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arch::test_payloads::{tiny_kernel, TinyKernel};
use common::api_vmm::{sigterm, Vmm};
use serde_json::{json, Value};
use vmm_sys_util::tempdir::TempDir;

fn kvm_usable() -> bool {
    common::kvm_or_skip().is_some()
}

/// Writes one metrics line and returns it.
fn metrics(vmm: &Vmm, path: &Path) -> Value {
    vmm.ok("PUT", "/actions", json!({"action_type": "FlushMetrics"}));
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

fn port_exits(line: &Value) -> u64 {
    line["exits"]["pio"].as_u64().unwrap()
}

#[test]
fn a_vm_configured_over_the_api_pauses_and_resumes() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = tiny_kernel(TinyKernel::PortLoop) else {
        eprintln!("SKIPPED: no hand-made kernel on this architecture");
        return;
    };
    let vmm = Vmm::spawn(&["--id", "api-test"]);
    let (_, info) = vmm.call("GET", "/", None);
    assert_eq!(info["id"], "api-test");
    assert_eq!(info["state"], "Not started");
    let kernel = vmm.file("kernel", &kernel);
    let metrics_path = vmm.dir.as_path().join("metrics.json");
    vmm.ok(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 2, "mem_size_mib": 64}),
    );
    vmm.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    vmm.ok("PUT", "/metrics", json!({"metrics_path": metrics_path}));
    vmm.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(vmm.state(), "Running");
    let (_, config) = vmm.call("GET", "/vm/config", None);
    assert_eq!(config["machine-config"]["vcpu_count"], 2);
    assert_eq!(config["boot-source"]["kernel_image_path"], kernel.as_str());

    std::thread::sleep(Duration::from_millis(100));
    let running = port_exits(&metrics(&vmm, &metrics_path));
    assert!(running > 0, "the guest never ran");

    vmm.ok("PATCH", "/vm", json!({"state": "Paused"}));
    assert_eq!(vmm.state(), "Paused");
    let paused = port_exits(&metrics(&vmm, &metrics_path));
    std::thread::sleep(Duration::from_millis(300));
    let later = metrics(&vmm, &metrics_path);
    assert_eq!(port_exits(&later), paused, "the guest ran while paused");
    assert_eq!(later["vmm"]["state"], "Paused");

    vmm.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    std::thread::sleep(Duration::from_millis(100));
    let resumed = metrics(&vmm, &metrics_path);
    assert!(port_exits(&resumed) > paused, "the guest did not go on");
    for (section, fields) in [
        (
            "vmm",
            &["uptime_ms", "state", "vmm_rss_kib", "guest_rss_kib"][..],
        ),
        ("exits", &["total", "pio", "mmio", "other", "unclaimed"][..]),
        (
            "vcpu_lifecycle",
            &["pauses", "resumes", "last_pause_us"][..],
        ),
    ] {
        for field in fields {
            assert!(!resumed[section][field].is_null(), "{section}.{field}");
        }
    }
    assert_eq!(resumed["vcpu_lifecycle"]["pauses"], 1);
    assert_eq!(resumed["vcpu_lifecycle"]["resumes"], 1);
    assert!(resumed["utc_timestamp_ms"].as_u64().unwrap() > 0);
    assert!(resumed["api"]["requests"].as_u64().unwrap() >= 10);
    assert_eq!(resumed["api"]["faults"], 0);

    let (code, stderr) = vmm.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}

#[test]
fn bad_requests_get_400_and_the_vm_carries_on() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = tiny_kernel(TinyKernel::Spin) else {
        eprintln!("SKIPPED: no hand-made kernel on this architecture");
        return;
    };
    let vmm = Vmm::spawn(&[]);
    let kernel = vmm.file("kernel", &kernel);
    // Wrong order, unknown field, id mismatch, bad path.
    vmm.fault(
        "PATCH",
        "/vm",
        Some(json!({"state": "Paused"})),
        "before starting",
    );
    vmm.fault(
        "PUT",
        "/machine-config",
        Some(json!({"vcpu_count": 1, "mem_size_mib": 64, "bogus": 1})),
        "bogus",
    );
    vmm.fault(
        "PUT",
        "/drives/a",
        Some(json!({"drive_id": "b", "path_on_host": "/x", "is_root_device": false})),
        "",
    );
    vmm.ok(
        "PUT",
        "/boot-source",
        json!({"kernel_image_path": "/nonexistent/k"}),
    );
    vmm.fault(
        "PUT",
        "/actions",
        Some(json!({"action_type": "InstanceStart"})),
        "/nonexistent/k",
    );
    assert_eq!(vmm.state(), "Not started");
    let (status, _) = vmm.raw("NONSENSE\r\n\r\n");
    assert_eq!(status, 400);

    vmm.ok(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 64}),
    );
    vmm.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    let disk = vmm.file("disk.img", &[0u8; 4096]);
    // io_uring (Async), as Firecracker's orchestrators may ask: its ring is
    // made at InstanceStart, and the swap below waits on it.
    let drive = json!({"drive_id": "data", "path_on_host": disk, "is_root_device": false,
                       "io_engine": "Async"});
    vmm.ok("PUT", "/drives/data", drive);
    vmm.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));
    vmm.fault(
        "PUT",
        "/actions",
        Some(json!({"action_type": "InstanceStart"})),
        "after starting",
    );
    vmm.fault(
        "PUT",
        "/machine-config",
        Some(json!({"vcpu_count": 2, "mem_size_mib": 64})),
        "after starting",
    );
    vmm.fault(
        "PUT",
        "/actions",
        Some(json!({"action_type": "FlushMetrics"})),
        "not configured",
    );
    vmm.fault(
        "PATCH",
        "/drives/nope",
        Some(json!({"drive_id": "nope", "path_on_host": "/x"})),
        "no drive nope",
    );
    vmm.fault(
        "PATCH",
        "/drives/data",
        Some(json!({"drive_id": "data", "path_on_host": "/nonexistent.img"})),
        "/nonexistent.img",
    );
    let bigger = vmm.file("bigger.img", &[0u8; 8192]);
    vmm.ok(
        "PATCH",
        "/drives/data",
        json!({"drive_id": "data", "path_on_host": bigger}),
    );
    let (_, config) = vmm.call("GET", "/vm/config", None);
    assert_eq!(config["drives"][0]["drive_id"], "data");
    assert_eq!(config["drives"][0]["io_engine"], "Async");
    assert_eq!(vmm.state(), "Running");
    let (code, stderr) = vmm.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}

#[test]
fn a_config_file_boots_at_once_like_the_cli() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = tiny_kernel(TinyKernel::PowerOff) else {
        eprintln!("SKIPPED: no hand-made kernel on this architecture");
        return;
    };
    let dir = TempDir::new().unwrap();
    let kernel_path = dir.as_path().join("kernel");
    std::fs::write(&kernel_path, kernel).unwrap();
    let config = dir.as_path().join("vm.json");
    let body = json!({
        "boot-source": {"kernel_image_path": kernel_path},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 64}
    });
    std::fs::write(&config, body.to_string()).unwrap();
    let tandem = || Command::new(env!("CARGO_BIN_EXE_tandem"));
    let from_file = tandem()
        .args(["--no-api", "--config-file"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let from_cli = tandem()
        .args(["run", "--cpus", "2", "--memory", "64M", "--kernel"])
        .arg(&kernel_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    for output in [&from_file, &from_cli] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains("2 vCPU(s), 64 MiB"), "{stderr}");
        assert!(stderr.contains("guest powered off"), "{stderr}");
    }
}

#[test]
fn startup_flags_are_checked_and_firecrackers_extra_flags_accepted() {
    let tandem = || Command::new(env!("CARGO_BIN_EXE_tandem"));
    let output = tandem().arg("--no-api").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    // --restore-snapshot needs its memory file, and runs alone.
    for args in [
        &["--restore-snapshot", "/s"][..],
        &["--restore-memory", "/m"],
        &[
            "--restore-snapshot",
            "/s",
            "--restore-memory",
            "/m",
            "--config-file",
            "/c",
        ],
        &[
            "--restore-snapshot",
            "/s",
            "--restore-memory",
            "/m",
            "--migrate-listen",
            "/l",
        ],
    ] {
        let output = tandem().args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
    // With --no-api, a missing snapshot is one clear line.
    let output = tandem()
        .args(["--no-api", "--restore-snapshot", "/nonexistent.state"])
        .args(["--restore-memory", "/nonexistent.mem"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent.state"), "{stderr}");
    let output = tandem().arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let dir = TempDir::new().unwrap();
    let config = dir.as_path().join("bad.json");
    std::fs::write(
        &config,
        r#"{"boot-source": {"kernel_image_path": "/k"}, "mmds-config": {}}"#,
    )
    .unwrap();
    let output = tandem()
        .args(["--no-api", "--boot-timer", "--no-seccomp", "--config-file"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ignoring Firecracker flags"), "{stderr}");
    let ignoring = stderr
        .lines()
        .find(|l| l.contains("ignoring Firecracker flags"));
    assert!(
        !ignoring.unwrap_or_default().contains("--no-seccomp"),
        "a real option now: {stderr}"
    );
    assert_eq!(
        stderr.matches("seccomp filters are off").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("\"mmds-config\" is not supported"),
        "{stderr}"
    );
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = TempDir::new().unwrap();
    let socket = dir.as_path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let mut first = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--api-sock")
        .arg(&socket)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "the API socket never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    let second = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("--api-sock")
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    sigterm(first.id());
    first.wait().unwrap();
    let mut stderr = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("stale"), "{stderr}");
    assert!(!socket.exists());
}

#[test]
fn tandem_api_sends_one_request_and_says_how_it_went() {
    let vmm = Vmm::spawn(&["--id", "client-test"]);
    let api = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["api", "--sock"])
            .arg(&vmm.socket)
            .args(args)
            .output()
            .unwrap()
    };
    let info = api(&["GET", "/"]);
    assert!(info.status.success());
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["id"], "client-test");
    let refused = api(&["PATCH", "/vm", r#"{"state": "Paused"}"#]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("fault_message"));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HTTP 400"));
}

#[test]
fn many_clients_at_once_are_all_served_under_the_seccomp_filters() {
    let vmm = Vmm::spawn(&[]);
    // Each connection has a thread of its own; with this many alive at
    // once glibc's malloc wants more arenas than it starts with.
    let mut clients: Vec<UnixStream> = (0..24)
        .map(|_| UnixStream::connect(&vmm.socket).unwrap())
        .collect();
    for client in &mut clients {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
    }
    for client in &mut clients {
        let mut answer = [0u8; 512];
        let n = client.read(&mut answer).unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &answer[..n]
        );
    }
    drop(clients);
    assert_eq!(vmm.state(), "Not started");
    let (code, stderr) = vmm.terminate();
    assert_eq!(code, Some(143), "{stderr}");
    assert!(!stderr.contains("seccomp"), "{stderr}");
}

#[test]
fn the_balloon_is_configured_resized_and_reported_over_the_api() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = tiny_kernel(TinyKernel::PortLoop) else {
        eprintln!("SKIPPED: no hand-made kernel on this architecture");
        return;
    };
    let vmm = Vmm::spawn(&["--id", "balloon-test"]);
    let kernel = vmm.file("kernel", &kernel);
    vmm.fault("GET", "/balloon", None, "No balloon device");
    vmm.ok(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 64}),
    );
    vmm.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    let too_big = json!({"amount_mib": 65, "deflate_on_oom": false});
    vmm.fault("PUT", "/balloon", Some(too_big), "64 MiB of RAM");
    let interval =
        json!({"amount_mib": 8, "deflate_on_oom": true, "stats_polling_interval_s": 65536});
    vmm.fault("PUT", "/balloon", Some(interval), "more than 65535");
    vmm.ok(
        "PUT",
        "/balloon",
        json!({"amount_mib": 8, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
    );
    vmm.ok("PATCH", "/balloon", json!({"amount_mib": 16}));
    vmm.fault("GET", "/balloon/statistics", None, "before starting");
    let every_5s = json!({"stats_polling_interval_s": 5});
    vmm.fault(
        "PATCH",
        "/balloon/statistics",
        Some(every_5s.clone()),
        "before starting",
    );
    vmm.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));
    let (_, balloon) = vmm.call("GET", "/balloon", None);
    assert_eq!(
        (
            balloon["amount_mib"].as_u64(),
            balloon["deflate_on_oom"].as_bool()
        ),
        (Some(16), Some(true))
    );
    vmm.ok("PATCH", "/balloon", json!({"amount_mib": 32}));
    let (_, stats) = vmm.call("GET", "/balloon/statistics", None);
    assert_eq!(stats["target_pages"], 32 * 256);
    assert_eq!(stats["target_mib"], 32);
    assert_eq!(
        stats["actual_pages"], 0,
        "the hand-made guest has no driver"
    );
    assert!(
        stats.get("free_memory").is_none(),
        "no driver, no guest statistics: {stats}"
    );
    // Firecracker's rule: statistics on at boot stay on.
    vmm.fault(
        "PATCH",
        "/balloon/statistics",
        Some(json!({"stats_polling_interval_s": 0})),
        "cannot be turned on or off",
    );
    vmm.ok("PATCH", "/balloon/statistics", every_5s);
    let (_, balloon) = vmm.call("GET", "/balloon", None);
    assert_eq!(balloon["stats_polling_interval_s"], 5);
    vmm.fault(
        "PATCH",
        "/balloon",
        Some(json!({"amount_mib": 65})),
        "64 MiB of RAM",
    );
    let (_, config) = vmm.call("GET", "/vm/config", None);
    assert_eq!(config["balloon"]["deflate_on_oom"], true);
    assert_eq!(vmm.state(), "Running");
    let (code, stderr) = vmm.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}
