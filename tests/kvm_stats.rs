//! KVM's binary statistics on this host's real /dev/kvm: the VM and vCPU
//! stats fds open, carry the well-known names, and a vCPU's counters
//! advance while a tiny payload runs on another thread.
//!
//! Needs a working /dev/kvm. Without one this fails when `CI` is set and
//! skips with a message otherwise; a kernel without
//! KVM_CAP_BINARY_STATS_FD skips with a message.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arch::test_payloads::{self, Payload, MMIO_TARGET, RAM_SIZE};
use arch::ExitAction;
use common::kvm_or_skip;
use devices::{BusDevice, ExitSignal};
use tandem::kvm_stats::KvmStats;
use tandem::memory::create_guest_memory;
use tandem::vcpu::{run_loop, Buses, ExitCounters, VcpuShared};
use tandem::vcpus::{Request, VcpuControl};
use vm_memory::GuestAddress;

/// Counts MMIO writes and stops the vCPU after `limit` of them.
struct StopAfter {
    writes: usize,
    limit: usize,
    control: Arc<VcpuControl>,
}

impl BusDevice for StopAfter {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.writes += 1;
        if self.writes >= self.limit {
            self.control.set(Request::Stop);
        }
    }
}

#[test]
fn vm_and_vcpu_stats_are_read_and_advance() {
    let Some(kvm) = kvm_or_skip() else { return };
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let Some(vm_stats) = KvmStats::for_vm(&vm).expect("VM stats fd") else {
        eprintln!("SKIPPED: no KVM_CAP_BINARY_STATS_FD");
        return;
    };
    let vm_values = vm_stats.read().expect("read VM stats");
    eprintln!("VM stats: {:?}", vm_values.keys().collect::<Vec<_>>());
    assert!(!vm_values.is_empty(), "the VM has statistics");

    let mem = create_guest_memory(&vm, &[(GuestAddress(0), RAM_SIZE as u64)]).expect("memory");
    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let payload = Payload::MmioStoreLoop;
    assert!(test_payloads::load(&vcpu, &vm, &mem, payload).expect("load payload"));
    let vcpu_stats = KvmStats::for_vcpu(&vcpu)
        .expect("vCPU stats fd")
        .expect("a VM with stats has vCPU stats");
    let before = vcpu_stats.read().expect("read vCPU stats");
    eprintln!("vCPU stats: {:?}", before.keys().collect::<Vec<_>>());
    assert!(before.contains_key("exits"), "{before:?}");

    const STORES: usize = 50;
    let control = Arc::new(VcpuControl::default());
    let device = Arc::new(Mutex::new(StopAfter {
        writes: 0,
        limit: STORES,
        control: control.clone(),
    }));
    let mut buses = Buses::default();
    buses.mmio.insert(device, MMIO_TARGET, 2).unwrap();
    // The VcpuFd moves to its own thread and is closed there; the stats
    // fd taken before is unaffected.
    let counters = std::thread::spawn(move || {
        let exit = ExitSignal::new().unwrap();
        let counters = ExitCounters::default();
        let shared = VcpuShared {
            buses: &buses,
            exit: &exit,
            control: &control,
            counters: &counters,
        };
        run_loop(&mut vcpu, 0, &shared, |_, e| {
            ExitAction::Fatal(format!("unexpected exit {e:?}"))
        });
        drop(vcpu);
        counters
    })
    .join()
    .expect("vCPU thread");
    assert_eq!(counters.mmio.load(Ordering::Relaxed), STORES as u64);

    let after = vcpu_stats.read().expect("read vCPU stats after the run");
    let exits = after["exits"] - before["exits"];
    assert!(exits >= STORES as u64, "exits advanced by {exits}");
    if let (Some(b), Some(a)) = (before.get("mmio_exits"), after.get("mmio_exits")) {
        assert!(a - b >= STORES as u64, "mmio_exits advanced by {}", a - b);
    }
    eprintln!("vCPU stats after {STORES} MMIO stores: {after:?}");
    for (what, stats, values) in [("VM", &vm_stats, &vm_values), ("vCPU", &vcpu_stats, &after)] {
        let skipped: Vec<&str> = stats
            .descriptors()
            .iter()
            .filter(|d| !values.contains_key(&d.name))
            .map(|d| &*d.name)
            .collect();
        eprintln!("{what} stats skipped (histograms): {skipped:?}");
    }
}
