//! The per-thread allow lists, as seccompiler rules. A system call is
//! either allowed outright or only with given values of one argument (the
//! ioctl request, the prctl option, the seccomp operation). Anything else
//! traps (SIGSYS), which src/seccomp/mod.rs turns into one line and exit 1.
//!
//! Filters stack: a thread starts with its creator's filter and adds its
//! own, and a call must pass both. Device workers are started by a vCPU
//! thread (the guest's DRIVER_OK write activates the device; a restore
//! starts them on the main thread before its filter is on) and API
//! connection threads by the accept thread, so the vCPU list includes
//! everything a worker needs and the API list is shared by both API
//! threads.

use std::collections::BTreeMap;

use arch::SeccompExtras;
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// An `_IO(type, nr)` ioctl request code (the generic encoding x86_64 and
/// aarch64 share).
const fn io(ty: u64, nr: u64) -> u64 {
    (ty << 8) | nr
}
const KVMIO: u64 = 0xae;
/// `KVM_RUN`.
pub const KVM_RUN: u64 = io(KVMIO, 0x80);
/// `KVM_CHECK_EXTENSION` (aarch64's resume asks for the counter offset).
pub const KVM_CHECK_EXTENSION: u64 = io(KVMIO, 0x03);
/// `KVM_GET_DIRTY_LOG` = `_IOW(KVMIO, 0x42, struct kvm_dirty_log)` (16
/// bytes): a snapshot takes the pages the vCPUs wrote.
pub(super) const KVM_GET_DIRTY_LOG: u64 = (1 << 30) | (16 << 16) | io(KVMIO, 0x42);
/// `KVM_SET_USER_MEMORY_REGION` = `_IOW(KVMIO, 0x46, struct
/// kvm_userspace_memory_region)` (32 bytes): a migration turns dirty-page
/// logging on in the memory slots.
pub(super) const KVM_SET_USER_MEMORY_REGION: u64 = (1 << 30) | (32 << 16) | io(KVMIO, 0x46);
/// `KVM_IOEVENTFD` = `_IOW(KVMIO, 0x79, struct kvm_ioeventfd)` (64
/// bytes): a guest moving a virtio-pci BAR moves its notify ioeventfds.
pub(super) const KVM_IOEVENTFD: u64 = (1 << 30) | (64 << 16) | io(KVMIO, 0x79);
/// `KVM_SET_GSI_ROUTING` = `_IOW(KVMIO, 0x6a, struct kvm_irq_routing)` (8
/// bytes): a guest programming an MSI-X vector re-routes its GSI.
pub(super) const KVM_SET_GSI_ROUTING: u64 = (1 << 30) | (8 << 16) | io(KVMIO, 0x6a);
/// `BLKSSZGET`: a drive swapped to a host block device reads its block size.
pub(super) const BLKSSZGET: u64 = io(0x12, 104);
/// `BLKGETSIZE64` = `_IOR(0x12, 114, u64)`: the size of that device.
pub(super) const BLKGETSIZE64: u64 = (2 << 30) | (8 << 16) | io(0x12, 114);

/// A thread kind's rules under construction: `None` allows a call
/// outright, `Some(values)` only with argument `arg` equal to one of them.
#[derive(Default)]
pub struct Rules(pub(super) BTreeMap<i64, Option<(u8, Vec<u64>)>>);

impl Rules {
    /// Allows each of `calls` with any arguments.
    pub fn allow(&mut self, calls: &[i64]) -> &mut Self {
        for &call in calls {
            self.0.insert(call, None);
        }
        self
    }

    /// Allows `call` when its argument `arg` (0-based) is one of `values`
    /// (compared as 32-bit values, as the kernel reads ioctl requests and
    /// prctl options).
    pub fn allow_arg(&mut self, call: i64, arg: u8, values: &[u64]) -> &mut Self {
        match self
            .0
            .entry(call)
            .or_insert_with(|| Some((arg, Vec::new())))
        {
            None => {}
            Some((old_arg, list)) => {
                assert_eq!(*old_arg, arg, "one argument filter per system call");
                for v in values {
                    if !list.contains(v) {
                        list.push(*v);
                    }
                }
            }
        }
        self
    }

    /// Adds everything `other` allows.
    pub fn extend(&mut self, other: &Rules) -> &mut Self {
        for (&call, rule) in &other.0 {
            match rule {
                None => {
                    self.allow(&[call]);
                }
                Some((arg, values)) => {
                    self.allow_arg(call, *arg, values);
                }
            }
        }
        self
    }

    /// How many system calls are allowed (in some form).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `call` is allowed in some form.
    pub fn allows(&self, call: i64) -> bool {
        self.0.contains_key(&call)
    }

    /// The values argument `arg` of `call` may take, or `None` when `call`
    /// is allowed outright or not at all.
    pub fn arg_values(&self, call: i64) -> Option<&[u64]> {
        self.0.get(&call)?.as_ref().map(|(_, v)| v.as_slice())
    }

    /// seccompiler's form.
    pub fn into_seccompiler(self) -> seccompiler::Result<BTreeMap<i64, Vec<SeccompRule>>> {
        let mut map = BTreeMap::new();
        for (call, rule) in self.0 {
            let rules = match rule {
                None => Vec::new(),
                Some((arg, values)) => values
                    .into_iter()
                    .map(|value| {
                        let condition = SeccompCondition::new(
                            arg,
                            SeccompCmpArgLen::Dword,
                            SeccompCmpOp::Eq,
                            value,
                        )?;
                        SeccompRule::new(vec![condition])
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            map.insert(call, rules);
        }
        Ok(map)
    }
}

/// What every filtered thread may call: memory allocation, locks, the
/// signals tandem uses, time, logging to stderr or a log file, and ending
/// the thread or the process.
pub fn every_thread(extras: &SeccompExtras) -> Rules {
    let mut rules = Rules::default();
    rules
        .allow(&[
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_writev,
            libc::SYS_close,
            // Stop signals (SIGINT, SIGTERM, SIGHUP) may land on any
            // thread; signal-hook's handler send()s on a socket pair.
            libc::SYS_sendto,
            // std's debug builds check an fd is open before closing it
            // (F_GETFD); try_clone duplicates with F_DUPFD_CLOEXEC.
            libc::SYS_fcntl,
            // The allocator, and thread stacks going away.
            libc::SYS_mmap,
            libc::SYS_munmap,
            libc::SYS_mprotect,
            libc::SYS_madvise,
            libc::SYS_mremap,
            libc::SYS_brk,
            // Mutexes, condition variables, joins.
            libc::SYS_futex,
            libc::SYS_sched_yield,
            // Signals: the vCPU kick returns through rt_sigreturn; std
            // swaps its stack-overflow guard stack in and out per thread.
            libc::SYS_rt_sigprocmask,
            libc::SYS_rt_sigreturn,
            libc::SYS_sigaltstack,
            // Time (normally the vDSO; the syscall is its fallback).
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            // std seeds hash maps with it; virtio-rng serves the guest.
            libc::SYS_getrandom,
            libc::SYS_exit,
            libc::SYS_exit_group,
        ])
        .allow(&extras.all_threads);
    rules
}

/// What a thread that starts threads needs, and what the new thread does
/// before its own filter is in place (glibc's start, std naming it, the
/// filter install itself).
pub fn thread_creation() -> Rules {
    let mut rules = Rules::default();
    rules
        .allow(&[
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
            libc::SYS_gettid,
            // glibc's pthread_getattr_np, which std calls in every new
            // thread to find its stack guard.
            libc::SYS_sched_getaffinity,
        ])
        .allow_arg(
            libc::SYS_prctl,
            0,
            &[libc::PR_SET_NAME as u64, libc::PR_SET_NO_NEW_PRIVS as u64],
        )
        .allow_arg(
            libc::SYS_seccomp,
            0,
            &[libc::SECCOMP_SET_MODE_FILTER as u64],
        );
    rules
}

/// A virtio device worker: its epoll loop, eventfds, the TAP device,
/// the disk file (including flushes), the console's output, the
/// balloon's statistics timer (made with the device, re-armed here), and
/// an Async disk's io_uring ring: `io_uring_enter` only, since the ring is
/// set up, given its eventfd and restricted to READV, WRITEV and FSYNC
/// when the disk is configured, before any filter (`io_uring_setup` and
/// `io_uring_register` are allowed nowhere).
pub fn worker(extras: &SeccompExtras) -> Rules {
    let mut rules = every_thread(extras);
    rules.allow(&[
        libc::SYS_epoll_pwait,
        libc::SYS_timerfd_settime,
        libc::SYS_readv,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_lseek,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_io_uring_enter,
        // Passes this filter only to be answered EPERM by the second one
        // (REFUSED_ON_DEVICE_THREADS): a trap here would win over that.
        libc::SYS_openat,
    ]);
    rules
}

/// The virtio-vsock worker: a worker that also joins guest connections
/// to host programs over Unix stream sockets — `socket` for `AF_UNIX`
/// only, `connect` (guest-initiated), `accept4` (host-initiated),
/// `recvfrom` (std reads sockets with `recv`), `shutdown` (half-close),
/// `epoll_ctl` (its own epoll set of connections) and `ioctl(FIONBIO)`.
pub fn vsock_worker(extras: &SeccompExtras) -> Rules {
    let mut rules = worker(extras);
    rules
        .allow(&[
            libc::SYS_connect,
            libc::SYS_accept4,
            libc::SYS_recvfrom,
            libc::SYS_shutdown,
            libc::SYS_epoll_ctl,
        ])
        .allow_arg(libc::SYS_socket, 0, &[libc::AF_UNIX as u64])
        .allow_arg(libc::SYS_ioctl, 1, &[libc::FIONBIO]);
    rules
}

/// Calls a device thread (vCPU or worker) has no use for but library code
/// may make on its own: a second filter answers them EPERM instead of
/// trapping. glibc opened a file from inside a library call on a
/// virtio-net worker at SIGTERM (aarch64, GICv2 host; the call was not
/// pinned down): a failed open is something glibc copes with, ending
/// tandem is not, and allowing it would let a compromised thread read
/// host files.
pub const REFUSED_ON_DEVICE_THREADS: &[i64] = &[libc::SYS_openat];

/// A vCPU thread: KVM_RUN and the device register accesses it emulates.
/// Activating a virtio device happens here (a guest register write), so it
/// also sets up the worker (eventfds, epoll, a thread) and the TAP's
/// offloads, and everything the worker does is allowed too (inherited).
/// PCI configuration and MSI-X table writes happen here too: BARs move
/// their ioeventfds, vectors their GSI routes (workers only signal the
/// irqfds).
pub fn vcpu(extras: &SeccompExtras) -> Rules {
    let mut rules = vsock_worker(extras);
    rules
        .extend(&thread_creation())
        .allow(&[
            libc::SYS_eventfd2,
            libc::SYS_epoll_create1,
            libc::SYS_epoll_ctl,
        ])
        .allow_arg(
            libc::SYS_ioctl,
            1,
            &[
                KVM_RUN,
                KVM_IOEVENTFD,
                KVM_SET_GSI_ROUTING,
                libc::TUNSETOFFLOAD,
                libc::TUNSETVNETHDRSZ,
            ],
        );
    rules
}

/// The API server's accept thread and its connection threads: sockets
/// and the queue to the main thread.
pub fn api(extras: &SeccompExtras) -> Rules {
    let mut rules = every_thread(extras);
    rules
        .extend(&thread_creation())
        .allow(&[
            libc::SYS_epoll_pwait,
            libc::SYS_accept4,
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_shutdown,
            libc::SYS_setsockopt,
        ])
        // std's set_nonblocking.
        .allow_arg(libc::SYS_ioctl, 1, &[libc::FIONBIO]);
    rules
}

/// The main thread once the VM is built: its epoll loop, the console,
/// pause/resume (kicks, guest clock), metrics and statistics, swapping a
/// drive's file, stopping the VM and removing the API socket.
pub fn main_thread(extras: &SeccompExtras) -> Rules {
    let mut rules = every_thread(extras);
    let mut ioctls = vec![
        libc::TCGETS,
        libc::TCSETS,
        libc::TCSETSW,
        libc::TCSETSF,
        libc::FIONBIO,
        KVM_CHECK_EXTENSION,
        KVM_GET_DIRTY_LOG,
        KVM_SET_USER_MEMORY_REGION,
        BLKSSZGET,
        BLKGETSIZE64,
    ];
    ioctls.extend(&extras.main_ioctls);
    rules
        .allow(&[
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_recvfrom,
            // vCPU kicks (pthread_kill).
            libc::SYS_tgkill,
            libc::SYS_getpid,
            // PATCH /drives opens the new file; --stats reads
            // /proc/self/smaps.
            libc::SYS_openat,
            libc::SYS_statx,
            libc::SYS_newfstatat,
            libc::SYS_fstat,
            libc::SYS_lseek,
            libc::SYS_flock,
            // The log file and metrics are flushed to disk.
            libc::SYS_fdatasync,
            libc::SYS_fsync,
            // KVM statistics.
            libc::SYS_pread64,
            // A snapshot's memory file: sized, then written where not zero.
            libc::SYS_ftruncate,
            libc::SYS_pwrite64,
            // The API socket at the end.
            libc::SYS_unlinkat,
            // A migration's connection to its destination (and its
            // timeouts), over a Unix socket or TCP.
            libc::SYS_connect,
            libc::SYS_setsockopt,
        ])
        .allow_arg(
            libc::SYS_socket,
            0,
            &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6].map(|family| family as u64),
        )
        .allow_arg(libc::SYS_ioctl, 1, &ioctls);
    rules
}
