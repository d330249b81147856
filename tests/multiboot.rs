//! Multiboot boot and the debug-exit port, end to end through the `tandem`
//! binary on this host's /dev/kvm: a hand-made multiboot image checks the
//! magic, the information block, its module and command line, and reports
//! through `--debug-exit`, so tandem's exit status says what the guest saw.
//! Skipped (or failed when `CI` is set) without a usable /dev/kvm, and
//! skipped where the architecture has no such image.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use arch::test_payloads::{
    tiny_kernel, TinyKernel, MULTIBOOT_ALL_GOOD, MULTIBOOT_CMDLINE_PREFIX, MULTIBOOT_MODULE_PREFIX,
};
use vmm_sys_util::tempfile::TempFile;

fn file_with(bytes: &[u8]) -> TempFile {
    let file = TempFile::new().unwrap();
    file.as_file().write_all(bytes).unwrap();
    file
}

/// Boots the multiboot check image with `extra` flags in a 64 MiB guest
/// (the size its mem_upper check expects) unless `extra` says otherwise,
/// or returns `None` where it cannot run here.
fn run_check(extra: &[&str], initrd: Option<&[u8]>) -> Option<Output> {
    common::kvm_or_skip()?;
    let Some(image) = tiny_kernel(TinyKernel::MultibootCheck) else {
        eprintln!("SKIPPED: no hand-made multiboot image on this architecture");
        return None;
    };
    let kernel = file_with(&image);
    let initrd = initrd.map(file_with);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.arg("run");
    if !extra.contains(&"--memory") {
        cmd.args(["--memory", "64M"]);
    }
    cmd.args(["--debug-exit", "--kernel"])
        .arg(kernel.as_path())
        .args(extra)
        .stdin(Stdio::null());
    if let Some(initrd) = &initrd {
        cmd.arg("--initrd").arg(initrd.as_path());
    }
    Some(cmd.output().unwrap())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cmdline() -> String {
    format!(
        "{}1 extra",
        std::str::from_utf8(MULTIBOOT_CMDLINE_PREFIX).unwrap()
    )
}

#[test]
fn multiboot_guest_sees_magic_info_module_and_cmdline_and_exits_with_its_status() {
    let mut module = MULTIBOOT_MODULE_PREFIX.to_vec();
    module.extend_from_slice(b"\nNR_CPUS=1\n");
    let Some(output) = run_check(&["--cmdline", &cmdline()], Some(&module)) else {
        return;
    };
    let log = stderr(&output);
    let status = (i32::from(MULTIBOOT_ALL_GOOD) << 1) | 1;
    assert_eq!(output.status.code(), Some(status), "{log}");
    assert!(log.contains("loaded as a multiboot image"), "{log}");
    let exits: Vec<_> = log
        .lines()
        .filter(|l| l.contains("debug-exit port"))
        .collect();
    assert_eq!(exits.len(), 1, "{log}");
    assert!(exits[0].contains(&format!(
        "0x21 to the debug-exit port: exit status {status}"
    )));
}

#[test]
fn the_guest_notices_a_missing_module_or_a_different_cmdline() {
    // The image reports the number of the first check that failed.
    let Some(no_module) = run_check(&["--cmdline", &cmdline()], None) else {
        return;
    };
    // Check 2: without a module the info flags lack the modules bit.
    assert_eq!(
        no_module.status.code(),
        Some((2 << 1) | 1),
        "{}",
        stderr(&no_module)
    );
    let module = MULTIBOOT_MODULE_PREFIX.to_vec();
    let Some(other_cmdline) = run_check(&["--cmdline", "console=ttyS0"], Some(&module)) else {
        return;
    };
    assert_eq!(
        other_cmdline.status.code(),
        Some((6 << 1) | 1),
        "{}",
        stderr(&other_cmdline)
    );
    let Some(bigger) = run_check(
        &["--memory", "128M", "--cmdline", &cmdline()],
        Some(&module),
    ) else {
        return;
    };
    assert_eq!(
        bigger.status.code(),
        Some((3 << 1) | 1),
        "mem_upper: {}",
        stderr(&bigger)
    );
}
