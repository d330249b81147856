//! The PCI host bridge end to end through the `tandem` binary on this
//! host's /dev/kvm: a hand-made guest (no Linux needed) reads the ids of
//! 00:00.0 and 00:01.0 through ports 0xcf8/0xcfc and through ECAM, moves
//! the virtio-rng's BAR0, turns memory decoding on and off, reads the BAR
//! and programs an MSI-X vector through it, printing each value on the
//! serial console, then ends through the debug-exit port. Seccomp filters
//! are on (the default), so the vCPU's KVM_IOEVENTFD and
//! KVM_SET_GSI_ROUTING calls are checked too. Skipped (or failed
//! when `CI` is set) without a usable /dev/kvm, and skipped where the
//! architecture has no such guest.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use arch::test_payloads::{tiny_kernel, TinyKernel, PCI_PROBE_LINES};
use vmm_sys_util::tempfile::TempFile;

/// Runs the probe with `extra` flags; `None` where it cannot run here.
fn probe(extra: &[&str]) -> Option<Output> {
    common::kvm_or_skip()?;
    let Some(image) = tiny_kernel(TinyKernel::PciProbe) else {
        eprintln!("SKIPPED: no hand-made PCI probe on this architecture");
        return None;
    };
    let kernel = TempFile::new().unwrap();
    kernel.as_file().write_all(&image).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["run", "--memory", "64M", "--debug-exit", "--kernel"])
        .arg(kernel.as_path())
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Some(output)
}

/// The probe's lines, as numbers.
fn values(output: &Output) -> Vec<u32> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| u32::from_str_radix(line.trim(), 16).unwrap())
        .collect()
}

#[test]
fn a_guest_finds_the_host_bridge_and_virtio_rng_and_maps_its_bar() {
    let Some(output) = probe(&["--transport", "pci", "--rng"]) else {
        return;
    };
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some((0x10 << 1) | 1), "{log}");
    let values = values(&output);
    assert_eq!(values.len(), PCI_PROBE_LINES, "{values:x?} {log}");
    assert_eq!(values[0], 0x0008_1b36, "00:00.0 through 0xcf8: host bridge");
    assert_eq!(values[1], 0x1044_1af4, "00:01.0 through 0xcf8: virtio-rng");
    assert_eq!(values[2], 0x1044_1af4, "00:01.0 through ECAM");
    assert_eq!(values[3], u32::MAX, "00:02.0: empty");
    assert_eq!(values[4], 0xc000_0004, "BAR0 moved, 64-bit memory");
    assert_eq!(values[5], 1, "num_queues through BAR0 with decoding on");
    assert_eq!(values[6], 0x30, "MSI-X vector 0's data reads back");
    assert_eq!(values[7], 0xffff, "nothing there with decoding off");
    // Unmasking the vector set its GSI route from the vCPU thread, under
    // its seccomp filter, and KVM took the table.
    assert!(!log.contains("MSI-X vector"), "{log}");
}

#[test]
fn without_pci_the_configuration_space_is_empty() {
    let Some(output) = probe(&["--rng"]) else {
        return;
    };
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some((0x10 << 1) | 1), "{log}");
    let values = values(&output);
    assert_eq!(values[0], u32::MAX, "no host bridge behind 0xcf8: {log}");
    assert_eq!(values[1], u32::MAX);
}
