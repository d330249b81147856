//! The vCPU threads of one VM: starting them, getting each out of KVM_RUN
//! when the VMM needs it (a signal whose handler sets the vCPU's
//! `immediate_exit`, so a kick that lands just before KVM_RUN is not lost),
//! parking them for a pause, and stopping and joining them.
//!
//! Each vCPU's `VcpuFd` sits in a mutex its thread holds while it runs and
//! releases while parked, so a paused VM's owner can reach every vCPU
//! (clock now; registers for snapshots later) without a message protocol.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arch::{Arch, Host};
use devices::{ExitReason, ExitSignal};
use kvm_bindings::kvm_run;
use kvm_ioctls::VcpuFd;
use log::warn;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::seccomp::ThreadKind;
use crate::vcpu::{run_loop, Buses, ExitCounters, LoopEnd, VcpuShared};

/// How long [`Vcpus::pause`] waits for every vCPU to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the VMM asks of every vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Request {
    /// Run the guest.
    Run = 0,
    /// Leave KVM_RUN and park until asked to run again.
    Pause = 1,
    /// Leave KVM_RUN and end the thread.
    Stop = 2,
}

/// The request all vCPUs of a VM follow, and the count of those parked.
#[derive(Debug, Default)]
pub struct VcpuControl {
    /// A [`Request`], read by the run loop on every exit without a lock.
    request: AtomicU8,
    /// vCPUs out of KVM_RUN and waiting; also guards request changes so a
    /// parked thread never misses one.
    parked: Mutex<usize>,
    changed: Condvar,
}

impl VcpuControl {
    /// The current request.
    pub fn request(&self) -> Request {
        match self.request.load(Ordering::Acquire) {
            0 => Request::Run,
            1 => Request::Pause,
            _ => Request::Stop,
        }
    }

    /// Changes the request and wakes parked vCPUs. A stop is final.
    pub fn set(&self, request: Request) {
        let _parked = self.lock();
        if self.request() != Request::Stop {
            self.request.store(request as u8, Ordering::Release);
        }
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks the calling vCPU thread, counted as parked, until the request
    /// satisfies `leave`; returns that request.
    fn park_until(&self, leave: impl Fn(Request) -> bool) -> Request {
        let mut parked = self.lock();
        *parked += 1;
        self.changed.notify_all();
        while !leave(self.request()) {
            parked = self.changed.wait(parked).unwrap_or_else(|p| p.into_inner());
        }
        *parked -= 1;
        self.request()
    }

    /// Waits until `count` vCPUs are parked; false after `timeout`.
    fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut parked = self.lock();
        while *parked < count {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            parked = self
                .changed
                .wait_timeout(parked, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// What every vCPU thread of a VM shares.
pub struct VcpuContext {
    /// The back end, for the exits that are not I/O.
    pub arch: Arc<Host>,
    /// Where I/O exits go.
    pub buses: Buses,
    /// Raised when a vCPU ends the run.
    pub exit: Arc<ExitSignal>,
    /// Exit statistics.
    pub counters: ExitCounters,
}

thread_local! {
    /// This thread's vCPU run structure, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's vCPU's kvm_run mapping, set
        // by the thread itself and valid while its VcpuFd lives, which
        // outlives the thread. KVM reads immediate_exit on KVM_RUN entry; a
        // volatile byte store is what the KVM API documents for signal
        // handlers.
        unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
    }
}

/// A VM's running vCPU threads.
pub struct Vcpus {
    control: Arc<VcpuControl>,
    fds: Vec<Arc<Mutex<VcpuFd>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Vcpus {
    /// Starts one thread per vCPU, each confined to the vCPU seccomp filter
    /// (when filters are on) and parked: [`Vcpus::resume`] runs the guest.
    pub fn start(vcpus: Vec<VcpuFd>, context: Arc<VcpuContext>) -> Result<Vcpus> {
        register_signal_handler(kick_signal(), on_kick)
            .context("installing the vCPU kick handler")?;
        let control = Arc::new(VcpuControl::default());
        control.set(Request::Pause);
        let fds: Vec<_> = vcpus
            .into_iter()
            .map(|fd| Arc::new(Mutex::new(fd)))
            .collect();
        let mut started = Vcpus {
            control,
            fds: fds.clone(),
            threads: Vec::new(),
        };
        for (index, fd) in fds.into_iter().enumerate() {
            let control = started.control.clone();
            let context = context.clone();
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || vcpu_thread(index as u8, &fd, &control, &context))
                .context("cannot start a vCPU thread");
            match thread {
                Ok(thread) => started.threads.push(thread),
                Err(e) => {
                    started.stop();
                    return Err(e);
                }
            }
        }
        Ok(started)
    }

    /// Takes every vCPU out of KVM_RUN and parks it, with its last I/O
    /// completed. Undone (and an error) if one does not park in time.
    pub fn pause(&self) -> Result<()> {
        self.control.set(Request::Pause);
        self.kick_all();
        if !self.control.wait_parked(self.threads.len(), PAUSE_TIMEOUT) {
            self.control.set(Request::Run);
            bail!(
                "a vCPU did not stop within {} s (busy in a device)",
                PAUSE_TIMEOUT.as_secs()
            );
        }
        Ok(())
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        self.control.set(Request::Run);
    }

    /// Every vCPU, locked: only quick while they are parked.
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, VcpuFd>> {
        self.fds
            .iter()
            .map(|fd| fd.lock().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// Stops and joins every thread; idempotent.
    pub fn stop(&mut self) {
        self.control.set(Request::Stop);
        self.kick_all();
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                warn!("a vCPU thread panicked");
            }
        }
    }

    fn kick_all(&self) {
        for thread in &self.threads {
            // ESRCH: the thread already ended, nothing to kick.
            let _ = thread.kill(kick_signal());
        }
    }
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One vCPU thread: runs the guest while asked to, parks while paused, and
/// waits for the stop once the guest or an error ended the run.
fn vcpu_thread(index: u8, fd: &Mutex<VcpuFd>, control: &VcpuControl, context: &VcpuContext) {
    crate::seccomp::enter(ThreadKind::Vcpu, &format!("vcpu{index}"));
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let shared = VcpuShared {
            buses: &context.buses,
            exit: &context.exit,
            control,
            counters: &context.counters,
        };
        loop {
            if control.park_until(|r| r != Request::Pause) == Request::Stop {
                return;
            }
            let mut vcpu = fd.lock().unwrap_or_else(|p| p.into_inner());
            KVM_RUN.with(|run| run.set(vcpu.get_kvm_run()));
            let end = run_loop(&mut vcpu, index, &shared, |i, e| {
                context.arch.handle_exit(i, e)
            });
            if end == LoopEnd::RunEnded {
                drop(vcpu);
                control.park_until(|r| r == Request::Stop);
                return;
            }
            complete_pending_io(&mut vcpu);
        }
    }));
    // A bug must end the run with an error, not leave it hanging.
    if ran.is_err() {
        let message = format!("vCPU {index} thread crashed (a tandem bug)");
        context.exit.raise(ExitReason::Fatal(message));
        control.park_until(|r| r == Request::Stop);
    }
}

/// Lets KVM finish the instruction whose port or MMIO access was just
/// emulated, without entering the guest, so a parked vCPU's registers are
/// whole (what a snapshot will save).
fn complete_pending_io(vcpu: &mut VcpuFd) {
    vcpu.set_kvm_immediate_exit(1);
    if let Ok(exit) = vcpu.run() {
        warn!("vCPU ran while completing I/O: {exit:?}");
    }
    vcpu.set_kvm_immediate_exit(0);
}
