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
/// the destination's error. The source's bytes go in one write: the
/// destination may refuse and hang up before a later write would land.
fn refusal(send: impl FnOnce(&mut Vec<u8>)) -> String {
    let dir = TempDir::new().unwrap();
    let path: PathBuf = dir.as_path().join("m.sock");
    let listening = path.clone();
    let destination = std::thread::spawn(move || receive(&Endpoint::Unix(listening)).map(|_| ()));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = loop {
        match UnixStream::connect(&path) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("no destination: {e}"),
        }
    };
    let mut bytes = Vec::new();
    send(&mut bytes);
    stream.write_all(&bytes).unwrap();
    drop(stream);
    let err = destination.join().unwrap().unwrap_err();
    assert!(!path.exists(), "the socket is removed once accepted");
    format!("{err:#}")
}

fn hello(stream: &mut Vec<u8>, ram: u64) {
    write_hello(stream, ram).unwrap();
}

#[test]
fn a_stream_that_is_not_a_migration_is_refused() {
    let err = refusal(|s| s.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(err.contains("not a tandem migration source"), "{err}");
}

#[test]
fn another_protocol_version_is_refused() {
    let err = refusal(|s| {
        s.extend_from_slice(MAGIC);
        s.extend_from_slice(&(PROTOCOL_VERSION + 1).to_le_bytes());
        s.extend_from_slice(&(1u64 << 20).to_le_bytes());
    });
    assert!(err.contains("protocol version 2"), "{err}");
}

#[test]
fn pages_outside_guest_ram_are_refused() {
    let err = refusal(|s| {
        hello(s, 1 << 20);
        s.extend_from_slice(&[TAG_PAGES]);
        s.extend_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
        s.extend_from_slice(&8192u32.to_le_bytes());
    });
    assert!(err.contains("do not fit"), "{err}");
}

#[test]
fn a_stream_that_ends_early_or_garbled_is_refused() {
    let err = refusal(|s| hello(s, 1 << 20));
    assert!(err.contains("ended early"), "{err}");
    let err = refusal(|s| {
        hello(s, 1 << 20);
        s.extend_from_slice(&[9]);
    });
    assert!(err.contains("unknown record 9"), "{err}");
    let err = refusal(|s| {
        hello(s, 1 << 20);
        s.extend_from_slice(&[TAG_STATE]);
        s.extend_from_slice(&4u64.to_le_bytes());
        s.extend_from_slice(b"junk");
    });
    assert!(err.contains("not a tandem snapshot"), "{err}");
}

#[test]
fn endpoints_are_unix_paths_or_numeric_tcp_addresses() {
    let unix = |path: &str| Ok(Endpoint::Unix(path.into()));
    assert_eq!("/tmp/m.sock".parse(), unix("/tmp/m.sock"));
    assert_eq!("unix:/tmp/m.sock".parse(), unix("/tmp/m.sock"));
    assert_eq!("relative.sock".parse(), unix("relative.sock"));
    let tcp: Endpoint = "tcp:192.0.2.1:4000".parse().unwrap();
    assert_eq!(tcp, Endpoint::Tcp("192.0.2.1:4000".parse().unwrap()));
    assert_eq!(tcp.to_string(), "tcp:192.0.2.1:4000");
    let v6: Endpoint = "tcp:[::1]:4000".parse().unwrap();
    assert_eq!(v6.to_string(), "tcp:[::1]:4000");
    for bad in [
        "tcp:host.example:4000",
        "tcp:192.0.2.1",
        "tcp:192.0.2.1:70000",
        "tcp:",
    ] {
        let err = bad.parse::<Endpoint>().unwrap_err();
        assert!(err.contains("tcp:IP:PORT"), "{bad}: {err}");
    }
    assert!("unix:".parse::<Endpoint>().unwrap_err().contains("empty"));
}
