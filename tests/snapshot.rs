//! Snapshot and restore on this host's /dev/kvm through Firecracker's API,
//! with a hand-made kernel that counts in guest RAM and prints each count's
//! low byte on the serial console: a guest paused, saved and killed, then
//! loaded into a new tandem process, must print exactly the next count —
//! its registers, RAM and devices carried over. Bad snapshots and
//! requests in the wrong state are refused with the VM unharmed.
//!
//! Tests that need KVM fail when `CI` is set and /dev/kvm is unusable, and
//! skip with a message otherwise; hand-made kernels exist on x86_64 only.

mod common;

use std::process::Stdio;
use std::time::Duration;

use arch::test_payloads::{tiny_kernel, TinyKernel};
use common::api_vmm::Vmm;
use common::counter::{assert_counting, counter_vm, counter_vm_with, Console};
use serde_json::{json, Value};
use vmm_sys_util::tempdir::TempDir;

#[test]
fn a_restored_guest_counts_on_from_where_it_was_saved() {
    let Some((first, console)) = counter_vm() else {
        return;
    };
    console.wait_for(8);
    let files = TempDir::new().unwrap();
    let state = files.as_path().join("vm.state");
    let memory = files.as_path().join("vm.mem");
    let create = json!({"snapshot_path": state, "mem_file_path": memory});
    first.fault(
        "PUT",
        "/snapshot/create",
        Some(create.clone()),
        "must be paused",
    );
    first.ok("PATCH", "/vm", json!({"state": "Paused"}));
    first.ok("PUT", "/snapshot/create", create);
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), 64 << 20);
    let (code, stderr) = first.terminate();
    assert_eq!(code, Some(143), "{stderr}");
    let before = console.finish();
    assert_counting(&before);
    let last = *before.last().unwrap();

    let mut second = Vmm::spawn_with_stdout(&[], Stdio::piped());
    let console = Console::attach(&mut second);
    let load = json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": memory},
    });
    second.ok("PUT", "/snapshot/load", load.clone());
    assert_eq!(second.state(), "Paused");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        console.bytes.lock().unwrap().is_empty(),
        "a loaded guest ran before resume"
    );
    second.fault(
        "PUT",
        "/snapshot/load",
        Some(load),
        "not supported after starting",
    );
    second.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    let after = console.wait_for(8);
    assert_eq!(
        after[0],
        last.wrapping_add(1),
        "before: {before:?}, after: {after:?}"
    );
    assert_counting(&after);
    // The snapshot's memory file is untouched by the restored guest.
    assert_eq!(std::fs::metadata(&memory).unwrap().len(), 64 << 20);
    let (code, stderr) = second.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}

#[test]
fn bad_snapshots_are_refused_and_the_vm_stays_configurable() {
    let Some((first, console)) = counter_vm() else {
        return;
    };
    console.wait_for(1);
    let files = TempDir::new().unwrap();
    let state = files.as_path().join("vm.state");
    let memory = files.as_path().join("vm.mem");
    first.ok("PATCH", "/vm", json!({"state": "Paused"}));
    first.fault(
        "PUT",
        "/snapshot/create",
        Some(json!({"snapshot_path": state, "mem_file_path": memory, "snapshot_type": "Diff"})),
        "needs dirty-page tracking",
    );
    first.ok(
        "PUT",
        "/snapshot/create",
        json!({"snapshot_path": state, "mem_file_path": memory}),
    );
    drop(first);
    let load = |state: &std::path::Path, memory: &std::path::Path| json!({"snapshot_path": state, "mem_file_path": memory});
    let vmm = Vmm::spawn(&[]);
    let corrupt = files.as_path().join("corrupt.state");
    let mut bytes = std::fs::read(&state).unwrap();
    *bytes.last_mut().unwrap() ^= 0x20;
    std::fs::write(&corrupt, &bytes).unwrap();
    vmm.fault(
        "PUT",
        "/snapshot/load",
        Some(load(&corrupt, &memory)),
        "checksum",
    );
    let short = files.as_path().join("short.mem");
    std::fs::write(&short, b"not all of RAM").unwrap();
    vmm.fault(
        "PUT",
        "/snapshot/load",
        Some(load(&state, &short)),
        "memory file holds 14 bytes",
    );
    let missing = files.as_path().join("missing");
    vmm.fault(
        "PUT",
        "/snapshot/load",
        Some(load(&missing, &memory)),
        "missing",
    );
    vmm.fault(
        "PUT",
        "/snapshot/load",
        Some(load(&memory, &memory)),
        "not a tandem snapshot",
    );
    assert_eq!(vmm.state(), "Not started");
    // Still NotStarted and unconfigured: the good snapshot loads.
    vmm.ok("PUT", "/snapshot/load", load(&state, &memory));
    assert_eq!(vmm.state(), "Paused");

    // A VM already given a kernel cannot take a snapshot instead.
    let configured = Vmm::spawn(&[]);
    let kernel = configured.file("k.elf", &tiny_kernel(TinyKernel::Counter).unwrap());
    configured.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    configured.fault(
        "PUT",
        "/snapshot/load",
        Some(load(&state, &memory)),
        "after a boot source or devices were configured",
    );
}

/// Bytes of `path` that are data, not holes (allocated blocks).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Loads `state` with `memory` into a new tandem, resumes it and returns
/// its first count.
fn first_count_after_load(state: &std::path::Path, memory: &std::path::Path) -> u8 {
    let mut vmm = Vmm::spawn_with_stdout(&[], Stdio::piped());
    let console = Console::attach(&mut vmm);
    let load = json!({"snapshot_path": state, "mem_file_path": memory, "resume_vm": true});
    vmm.ok("PUT", "/snapshot/load", load);
    let after = console.wait_for(4);
    assert_counting(&after);
    let (code, stderr) = vmm.terminate();
    assert_eq!(code, Some(143), "{stderr}");
    after[0]
}

#[test]
fn a_diff_snapshot_rebased_onto_its_full_one_restores_the_later_state() {
    let machine = json!({"vcpu_count": 1, "mem_size_mib": 64, "track_dirty_pages": true});
    let Some((vmm, console)) = counter_vm_with(machine) else {
        return;
    };
    let files = TempDir::new_in(std::path::Path::new("/var/tmp")).unwrap();
    let path = |name: &str| files.as_path().join(name);
    console.wait_for(4);
    vmm.ok("PATCH", "/vm", json!({"state": "Paused"}));
    let full = json!({"snapshot_path": path("full.state"), "mem_file_path": path("full.mem")});
    vmm.ok("PUT", "/snapshot/create", full);
    let at_full = *console.bytes.lock().unwrap().last().unwrap();
    vmm.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    let seen = console.bytes.lock().unwrap().len();
    console.wait_for(seen + 10);
    vmm.ok("PATCH", "/vm", json!({"state": "Paused"}));
    let diff = json!({"snapshot_path": path("diff.state"), "mem_file_path": path("diff.mem"),
                      "snapshot_type": "Diff"});
    vmm.ok("PUT", "/snapshot/create", diff);
    let at_diff = *console.bytes.lock().unwrap().last().unwrap();
    assert_ne!(at_full, at_diff);
    drop(vmm);

    // The diff holds the pages written since the full snapshot: the
    // counter's page, not the 64 MiB.
    assert_eq!(std::fs::metadata(path("diff.mem")).unwrap().len(), 64 << 20);
    let diff_data = allocated(&path("diff.mem"));
    assert!(
        (4096..=64 << 10).contains(&diff_data),
        "diff memory file: {diff_data} bytes of data"
    );
    eprintln!("diff memory file: {diff_data} bytes of data in 64 MiB");

    // The diff's state with the full snapshot's memory: the count in RAM
    // is the older one, so the guest goes on from there.
    assert_eq!(
        first_count_after_load(&path("diff.state"), &path("full.mem")),
        at_full.wrapping_add(1)
    );
    let rebase = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["rebase-memory", "--memory-path"])
        .arg(path("full.mem"))
        .arg("--diff-path")
        .arg(path("diff.mem"))
        .output()
        .unwrap();
    assert!(rebase.status.success(), "{rebase:?}");
    assert_eq!(
        first_count_after_load(&path("diff.state"), &path("full.mem")),
        at_diff.wrapping_add(1),
        "rebased: the later count"
    );

    // A chain: the rebased snapshot, loaded with tracking (its RAM read
    // in at load), runs on and gets a diff of its own, which rebases onto
    // the same file to the later count again.
    let mut restored = Vmm::spawn_with_stdout(&[], Stdio::piped());
    let console = Console::attach(&mut restored);
    let load = json!({"snapshot_path": path("diff.state"), "mem_file_path": path("full.mem"),
                      "track_dirty_pages": true, "resume_vm": true});
    restored.ok("PUT", "/snapshot/load", load);
    console.wait_for(10);
    restored.ok("PATCH", "/vm", json!({"state": "Paused"}));
    let again = json!({"snapshot_path": path("again.state"), "mem_file_path": path("again.mem"),
                       "snapshot_type": "Diff"});
    restored.ok("PUT", "/snapshot/create", again);
    let at_again = *console.bytes.lock().unwrap().last().unwrap();
    drop(restored);
    let again_data = allocated(&path("again.mem"));
    assert!(
        (4096..=64 << 10).contains(&again_data),
        "the restored VM's diff: {again_data} bytes of data"
    );
    let rebase = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["rebase-memory", "--memory-path"])
        .arg(path("full.mem"))
        .arg("--diff-path")
        .arg(path("again.mem"))
        .output()
        .unwrap();
    assert!(rebase.status.success(), "{rebase:?}");
    assert_eq!(
        first_count_after_load(&path("again.state"), &path("full.mem")),
        at_again.wrapping_add(1),
        "the second diff rebased: the latest count"
    );
}

/// `tandem snapshot ARGS` against `vmm`'s socket; its exit status and
/// output.
fn snapshot_command(vmm: &Vmm, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("snapshot")
        .arg("--api-sock")
        .arg(&vmm.socket)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.into_owned())
}

#[test]
fn the_command_line_saves_and_restores_a_guest() {
    let Some((first, console)) = counter_vm() else {
        return;
    };
    console.wait_for(8);
    let files = TempDir::new().unwrap();
    let path = |name: &str| files.as_path().join(name).display().to_string();
    let (state, memory) = (path("vm.state"), path("vm.mem"));
    let files_args = ["--snapshot-path", &state, "--mem-file-path", &memory];

    // A running VM is paused, saved and running again afterwards.
    let (ok, said) = snapshot_command(&first, &files_args);
    assert!(ok, "{said}");
    assert!(said.contains("Full snapshot saved") && said.contains("running again"));
    assert_eq!(first.state(), "Running");
    let seen = console.bytes.lock().unwrap().len();
    console.wait_for(seen + 4);

    // With --keep-paused it stays paused: nothing counts after the save.
    let keep = [&files_args[..], &["--keep-paused"]].concat();
    let (ok, said) = snapshot_command(&first, &keep);
    assert!(ok, "{said}");
    assert_eq!(first.state(), "Paused");
    // A save that fails says why and leaves the VM as it was.
    let bad = [
        "--snapshot-path",
        "/nonexistent/dir/s",
        "--mem-file-path",
        &memory,
    ];
    let (ok, said) = snapshot_command(&first, &bad);
    assert!(!ok && said.contains("the snapshot failed"), "{said}");
    assert_eq!(first.state(), "Paused");
    let (code, stderr) = first.terminate();
    assert_eq!(code, Some(143), "{stderr}");
    let before = console.finish();
    let last = *before.last().unwrap();

    // --restore-snapshot runs it at once from where it was saved.
    let restore = ["--restore-snapshot", &state, "--restore-memory", &memory];
    let mut second = Vmm::spawn_with_stdout(&restore, Stdio::piped());
    let after = Console::attach(&mut second).wait_for(8);
    assert_eq!(
        after[0],
        last.wrapping_add(1),
        "before: {before:?}, after: {after:?}"
    );
    assert_counting(&after);
    assert_eq!(second.state(), "Running");
    let (code, stderr) = second.terminate();
    assert_eq!(code, Some(143), "{stderr}");

    // --restore-paused leaves it for PATCH /vm.
    let paused = [&restore[..], &["--restore-paused"]].concat();
    let mut third = Vmm::spawn_with_stdout(&paused, Stdio::piped());
    let console = Console::attach(&mut third);
    assert_eq!(third.state(), "Paused");
    std::thread::sleep(Duration::from_millis(100));
    assert!(console.bytes.lock().unwrap().is_empty(), "ran while paused");
    third.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    assert_eq!(console.wait_for(4)[0], last.wrapping_add(1));
    let (code, stderr) = third.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}

/// The TAPs process `pid` holds open, by name (the tun driver's fdinfo).
fn taps_held_by(pid: u32) -> Vec<String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap();
    let infos = fds.filter_map(|fd| std::fs::read_to_string(fd.unwrap().path()).ok());
    infos
        .filter_map(|info| {
            Some(
                info.lines()
                    .find_map(|l| l.strip_prefix("iff:"))?
                    .trim()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn network_overrides_put_a_loaded_interface_on_another_tap() {
    if common::kvm_or_skip().is_none() {
        return;
    }
    let Some(kernel) = tiny_kernel(TinyKernel::Counter) else {
        eprintln!("SKIPPED: no hand-made kernel for this architecture");
        return;
    };
    let Some(netns) = common::netns::NetNs::create_or_skip("overrides") else {
        return;
    };
    // TAPs exist only in the test's own network namespace.
    netns.run(|| {
        for tap in ["tapa", "tapb"] {
            let made = std::process::Command::new("ip")
                .args(["tuntap", "add", tap, "mode", "tap", "vnet_hdr"])
                .status()
                .unwrap();
            assert!(made.success(), "ip tuntap add {tap}");
        }
        let mut first = Vmm::spawn_with_stdout(&[], Stdio::piped());
        let console = Console::attach(&mut first);
        let kernel = first.file("counter.elf", &kernel);
        first.ok(
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 1, "mem_size_mib": 64}),
        );
        first.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
        let eth0 = json!({"iface_id": "eth0", "host_dev_name": "tapa"});
        first.ok("PUT", "/network-interfaces/eth0", eth0);
        first.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));
        console.wait_for(4);
        assert_eq!(taps_held_by(first.child.id()), ["tapa"]);
        first.ok("PATCH", "/vm", json!({"state": "Paused"}));
        let files = TempDir::new().unwrap();
        let (state, memory) = (files.as_path().join("s"), files.as_path().join("m"));
        let create = json!({"snapshot_path": state, "mem_file_path": memory});
        first.ok("PUT", "/snapshot/create", create);
        let (code, stderr) = first.terminate();
        assert_eq!(code, Some(143), "{stderr}");
        let last = *console.finish().last().unwrap();

        let mut second = Vmm::spawn_with_stdout(&[], Stdio::piped());
        let console = Console::attach(&mut second);
        let load = |overrides: Value| {
            json!({"snapshot_path": state, "mem_file_path": memory,
                   "resume_vm": true, "network_overrides": overrides})
        };
        let wrong = json!([{"iface_id": "eth9", "host_dev_name": "tapb"}]);
        second.fault(
            "PUT",
            "/snapshot/load",
            Some(load(wrong)),
            "no interface \"eth9\"",
        );
        assert_eq!(second.state(), "Not started");
        let right = json!([{"iface_id": "eth0", "host_dev_name": "tapb"}]);
        second.ok("PUT", "/snapshot/load", load(right));
        assert_eq!(taps_held_by(second.child.id()), ["tapb"]);
        let (_, config) = second.call("GET", "/vm/config", None);
        assert_eq!(
            config["network-interfaces"][0]["host_dev_name"], "tapb",
            "{config}"
        );
        assert_eq!(console.wait_for(4)[0], last.wrapping_add(1));
        let (code, stderr) = second.terminate();
        assert_eq!(code, Some(143), "{stderr}");
    });
}
