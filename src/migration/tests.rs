//! The destination refuses a stream that is not a tandem migration, of
//! another protocol version, or that writes outside guest RAM, with one
//! line and before building anything.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm_sys_util::tempdir::TempDir;

use super::*;

/// Receives on a fresh socket while `send` plays the source; returns
/// the destination's error.
fn refusal(send: impl FnOnce(&mut UnixStream)) -> String {
    let dir = TempDir::new().unwrap();
    let path: PathBuf = dir.as_path().join("m.sock");
    let listening = path.clone();
    let destination = std::thread::spawn(move || receive(&listening).map(|_| ()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match UnixStream::connect(&path) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no destination: {e}"),
        }
    };
    send(&mut stream);
    drop(stream);
    let err = destination.join().unwrap().unwrap_err();
    assert!(!path.exists(), "the socket is removed once accepted");
    format!("{err:#}")
}

fn hello(stream: &mut UnixStream, ram: u64) {
    write_hello(stream, ram).unwrap();
}

#[test]
fn a_stream_that_is_not_a_migration_is_refused() {
    let err = refusal(|s| s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap());
    assert!(err.contains("not a tandem migration source"), "{err}");
}

#[test]
fn another_protocol_version_is_refused() {
    let err = refusal(|s| {
        s.write_all(MAGIC).unwrap();
        s.write_all(&(PROTOCOL_VERSION + 1).to_le_bytes()).unwrap();
        s.write_all(&(1u64 << 20).to_le_bytes()).unwrap();
    });
    assert!(err.contains("protocol version 2"), "{err}");
}

#[test]
fn pages_outside_guest_ram_are_refused() {
    let err = refusal(|s| {
        hello(s, 1 << 20);
        s.write_all(&[TAG_PAGES]).unwrap();
        s.write_all(&((1u64 << 20) - 4096).to_le_bytes()).unwrap();
        s.write_all(&8192u32.to_le_bytes()).unwrap();
    });
    assert!(err.contains("do not fit"), "{err}");
}

#[test]
fn a_stream_that_ends_early_or_garbled_is_refused() {
    let err = refusal(|s| hello(s, 1 << 20));
    assert!(err.contains("ended early"), "{err}");
    let err = refusal(|s| {
        hello(s, 1 << 20);
        s.write_all(&[9]).unwrap();
    });
    assert!(err.contains("unknown record 9"), "{err}");
    let err = refusal(|s| {
        hello(s, 1 << 20);
        s.write_all(&[TAG_STATE]).unwrap();
        s.write_all(&4u64.to_le_bytes()).unwrap();
        s.write_all(b"junk").unwrap();
    });
    assert!(err.contains("not a tandem snapshot"), "{err}");
}
