//! The filters compile, keep the invariants stacking needs, and a
//! forbidden call ends a filtered process with the promised line.

use std::process::Command;

use super::*;

#[test]
fn every_filter_compiles_to_bpf_on_the_build_arch() {
    for kind in ThreadKind::ALL {
        for program in kind.compile().unwrap() {
            assert!(!program.is_empty(), "{kind:?}");
            // The kernel's limit is 4096 instructions per filter.
            assert!(program.len() < 4096, "{kind:?}: {}", program.len());
        }
    }
}

#[test]
fn stacked_filters_allow_what_the_inner_thread_needs() {
    // A worker starts on a vCPU thread and keeps its filter: every call
    // the worker may make must pass the vCPU filter too, with the same
    // ioctl requests.
    let vcpu = ThreadKind::Vcpu.rules();
    for worker in [ThreadKind::Worker, ThreadKind::VsockWorker] {
        for (call, rule) in &worker.rules().0 {
            assert!(vcpu.allows(*call), "vCPU filter lacks {call}");
            if let Some((_, values)) = rule {
                let outer = vcpu.arg_values(*call).unwrap_or_default();
                assert!(values.iter().all(|v| outer.contains(v)), "{call}");
            }
        }
    }
    assert_eq!(
        ThreadKind::of_worker("virtio-vsock"),
        ThreadKind::VsockWorker
    );
    assert_eq!(ThreadKind::of_worker("virtio-net"), ThreadKind::Worker);
    // Threads that start filtered threads let them install their filter.
    for kind in [ThreadKind::Vcpu, ThreadKind::Api] {
        let rules = kind.rules();
        assert_eq!(
            rules.arg_values(libc::SYS_seccomp),
            Some(&[libc::SECCOMP_SET_MODE_FILTER as u64][..])
        );
        assert!(rules.allows(libc::SYS_clone3) && rules.allows(libc::SYS_clone));
    }
}

#[test]
fn ioctls_are_filtered_by_request() {
    let vcpu = ThreadKind::Vcpu.rules();
    assert!(vcpu
        .arg_values(libc::SYS_ioctl)
        .unwrap()
        .contains(&filters::KVM_RUN));
    for kind in [
        ThreadKind::Main,
        ThreadKind::Worker,
        ThreadKind::Api,
        ThreadKind::VsockWorker,
    ] {
        let rules = kind.rules();
        if let Some(values) = rules.arg_values(libc::SYS_ioctl) {
            assert!(!values.contains(&filters::KVM_RUN), "{kind:?}");
        }
        assert!(
            !rules.allows(libc::SYS_ioctl) || rules.arg_values(libc::SYS_ioctl).is_some(),
            "{kind:?} allows every ioctl"
        );
    }
    // Nobody may start programs or trace; only the main thread (a
    // migration's connection: Unix or TCP) and the vsock worker (and the
    // vCPU it starts under: Unix only) open sockets.
    for kind in ThreadKind::ALL {
        let rules = kind.rules();
        // An io_uring ring is made and restricted at configuration; a
        // filtered thread making or changing one could bypass its filter.
        for call in [
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
        ] {
            assert!(!rules.allows(call), "{kind:?} allows {call}");
        }
        let enters = kind != ThreadKind::Main && kind != ThreadKind::Api;
        assert_eq!(rules.allows(libc::SYS_io_uring_enter), enters, "{kind:?}");
        let sockets = rules.arg_values(libc::SYS_socket);
        match kind {
            ThreadKind::Main => {
                let families = [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];
                assert_eq!(sockets, Some(&families.map(|f| f as u64)[..]))
            }
            ThreadKind::VsockWorker | ThreadKind::Vcpu => {
                assert_eq!(sockets, Some(&[libc::AF_UNIX as u64][..]), "{kind:?}")
            }
            _ => assert!(!rules.allows(libc::SYS_socket), "{kind:?} opens sockets"),
        }
    }
}

#[test]
fn the_violation_line_is_formatted_without_allocating() {
    let mut line = Line::default();
    line.push(b"call ");
    line.push_number(0);
    line.push(b" ");
    line.push_number(41);
    line.push(b" ");
    line.push_number(-3);
    assert_eq!(&line.buf[..line.len], b"call 0 41 -3");
    let mut full = Line::default();
    full.push(&[b'x'; 200]);
    assert_eq!(full.len, full.buf.len());
    assert_eq!(syscall_name(libc::SYS_socket), Some("socket"));
    assert_eq!(syscall_name(100_000), None);
}

/// Set, to the scenario's name, in the children the tests below start.
const CHILD: &str = "TANDEM_SECCOMP_TEST_CHILD";

/// Confines this thread like `kind`, or prints SECCOMP-UNSUPPORTED and
/// says no where the kernel (qemu-user) takes no filters.
fn confine_child(kind: ThreadKind, name: &str) -> bool {
    enable().unwrap();
    if let Err(e) = try_enter(kind, name) {
        let unsupported = match &e {
            seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io) => {
                matches!(io.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
            }
            _ => false,
        };
        assert!(unsupported, "{e}");
        println!("SECCOMP-UNSUPPORTED: {e}");
        return false;
    }
    true
}

/// Runs only as the child of [`a_forbidden_call_ends_the_process_with_one_line`]:
/// confines its thread like a vCPU and opens an Internet socket, which
/// no tandem thread may (the vsock worker, under the vCPU's filter, opens
/// Unix ones only).
#[test]
fn forbidden_call_child() {
    if std::env::var(CHILD).as_deref() != Ok("socket") || !confine_child(ThreadKind::Vcpu, "vcpu0")
    {
        return;
    }
    // SAFETY: a plain socket() call; the filter traps it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    panic!("socket() returned {fd} under the vCPU filter");
}

/// Runs only as the child of [`a_device_thread_open_fails_with_eperm`]:
/// confines its thread like a worker and opens a file.
#[test]
fn refused_call_child() {
    if std::env::var(CHILD).as_deref() != Ok("open")
        || !confine_child(ThreadKind::Worker, "virtio-net")
    {
        return;
    }
    let err = std::fs::File::open("/dev/null").expect_err("a worker opened /dev/null");
    println!("OPEN-REFUSED: {:?}", err.raw_os_error());
}

/// Runs only as the child of [`a_worker_drives_an_io_uring_ring_but_cannot_make_one`]:
/// with a ring made (as an Async disk's is) before its filter, confines
/// its thread like a disk worker, reads a file through the ring
/// (`io_uring_enter`, all the Async engine calls there), then, in scenario
/// `uring-setup`, makes a ring of its own, which the filter traps.
#[test]
fn uring_child() {
    let scenario = std::env::var(CHILD).unwrap_or_default();
    if !scenario.starts_with("uring") {
        return;
    }
    let mut ring = match io_uring::IoUring::new(8) {
        Ok(ring) => ring,
        Err(e) => {
            println!("URING-UNSUPPORTED: {e}");
            return;
        }
    };
    let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    if !confine_child(ThreadKind::Worker, "virtio-blk") {
        return;
    }
    let mut buf = [0u8; 4];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let fd = io_uring::types::Fd(std::os::fd::AsRawFd::as_raw_fd(&file));
    let sqe = io_uring::opcode::Readv::new(fd, &iov, 1).build();
    // SAFETY: `iov` and `buf` live until the completion is reaped below.
    unsafe { ring.submission().push(&sqe) }.unwrap();
    ring.submit_and_wait(1).unwrap();
    let read = ring.completion().next().unwrap().result();
    println!("URING-READ: {read} {:?}", &buf[1..4]);
    if scenario == "uring-setup" {
        let made = io_uring::IoUring::new(8);
        panic!("io_uring_setup under the worker filter: {:?}", made.is_ok());
    }
}

#[test]
fn a_worker_drives_an_io_uring_ring_but_cannot_make_one() {
    if let Some(e) = seccomp_unsupported() {
        eprintln!("skipping: seccomp filters cannot be installed here (qemu-user?): {e}");
        return;
    }
    for scenario in ["uring-read", "uring-setup"] {
        let Some(output) = run_child("seccomp::tests::uring_child", scenario) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stdout.contains("URING-UNSUPPORTED") {
            eprintln!("skipping: no io_uring here: {stdout}");
            return;
        }
        // The test binary is an ELF file: "\x7fELF".
        assert!(
            stdout.contains("URING-READ: 4 [69, 76, 70]"),
            "{scenario}: stdout: {stdout}\nstderr: {stderr}"
        );
        if scenario == "uring-read" {
            assert!(output.status.success(), "stderr: {stderr}");
            continue;
        }
        let expected = format!(
            "tandem: seccomp: thread virtio-blk called forbidden system call {} (io_uring_setup)",
            libc::SYS_io_uring_setup
        );
        assert!(
            stderr.lines().any(|l| l == expected),
            "stderr: {stderr}\nstdout: {stdout}"
        );
        assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    }
}

/// What `io_engine` Async does where the kernel refuses io_uring
/// (`kernel.io_uring_disabled`, a container's seccomp policy): on a thread
/// whose filter answers `io_uring_setup` with EPERM, the disk is refused
/// with the reason, and nothing ends the process.
#[test]
fn an_async_disk_where_io_uring_is_refused_fails_with_the_reason() {
    if let Some(e) = seccomp_unsupported() {
        eprintln!("skipping: seccomp filters cannot be installed here (qemu-user?): {e}");
        return;
    }
    let disk = vmm_sys_util::tempfile::TempFile::new().unwrap();
    disk.as_file().set_len(4096).unwrap();
    let path = disk.as_path().to_path_buf();
    let refused = std::thread::spawn(move || {
        let rules = [(libc::SYS_io_uring_setup, Vec::new())]
            .into_iter()
            .collect();
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let errno = SeccompAction::Errno(libc::EPERM as u32);
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, errno, arch).unwrap();
        // This thread only: the filter ends with it.
        seccompiler::apply_filter(&BpfProgram::try_from(filter).unwrap()).unwrap();
        let config = devices::virtio::BlockConfig {
            path,
            readonly: false,
            id: None,
            io_engine: devices::virtio::IoEngine::Async,
        };
        devices::virtio::Block::new(&config)
            .err()
            .map(|e| e.to_string())
    })
    .join()
    .unwrap()
    .expect("an Async disk without io_uring");
    let file = disk.as_path().display().to_string();
    assert!(refused.contains(&file), "{refused}");
    assert!(
        refused.contains("io_engine Async needs io_uring")
            && refused.contains("io_uring_setup: Operation not permitted"),
        "{refused}"
    );
}

/// Runs the child test `name` with scenario `scenario`; None where the
/// child found that filters cannot be installed.
fn run_child(name: &str, scenario: &str) -> Option<std::process::Output> {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, scenario)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(line) = stdout
        .lines()
        .find(|l| l.starts_with("SECCOMP-UNSUPPORTED"))
    {
        eprintln!("skipping: seccomp filters cannot be installed here (qemu-user?): {line}");
        return None;
    }
    Some(output)
}

/// Whether this kernel (or emulator) takes seccomp filters, asked
/// without installing one: a null program is EFAULT where filters work,
/// EINVAL or ENOSYS where they do not (qemu-user, kernels without
/// CONFIG_SECCOMP_FILTER).
fn seccomp_unsupported() -> Option<std::io::Error> {
    // SAFETY: the kernel rejects the null program before installing
    // anything.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            std::ptr::null::<u8>(),
        )
    };
    let err = std::io::Error::last_os_error();
    assert_eq!(ret, -1);
    matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)).then_some(err)
}

#[test]
fn a_forbidden_call_ends_the_process_with_one_line() {
    if let Some(e) = seccomp_unsupported() {
        eprintln!("skipping: seccomp filters cannot be installed here (qemu-user?): {e}");
        return;
    }
    let Some(output) = run_child("seccomp::tests::forbidden_call_child", "socket") else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "tandem: seccomp: thread vcpu0 called forbidden system call {} (socket)",
        libc::SYS_socket
    );
    assert!(
        stderr.lines().any(|l| l == expected),
        "stderr: {stderr}\nstdout: {stdout}"
    );
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
}

#[test]
fn a_device_thread_open_fails_with_eperm() {
    if let Some(e) = seccomp_unsupported() {
        eprintln!("skipping: seccomp filters cannot be installed here (qemu-user?): {e}");
        return;
    }
    let Some(output) = run_child("seccomp::tests::refused_call_child", "open") else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains(&format!("OPEN-REFUSED: Some({})", libc::EPERM)),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(output.status.success(), "stderr: {stderr}");
}

#[test]
fn the_pci_wiring_ioctls_have_their_kernel_numbers() {
    // _IOW's size field is the argument's size.
    let ioeventfd = std::mem::size_of::<kvm_bindings::kvm_ioeventfd>() as u64;
    let routing = std::mem::size_of::<kvm_bindings::kvm_irq_routing>() as u64;
    assert_eq!(super::filters::KVM_IOEVENTFD, 0x4000_ae79 | ioeventfd << 16);
    assert_eq!(
        super::filters::KVM_SET_GSI_ROUTING,
        0x4000_ae6a | routing << 16
    );
    assert_eq!(super::filters::KVM_IOEVENTFD, 0x4040_ae79);
    let vcpu = ThreadKind::Vcpu.rules();
    let ioctls = vcpu.arg_values(libc::SYS_ioctl).unwrap();
    assert!(ioctls.contains(&super::filters::KVM_IOEVENTFD));
    assert!(ioctls.contains(&super::filters::KVM_SET_GSI_ROUTING));
    for kind in [
        ThreadKind::Worker,
        ThreadKind::VsockWorker,
        ThreadKind::Main,
    ] {
        let ioctls = kind.rules();
        let ioctls = ioctls.arg_values(libc::SYS_ioctl).unwrap_or(&[]);
        assert!(
            !ioctls.contains(&super::filters::KVM_SET_GSI_ROUTING),
            "{kind:?}"
        );
    }
}

#[test]
fn the_block_size_ioctls_have_their_kernel_numbers() {
    assert_eq!(super::filters::BLKSSZGET, 0x1268);
    assert_eq!(super::filters::BLKGETSIZE64, 0x8008_1272);
}

/// `cargo test --lib seccomp_counts -- --ignored --nocapture` prints the
/// counts docs/security.md quotes for each thread kind.
#[test]
#[ignore = "prints the numbers for docs/security.md"]
fn seccomp_counts() {
    for kind in ThreadKind::ALL {
        let rules = kind.rules();
        let ioctls = rules.arg_values(libc::SYS_ioctl).map_or(0, <[u64]>::len);
        let programs = kind.compile().unwrap();
        let allow_list = programs.last().unwrap().len();
        println!("{kind:?}: {} / {ioctls} / {allow_list}", rules.0.len());
    }
}

/// Runs only as the child of [`the_vsock_worker_may_make_its_socket_calls`]:
/// confines its thread like the vsock worker (the listener and the epoll
/// set exist before, as they do when the worker starts) and makes the
/// calls its connections need, through std as the device does.
#[test]
fn vsock_calls_child() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

    if std::env::var(CHILD).as_deref() != Ok("vsock") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tandem-seccomp-vsock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("v.sock_52");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let epoll = Epoll::new().unwrap();
    if !confine_child(ThreadKind::VsockWorker, "virtio-vsock") {
        return;
    }
    // How the worker joins a guest connection to a host program.
    let mut guest_side = devices::virtio::vsock::connect(&path).unwrap();
    let (mut host_side, _) = listener.accept().unwrap();
    host_side.set_nonblocking(true).unwrap();
    let event = EpollEvent::new(EventSet::IN, 1);
    let fd = host_side.as_raw_fd();
    epoll.ctl(ControlOperation::Add, fd, event).unwrap();
    guest_side.set_nonblocking(false).unwrap();
    guest_side.write_all(b"ping").unwrap();
    let mut events = [EpollEvent::default(); 4];
    assert_eq!(epoll.wait(1000, &mut events).unwrap(), 1);
    let mut buf = [0u8; 4];
    host_side.read_exact(&mut buf).unwrap();
    epoll.ctl(ControlOperation::Delete, fd, event).unwrap();
    guest_side.shutdown(std::net::Shutdown::Write).unwrap();
    drop((guest_side, host_side, listener));
    println!("VSOCK-CALLS-OK {}", String::from_utf8_lossy(&buf));
}

#[test]
fn the_vsock_worker_may_make_its_socket_calls() {
    if let Some(e) = seccomp_unsupported() {
        eprintln!("skipping: seccomp filters cannot be installed here (qemu-user?): {e}");
        return;
    }
    let Some(output) = run_child("seccomp::tests::vsock_calls_child", "vsock") else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("VSOCK-CALLS-OK ping"),
        "stderr: {stderr}\nstdout: {stdout}"
    );
}
