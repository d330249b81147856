//! The vsock device through the tandem binary (seccomp on) on this host's
//! /dev/kvm, with a hand-made guest that has no vsock driver: `PUT /vsock`
//! binds the host socket when the VM is built, the configuration reports
//! it, a second VM cannot take a live socket, a host program's connection
//! waits for the guest without harm, and a snapshot of it loads in a new
//! process beside the first with `vsock_override` naming another socket.
//! Data transfer needs a Linux guest: the e2e rows (ci/vsock-e2e.sh).
//!
//! Tests that need KVM fail when `CI` is set and /dev/kvm is unusable, and
//! skip with a message otherwise; hand-made kernels exist on x86_64 only.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use arch::test_payloads::{tiny_kernel, TinyKernel};
use common::api_vmm::Vmm;
use serde_json::json;

/// A started counter guest with a vsock device on `uds`.
fn vsock_vm(uds: &str) -> Option<Vmm> {
    common::kvm_or_skip()?;
    let Some(kernel) = tiny_kernel(TinyKernel::Counter) else {
        eprintln!("SKIPPED: no hand-made kernel for this architecture");
        return None;
    };
    let vmm = Vmm::spawn(&[]);
    let kernel = vmm.file("counter.elf", &kernel);
    vmm.ok(
        "PUT",
        "/machine-config",
        json!({"vcpu_count": 1, "mem_size_mib": 64}),
    );
    vmm.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    vmm.ok("PUT", "/vsock", json!({"guest_cid": 3, "uds_path": uds}));
    vmm.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));
    Some(vmm)
}

#[test]
fn a_vsock_vm_binds_its_socket_reports_it_and_restores_on_another() {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let uds = dir.as_path().join("v.sock").display().to_string();
    let Some(vmm) = vsock_vm(&uds) else {
        return;
    };
    let (status, config) = vmm.call("GET", "/vm/config", None);
    assert_eq!(status, 200);
    assert_eq!(config["vsock"]["guest_cid"], 3, "{config}");
    assert_eq!(config["vsock"]["uds_path"], uds.as_str());
    // A host program connects; the guest has no driver, so it waits.
    let mut host = UnixStream::connect(&uds).expect("tandem listens on uds_path");
    host.write_all(b"CONNECT 52\n").unwrap();
    assert_eq!(vmm.state(), "Running");
    // A second VM cannot take the live socket.
    let second = Vmm::spawn(&[]);
    let kernel = second.file("k.elf", &tiny_kernel(TinyKernel::Counter).unwrap());
    second.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    second.ok("PUT", "/vsock", json!({"guest_cid": 4, "uds_path": uds}));
    let start = Some(json!({"action_type": "InstanceStart"}));
    second.fault("PUT", "/actions", start, "vsock socket");
    vmm.ok("PATCH", "/vm", json!({"state": "Paused"}));
    let files = dir.as_path();
    let create = json!({
        "snapshot_path": files.join("vm.state"),
        "mem_file_path": files.join("vm.mem"),
    });
    vmm.ok("PUT", "/snapshot/create", create);
    vmm.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    assert_eq!(vmm.state(), "Running");

    // Loaded beside the first VM: its socket is taken, so the load fails
    // and says why — unless vsock_override names another.
    let third = Vmm::spawn(&[]);
    let load = |vsock_override: Option<&str>| {
        let mut load = json!({
            "snapshot_path": files.join("vm.state"),
            "mem_file_path": files.join("vm.mem"),
            "resume_vm": true,
        });
        if let Some(uds) = vsock_override {
            load["vsock_override"] = json!({"uds_path": uds});
        }
        load
    };
    third.fault("PUT", "/snapshot/load", Some(load(None)), "vsock socket");
    let other = files.join("v2.sock").display().to_string();
    third.ok("PUT", "/snapshot/load", load(Some(&other)));
    let (_, config) = third.call("GET", "/vm/config", None);
    assert_eq!(config["vsock"]["uds_path"], other.as_str(), "{config}");
    UnixStream::connect(&other).expect("the restored VM listens on the override");
    assert_eq!(third.state(), "Running");
    for vmm in [vmm, third] {
        let (code, stderr) = vmm.terminate();
        assert_eq!(code, Some(143), "{stderr}");
        assert!(!stderr.contains("seccomp"), "{stderr}");
    }
}
