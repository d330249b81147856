//! The KVM plumbing on this host's real /dev/kvm, with hand-made guest
//! payloads instead of a kernel: the run loop, port and MMIO dispatch to the
//! right device, unclaimed accesses, arch exits and exit counts.
//!
//! Needs a working /dev/kvm. Without one these tests fail when `CI` is set
//! and skip with a message otherwise.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arch::test_payloads::{self, Payload, MMIO_TARGET, PORT, RAM_SIZE};
use arch::ExitAction;
use common::kvm_or_skip;
use devices::{Bus, BusDevice, ExitReason, ExitSignal};
use guest_memory::GuestMemoryMmap;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use tandem::memory::create_guest_memory;
use tandem::vcpu::{run_loop, Buses, ExitCounters, VcpuShared};
use tandem::vcpus::{Request, VcpuControl};
use vm_memory::GuestAddress;

/// Records every write, and stops the vCPU after `limit` of them.
/// Reads answer 1, 2, 3, … (one number per read access).
struct Recorder {
    writes: Vec<Vec<u8>>,
    reads: u8,
    limit: usize,
    control: Arc<VcpuControl>,
}

impl BusDevice for Recorder {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        self.reads += 1;
        data.fill(self.reads);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.writes.push(data.to_vec());
        if self.writes.len() >= self.limit {
            self.control.set(Request::Stop);
        }
    }
}

struct Run {
    writes: Vec<Vec<u8>>,
    counters: ExitCounters,
    exit: ExitSignal,
    arch_exits: usize,
}

/// Runs `payload` on one vCPU with a recorder at `PORT` or `MMIO_TARGET`.
/// `None` when the payload does not exist on this architecture.
fn run_payload(kvm: &Kvm, payload: Payload, limit: usize) -> Option<Run> {
    let vm: VmFd = kvm.create_vm().expect("KVM_CREATE_VM");
    let mem: GuestMemoryMmap =
        create_guest_memory(&vm, &[(GuestAddress(0), RAM_SIZE as u64)]).expect("guest memory");
    let mut vcpu: VcpuFd = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    if !test_payloads::load(&vcpu, &vm, &mem, payload).expect("load payload") {
        return None;
    }
    let control = Arc::new(VcpuControl::default());
    let recorder = Arc::new(Mutex::new(Recorder {
        writes: Vec::new(),
        reads: 0,
        limit,
        control: control.clone(),
    }));
    let mut buses = Buses::default();
    let (bus, base): (&mut Bus, u64) = match payload {
        Payload::MmioStoreLoop => (&mut buses.mmio, MMIO_TARGET),
        _ => (&mut buses.pio, PORT.into()),
    };
    bus.insert(recorder.clone(), base, 2).unwrap();
    let exit = ExitSignal::new().unwrap();
    let counters = ExitCounters::default();
    let mut arch_exits = 0;
    let shared = VcpuShared {
        buses: &buses,
        exit: &exit,
        control: &control,
        counters: &counters,
    };
    run_loop(&mut vcpu, 0, &shared, |_, e| {
        arch_exits += 1;
        match e {
            VcpuExit::Hlt => ExitAction::PowerOff,
            other => ExitAction::Fatal(format!("unexpected exit {other:?}")),
        }
    });
    let writes = std::mem::take(&mut recorder.lock().unwrap().writes);
    Some(Run {
        writes,
        counters,
        exit,
        arch_exits,
    })
}

#[test]
fn port_writes_reach_the_device_in_order_and_are_counted() {
    let Some(kvm) = kvm_or_skip() else { return };
    let Some(run) = run_payload(&kvm, Payload::PortCounter, 100) else {
        eprintln!("SKIPPED: no port I/O on this architecture");
        return;
    };
    let values: Vec<u16> = run
        .writes
        .iter()
        .map(|w| u16::from_le_bytes([w[0], w[1]]))
        .collect();
    assert_eq!(values, (0..100).collect::<Vec<u16>>());
    assert_eq!(run.counters.pio.load(Ordering::Relaxed), 100);
    assert_eq!(run.counters.mmio.load(Ordering::Relaxed), 0);
    assert_eq!(run.exit.reason(), None, "stopped by the VMM, not the guest");
}

#[test]
fn mmio_stores_reach_the_device_at_its_address() {
    let Some(kvm) = kvm_or_skip() else { return };
    let run = run_payload(&kvm, Payload::MmioStoreLoop, 50).expect("every arch has MMIO");
    let bytes: Vec<u8> = run.writes.iter().map(|w| w[0]).collect();
    assert_eq!(bytes, (0..50).collect::<Vec<u8>>());
    assert!(run.writes.iter().all(|w| w.len() == 1));
    assert_eq!(run.counters.mmio.load(Ordering::Relaxed), 50);
    assert_eq!(run.counters.unclaimed.load(Ordering::Relaxed), 0);
}

#[test]
fn unclaimed_port_reads_float_high_and_halt_goes_to_the_arch() {
    let Some(kvm) = kvm_or_skip() else { return };
    let Some(run) = run_payload(&kvm, Payload::UnclaimedPortThenHalt, 100) else {
        eprintln!("SKIPPED: no port I/O on this architecture");
        return;
    };
    assert_eq!(run.writes, vec![vec![0xff]]);
    assert_eq!(run.counters.unclaimed.load(Ordering::Relaxed), 1);
    assert_eq!(run.arch_exits, 1);
    assert_eq!(run.exit.reason(), Some(ExitReason::PowerOff));
}

#[test]
fn string_port_io_reaches_the_device_one_element_at_a_time() {
    let Some(kvm) = kvm_or_skip() else { return };
    let Some(run) = run_payload(&kvm, Payload::StringInOutThenHalt, 100) else {
        eprintln!("SKIPPED: no port I/O on this architecture");
        return;
    };
    assert_eq!(run.writes, vec![vec![1], vec![2], vec![3], vec![4]]);
    assert_eq!(run.exit.reason(), Some(ExitReason::PowerOff));
}
