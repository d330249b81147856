//! The `tandem` binary end to end on this host's /dev/kvm, with hand-made
//! kernels: how each way a run can end maps to an exit code and one line
//! of output, and that bad input is refused before any KVM work.
//!
//! Runs wherever KVM does, PVM included; stock kernels are the end-to-end
//! harness's job (ci/e2e.sh). Tests that need KVM fail when `CI` is set
//! and /dev/kvm is unusable, and skip with a message otherwise.

mod common;

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use arch::test_payloads::{tiny_kernel, TinyKernel};
use vmm_sys_util::tempfile::TempFile;

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

fn kvm_usable() -> bool {
    common::kvm_or_skip().is_some()
}

/// A temp file holding `bytes`.
fn file_with(bytes: &[u8]) -> TempFile {
    let file = TempFile::new().unwrap();
    file.as_file().write_all(bytes).unwrap();
    file
}

/// The tiny kernel as a file, or `None` (with a note) where the
/// architecture has none.
fn kernel_file(kernel: TinyKernel) -> Option<TempFile> {
    let image = tiny_kernel(kernel);
    if image.is_none() {
        eprintln!("SKIPPED: no hand-made {kernel:?} kernel on this architecture");
    }
    image.map(|bytes| file_with(&bytes))
}

fn run(kernel: &Path, extra: &[&str]) -> Output {
    tandem()
        .args(["run", "--memory", "64M", "--kernel"])
        .arg(kernel)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn guest_power_off_exits_0_and_says_so() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::PowerOff) else {
        return;
    };
    let output = run(kernel.as_path(), &[]);
    let lines = stderr_lines(&output);
    assert_eq!(output.status.code(), Some(0), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("guest powered off")),
        "{lines:?}"
    );
}

#[test]
fn guest_reset_exits_0_and_says_so() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::Reset) else {
        return;
    };
    let output = run(kernel.as_path(), &["--cpus", "2"]);
    let lines = stderr_lines(&output);
    assert_eq!(output.status.code(), Some(0), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("reset")), "{lines:?}");
}

#[test]
fn guest_crash_is_a_clear_error_not_a_hang() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::Crash) else {
        return;
    };
    let output = run(kernel.as_path(), &[]);
    let lines = stderr_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{lines:?}");
    let error = lines.iter().find(|l| l.starts_with("tandem: error:"));
    assert!(
        error.is_some_and(|l| l.contains("triple fault")),
        "{lines:?}"
    );
}

#[test]
fn sigterm_and_sigint_stop_a_spinning_guest_cleanly() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::Spin) else {
        return;
    };
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let mut child = tandem()
            .args(["run", "--memory", "64M", "--cpus", "2", "--kernel"])
            .arg(kernel.as_path())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the vCPUs run: the signal must kick them out of KVM_RUN.
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "tandem ended early: {seen:?}"
            );
            let running = line.contains("first KVM_RUN");
            seen.push(line);
            if running {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        let status = child.wait().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "slow to stop");
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        assert_eq!(status.code(), Some(code), "{seen:?} {rest}");
        assert!(
            rest.contains(&format!("stopped: signal {signal}")),
            "{rest}"
        );
    }
}

#[test]
fn corrupt_and_missing_kernels_get_one_line_and_no_panic() {
    let garbage: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let corrupt = file_with(&garbage);
    let empty = file_with(&[]);
    for kernel in [
        corrupt.as_path(),
        empty.as_path(),
        Path::new("/nonexistent/vmlinuz"),
    ] {
        let output = run(kernel, &[]);
        let lines = stderr_lines(&output);
        let errors: Vec<_> = lines
            .iter()
            .filter(|l| l.starts_with("tandem: error:"))
            .collect();
        assert_eq!(output.status.code(), Some(1), "{lines:?}");
        assert_eq!(errors.len(), 1, "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("panicked")), "{lines:?}");
    }
}

#[test]
fn bad_flags_and_sizes_get_one_line_and_exit_2() {
    for args in [
        vec!["run", "--kernel", "/x", "--bogus"],
        vec!["run", "--kernel", "/x", "--memory", "lots"],
        vec!["run", "--kernel", "/x", "--cpus", "999"],
        vec!["run"],
        vec!["fly"],
    ] {
        let output = tandem().args(&args).output().unwrap();
        let lines = stderr_lines(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {lines:?}");
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].starts_with("tandem: "), "{lines:?}");
    }
}

#[test]
fn impossible_vm_shapes_are_refused_with_one_line() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::PowerOff) else {
        return;
    };
    for (flag, value) in [("--memory", "1M"), ("--memory", "64T"), ("--cpus", "255")] {
        let output = tandem()
            .args(["run", flag, value, "--kernel"])
            .arg(kernel.as_path())
            .output()
            .unwrap();
        let lines = stderr_lines(&output);
        let errors = lines
            .iter()
            .filter(|l| l.starts_with("tandem: error:"))
            .count();
        assert_eq!(output.status.code(), Some(1), "{flag} {value}: {lines:?}");
        assert_eq!(errors, 1, "{flag} {value}: {lines:?}");
    }
}

#[test]
fn ctrl_a_x_on_a_terminal_quits_and_restores_the_terminal() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::Spin) else {
        return;
    };
    // script(1) gives tandem a pseudo-terminal as stdin; after tandem exits,
    // `stty -a` on the same terminal shows whether canonical mode is back.
    let inner = format!(
        "{} run --memory 64M --kernel {}; echo tandem-exit=$?; stty -a",
        env!("CARGO_BIN_EXE_tandem"),
        kernel.as_path().display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    std::thread::sleep(Duration::from_millis(500));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x01x").unwrap();
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow to quit: {text}"
    );
    assert!(text.contains("tandem-exit=0"), "{text}");
    assert!(text.contains("console escape"), "{text}");
    assert!(
        text.contains(" icanon ") && text.contains(" echo "),
        "{text}"
    );
}

/// Reads tandem's stderr on a thread: reports each line on `lines` and
/// returns the whole text at end of file.
fn watch_stderr(
    stderr: std::process::ChildStderr,
    lines: std::sync::mpsc::Sender<String>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = lines.send(line.clone());
            text.push_str(&line);
            text.push('\n');
        }
        text
    })
}

#[test]
fn a_host_not_reading_the_console_cannot_delay_sigterm() {
    if !kvm_usable() {
        return;
    }
    let Some(kernel) = kernel_file(TinyKernel::SerialFlood) else {
        return;
    };
    let mut child = tandem()
        .args(["run", "--memory", "64M", "--kernel"])
        .arg(kernel.as_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held open and never read: the guest's flood fills the pipe.
    let _stdout = child.stdout.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stderr = watch_stderr(child.stderr.take().unwrap(), lines);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("first KVM_RUN") {
            break;
        }
    }
    // Long enough for the 64 KiB pipe to fill (a debug build on PVM sends
    // some 45 KB/s), or until tandem says it is dropping output.
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(line) = seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.contains("dropping") {
            break;
        }
    }
    // A keystroke: the main loop hands it to the UART the guest is flooding.
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"k").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let sent = Command::new("kill")
        .args(["-TERM".to_string(), child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(1) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "tandem still running 1 s after SIGTERM: {}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = stderr.join().unwrap();
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(text.contains("stopped: signal 15"), "{text}");
}
