//! Live migration between two tandem processes on this host's /dev/kvm:
//! the counting guest (tests/common/counter.rs) moves from a source to a
//! destination started with `--migrate-listen` and prints exactly the next
//! count there; the source exits — over a Unix socket, and over TCP inside
//! a network namespace the test creates. A migration to nowhere fails
//! with the source still counting.
//!
//! Tests that need KVM fail when `CI` is set and /dev/kvm is unusable, and
//! skip with a message otherwise; hand-made kernels exist on x86_64 only.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::api_vmm::Vmm;
use common::counter::{assert_counting, counter_vm, Console};
use common::netns::NetNs;
use serde_json::json;
use vmm_sys_util::tempdir::TempDir;

#[test]
fn a_migrated_guest_counts_on_in_the_destination() {
    let dir = TempDir::new().unwrap();
    let listen = dir.as_path().join("migrate.sock");
    migrate_the_counter(listen.to_str().unwrap());
}

#[test]
fn a_guest_migrates_over_tcp() {
    let Some(netns) = NetNs::create_or_skip("migration") else {
        return;
    };
    // Inside the test's own namespace: its loopback is no one else's.
    netns.run(|| migrate_the_counter("tcp:127.0.0.1:7070"));
}

/// Migrates the counting guest from a source tandem to a destination
/// listening on `endpoint`: the source exits 0, the destination prints
/// the next count and counts on.
fn migrate_the_counter(endpoint: &str) {
    let Some((mut source, before)) = counter_vm() else {
        return;
    };
    let mut destination = Vmm::spawn_with_stdout(&["--migrate-listen", endpoint], Stdio::piped());
    let after = Console::attach(&mut destination);
    before.wait_for(8);
    let (status, report) = source.call("PUT", "/migrate", Some(json!({"destination": endpoint})));
    assert_eq!(status, 200, "{report}");
    assert!(report["rounds"].as_u64().unwrap() >= 1, "{report}");
    let (downtime, total) = (report["downtime_ms"].as_u64(), report["total_ms"].as_u64());
    assert!(downtime.unwrap() <= total.unwrap(), "{report}");
    eprintln!("migration report: {report}");

    // The source is done: it exits on its own, successfully.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = source.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the source did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(code, Some(0));
    let before = before.finish();
    assert_counting(&before);
    let last = *before.last().unwrap();

    let counted = after.wait_for(8);
    assert_eq!(
        counted[0],
        last.wrapping_add(1),
        "before: {before:?}, after: {counted:?}"
    );
    assert_counting(&counted);
    assert_eq!(destination.state(), "Running");
    let (code, stderr) = destination.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}

#[test]
fn a_migration_to_nowhere_leaves_the_source_running() {
    let Some((source, console)) = counter_vm() else {
        return;
    };
    console.wait_for(4);
    let dir = TempDir::new().unwrap();
    let nowhere = dir.as_path().join("nobody.sock");
    source.fault(
        "PUT",
        "/migrate",
        Some(json!({"destination": nowhere})),
        "migration destination",
    );
    assert_eq!(source.state(), "Running");
    let seen = console.bytes.lock().unwrap().len();
    console.wait_for(seen + 4);
    // Paused and migrated nowhere: still paused, and resumable.
    source.ok("PATCH", "/vm", json!({"state": "Paused"}));
    source.fault(
        "PUT",
        "/migrate",
        Some(json!({"destination": nowhere})),
        "migration destination",
    );
    assert_eq!(source.state(), "Paused");
    source.ok("PATCH", "/vm", json!({"state": "Resumed"}));
    let seen = console.bytes.lock().unwrap().len();
    console.wait_for(seen + 4);
    let (code, stderr) = source.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}

/// A destination that takes everything, then says it cannot run the
/// guest: reads the stream as the protocol lays it out (docs/migration.md)
/// and answers status 1.
fn refusing_destination(path: &std::path::Path) -> std::thread::JoinHandle<u64> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut read = |len: usize| {
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).unwrap();
            buf
        };
        let number = |bytes: Vec<u8>| bytes.iter().rev().fold(0u64, |n, &b| n << 8 | u64::from(b));
        assert_eq!(&read(8), b"TANDEMMG");
        read(4 + 8);
        let mut pages = 0;
        loop {
            match read(1)[0] {
                1 => {
                    read(8);
                    let len = number(read(4));
                    read(len as usize);
                    pages += len;
                }
                2 => {
                    let len = number(read(8));
                    read(len as usize);
                    break;
                }
                tag => panic!("record {tag}"),
            }
        }
        let message = b"no room here";
        let mut answer = vec![1u8];
        answer.extend((message.len() as u32).to_le_bytes());
        answer.extend(message);
        stream.write_all(&answer).unwrap();
        pages
    })
}

#[test]
fn a_destination_that_refuses_the_guest_leaves_the_source_running() {
    let Some((source, console)) = counter_vm() else {
        return;
    };
    console.wait_for(4);
    let dir = TempDir::new().unwrap();
    let path = dir.as_path().join("refusing.sock");
    let destination = refusing_destination(&path);
    source.fault(
        "PUT",
        "/migrate",
        Some(json!({"destination": path})),
        "the destination could not run the guest: no room here",
    );
    assert!(destination.join().unwrap() > 0, "RAM was sent");
    // Paused for the stop-and-copy, resumed after the refusal.
    assert_eq!(source.state(), "Running");
    let seen = console.bytes.lock().unwrap().len();
    let after = console.wait_for(seen + 4);
    assert_counting(&after);
    let (code, stderr) = source.terminate();
    assert_eq!(code, Some(143), "{stderr}");
}
