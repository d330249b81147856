//! A network namespace a test creates for itself, so a test that uses TCP
//! touches no address outside it: the test runs its body on a thread that
//! has entered the namespace, and every process that thread spawns starts
//! there too. Removed when the test is done.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// A named network namespace with its loopback up; deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `tandem-test-NAME-PID`, or explains why it cannot (not
    /// root, no `ip`): a failure in CI, a skip with a message elsewhere.
    pub fn create_or_skip(name: &str) -> Option<NetNs> {
        let name = format!("tandem-test-{name}-{}", std::process::id());
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if ip(&["netns", "add", &name]) {
            let netns = NetNs { name };
            assert!(ip(&["-n", &netns.name, "link", "set", "lo", "up"]));
            return Some(netns);
        }
        let why = "cannot create a network namespace (needs root and iproute2)";
        if std::env::var_os("CI").is_some() {
            panic!("{why}: these tests must run in CI");
        }
        eprintln!("SKIPPED: {why}");
        None
    }

    /// Runs `body` on a new thread inside the namespace; returns what it
    /// returns (and re-raises its panic).
    pub fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let fd = File::open(&path).unwrap();
                    move_into_link_name_space(fd.as_fd(), Some(LinkNameSpaceType::Network))
                        .unwrap();
                    body()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
