//! seccomp-bpf filters, one per kind of thread: vCPUs, virtio device
//! workers, the main thread and the API server threads. Each thread
//! installs its own filter as the first thing it does (the main thread
//! once the VM is built, before the guest's first instruction), so a
//! compromised thread can make only the system calls — and, for ioctl,
//! only the requests — its job needs. The lists are in `filters.rs`;
//! docs/security.md explains them.
//!
//! A forbidden call traps: the SIGSYS handler here writes one line naming
//! the thread and the call to stderr, with async-signal-safe calls only,
//! and ends the process with exit status 1 — never a silent hang. The
//! one exception: the few calls library code on a device thread may make
//! on its own fail with EPERM instead (`filters::REFUSED_ON_DEVICE_THREADS`).
//!
//! Filters are off unless [`enable`] ran (the `tandem` binary calls it
//! unless `--no-seccomp` is given); library users and tests that build VMs
//! in-process get none.

mod filters;
mod names;

use std::cell::Cell;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use arch::{Arch, Host};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

pub use filters::Rules;

/// The kinds of thread that get a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread, from the moment its VM is built.
    Main,
    /// A vCPU thread (KVM_RUN).
    Vcpu,
    /// A virtio device worker.
    Worker,
    /// The API server's accept and connection threads.
    Api,
    /// The virtio-vsock worker: a worker that also makes Unix-socket
    /// connections.
    VsockWorker,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 5] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Worker,
        ThreadKind::Api,
        ThreadKind::VsockWorker,
    ];

    /// The kind of the device worker thread named `name`.
    pub fn of_worker(name: &str) -> Self {
        if name == devices::virtio::vsock::WORKER_NAME {
            ThreadKind::VsockWorker
        } else {
            ThreadKind::Worker
        }
    }

    /// The rules for this kind of thread on the build architecture.
    pub fn rules(self) -> Rules {
        let extras = Host::seccomp_extras();
        match self {
            ThreadKind::Main => filters::main_thread(&extras),
            ThreadKind::Vcpu => filters::vcpu(&extras),
            ThreadKind::Worker => filters::worker(&extras),
            ThreadKind::Api => filters::api(&extras),
            ThreadKind::VsockWorker => filters::vsock_worker(&extras),
        }
    }

    /// Compiles this kind's filters to BPF for the build architecture, in
    /// the order they are installed: on device threads first a filter
    /// answering [`filters::REFUSED_ON_DEVICE_THREADS`] with EPERM, then
    /// the allow list (anything else traps; it forbids installing more).
    /// The kernel runs every filter and takes the strictest answer.
    pub fn compile(self) -> Result<Vec<BpfProgram>> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)?;
        let mut programs = Vec::new();
        if matches!(
            self,
            ThreadKind::Vcpu | ThreadKind::Worker | ThreadKind::VsockWorker
        ) {
            let refused = filters::REFUSED_ON_DEVICE_THREADS
                .iter()
                .map(|&call| (call, Vec::new()))
                .collect();
            let errno = SeccompAction::Errno(libc::EPERM as u32);
            let refusals = SeccompFilter::new(refused, SeccompAction::Allow, errno, arch)?;
            programs.push(BpfProgram::try_from(refusals)?);
        }
        let allow_list = SeccompFilter::new(
            self.rules().into_seccompiler()?,
            SeccompAction::Trap,
            SeccompAction::Allow,
            arch,
        )?;
        programs.push(BpfProgram::try_from(allow_list)?);
        Ok(programs)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The compiled filters, once [`enable`] ran.
static FILTERS: OnceLock<Vec<Vec<BpfProgram>>> = OnceLock::new();
/// Names of the system calls, for the SIGSYS handler (set before it is
/// installed, read-only after).
static NAMES: OnceLock<Vec<(i64, &'static str)>> = OnceLock::new();

thread_local! {
    /// This thread's name, NUL-padded, for the SIGSYS handler. A plain
    /// `Copy` value with a const initialiser: reading it allocates nothing
    /// and registers no destructor, so the handler may.
    static THREAD_NAME: Cell<[u8; 16]> = const { Cell::new([0; 16]) };
}

/// Turns filters on for this process: compiles every thread kind's filter,
/// installs the SIGSYS handler and has device threads install theirs. Call
/// once, on the main thread, before any VM is built.
pub fn enable() -> Result<()> {
    cap_malloc_arenas();
    let mut compiled = Vec::new();
    for kind in ThreadKind::ALL {
        compiled.push(
            kind.compile()
                .with_context(|| format!("seccomp filter {kind:?}"))?,
        );
    }
    let mut names: Vec<(i64, &'static str)> = names::COMMON.to_vec();
    names.extend(Host::seccomp_extras().names);
    let _ = NAMES.set(names);
    install_sigsys_handler().context("installing the SIGSYS handler")?;
    let _ = FILTERS.set(compiled);
    devices::set_thread_start_hook(|name| enter(ThreadKind::of_worker(name), name));
    Ok(())
}

/// glibc's malloc gives a thread that first allocates a new arena, and
/// past 8 arenas it sizes the limit by reading
/// /sys/devices/system/cpu/online — an `openat` no filtered thread may make
/// (seen as an API connection thread dying under a client that opens many
/// connections). A fixed limit makes malloc reuse arenas instead of asking.
fn cap_malloc_arenas() {
    const MALLOC_ARENAS: libc::c_int = 8;
    // SAFETY: mallopt only changes malloc's tuning; it is called once,
    // before the threads that allocate concurrently exist.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) } != 1 {
        log::warn!(
            "cannot limit malloc's arenas: a thread may die on its first allocation under seccomp"
        );
    }
}

/// Says, once, that filters are off (`--no-seccomp`).
pub fn disabled() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        log::warn!("seccomp filters are off (--no-seccomp): every thread may make any system call")
    });
}

/// Whether [`enable`] ran.
pub fn enabled() -> bool {
    FILTERS.get().is_some()
}

/// Confines the calling thread, named `name`, to `kind`'s filter, when
/// filters are on. A thread that cannot be confined ends the process: it
/// would otherwise run unfiltered without anyone knowing.
pub fn enter(kind: ThreadKind, name: &str) {
    if let Err(e) = try_enter(kind, name) {
        let hint = match &e {
            seccompiler::Error::Seccomp(io) | seccompiler::Error::Prctl(io)
                if io.raw_os_error() == Some(libc::EINVAL) =>
            {
                " (does this kernel have seccomp filters? --no-seccomp turns them off)"
            }
            _ => "",
        };
        eprintln!("tandem: seccomp: cannot confine thread {name}: {e}{hint}");
        // SAFETY: ends the process at once; nothing is left half-done that
        // an orderly exit could finish, and other threads must not go on.
        unsafe { libc::_exit(1) };
    }
}

/// [`enter`], reporting failure instead of ending the process: a no-op
/// when filters are off.
pub fn try_enter(kind: ThreadKind, name: &str) -> seccompiler::Result<()> {
    let Some(filters) = FILTERS.get() else {
        return Ok(());
    };
    let mut stored = [0u8; 16];
    let bytes = name.as_bytes();
    let len = bytes.len().min(15);
    stored[..len].copy_from_slice(&bytes[..len]);
    THREAD_NAME.with(|cell| cell.set(stored));
    filters[kind.index()]
        .iter()
        .try_for_each(|program| seccompiler::apply_filter(program))
}

fn install_sigsys_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value;
    // the handler only makes async-signal-safe calls (write, _exit) and
    // reads memory fixed before it was installed.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Where `siginfo_t` keeps the system call number of a SIGSYS: after
/// si_signo, si_errno, si_code, padding to 8 and `void *si_call_addr`
/// (the same on x86_64 and aarch64).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo_t for SIGSYS; si_syscall is
    // an int at SI_SYSCALL_OFFSET in it.
    let call = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read()
    };
    let name = THREAD_NAME.with(Cell::get);
    let mut line = Line::default();
    line.push(b"tandem: seccomp: thread ");
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    // A thread that has not confined itself yet runs under its creator's
    // filter and has no name here.
    line.push(if len == 0 {
        b"(starting)"
    } else {
        &name[..len]
    });
    line.push(b" called forbidden system call ");
    line.push_number(call as i64);
    if let Some(name) = syscall_name(call as i64) {
        line.push(b" (");
        line.push(name.as_bytes());
        line.push(b")");
    }
    line.push(b"\n");
    // SAFETY: write and _exit are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(1);
    }
}

/// The name of system call `call`, if the table knows it.
pub fn syscall_name(call: i64) -> Option<&'static str> {
    let names = NAMES.get().map(Vec::as_slice).unwrap_or(names::COMMON);
    names
        .iter()
        .find(|(n, _)| *n == call)
        .map(|(_, name)| *name)
}

/// A fixed buffer the SIGSYS handler formats into, without allocating.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 160],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, value: i64) {
        if value < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }
}

#[cfg(test)]
mod tests;
