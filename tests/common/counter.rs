//! A hand-made guest that counts in RAM and prints each count's low byte
//! on the serial console, run by the real binary through the API, with
//! its console collected: what the snapshot and migration tests watch.
// Not every test crate that includes `common` uses all of this.
#![allow(dead_code)]

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arch::test_payloads::{tiny_kernel, TinyKernel};
use serde_json::json;

use super::api_vmm::Vmm;

/// The guest console of `vmm`, collected by a thread as it comes.
pub struct Console {
    pub bytes: Arc<Mutex<Vec<u8>>>,
    reader: JoinHandle<()>,
}

impl Console {
    pub fn attach(vmm: &mut Vmm) -> Console {
        let mut stdout = vmm.child.stdout.take().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Console { bytes, reader }
    }

    /// Waits until at least `count` bytes arrived; returns them all.
    pub fn wait_for(&self, count: usize) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.bytes.lock().unwrap().clone();
            if seen.len() >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "only {} bytes of output",
                seen.len()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything, once tandem closed its stdout (exited).
    pub fn finish(self) -> Vec<u8> {
        self.reader.join().unwrap();
        Arc::try_unwrap(self.bytes).unwrap().into_inner().unwrap()
    }
}

/// Each byte is the one before plus one (the counter's low byte).
pub fn assert_counting(bytes: &[u8]) {
    for pair in bytes.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "not counting: {bytes:?}");
    }
}

/// A started counter guest.
pub fn counter_vm() -> Option<(Vmm, Console)> {
    counter_vm_with(json!({"vcpu_count": 1, "mem_size_mib": 64}))
}

/// A started counter guest of machine configuration `machine`.
pub fn counter_vm_with(machine: serde_json::Value) -> Option<(Vmm, Console)> {
    super::kvm_or_skip()?;
    let Some(kernel) = tiny_kernel(TinyKernel::Counter) else {
        eprintln!("SKIPPED: no hand-made kernel for this architecture");
        return None;
    };
    let mut vmm = Vmm::spawn_with_stdout(&[], Stdio::piped());
    let console = Console::attach(&mut vmm);
    let kernel = vmm.file("counter.elf", &kernel);
    vmm.ok("PUT", "/machine-config", machine);
    vmm.ok("PUT", "/boot-source", json!({"kernel_image_path": kernel}));
    vmm.ok("PUT", "/actions", json!({"action_type": "InstanceStart"}));
    Some((vmm, console))
}
