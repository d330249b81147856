//! What one metrics line says (docs/metrics.md is the reference): gathered
//! from the VM's lifecycle counters, the machine's exit and device
//! counters, its memory, and KVM's own statistics.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::machine::Machine;
use crate::memory::rss_report;
use crate::metrics::device_entry;
use crate::vm::Vm;

/// What the main thread counts itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmmCounters {
    /// Metrics lines the sink could not deliver.
    pub metrics_lines_dropped: u64,
    /// API requests answered.
    pub api_requests: u64,
    /// API requests answered with a fault (400).
    pub api_faults: u64,
}

/// The line for `vm` now.
pub fn metrics_line(vm: &mut Vm, counters: &VmmCounters) -> Value {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let stats = vm.lifecycle_stats();
    let state = vm.state().api_name();
    let mut line = json!({
        "utc_timestamp_ms": timestamp,
        "vmm": {
            "uptime_ms": crate::process_started().elapsed().as_millis() as u64,
            "state": state,
            "metrics_lines_dropped": counters.metrics_lines_dropped,
        },
        "api": {
            "requests": counters.api_requests,
            "faults": counters.api_faults,
        },
        "vcpu_lifecycle": {
            "pauses": stats.pauses,
            "resumes": stats.resumes,
            "last_pause_us": stats.last_pause.as_micros() as u64,
            "last_resume_us": stats.last_resume.as_micros() as u64,
        },
    });
    if let Some(machine) = vm.machine() {
        add_machine(&mut line, machine);
    }
    line
}

fn add_machine(line: &mut Value, machine: &Machine) {
    if let Ok(rss) = rss_report(machine.memory()) {
        line["vmm"]["vmm_rss_kib"] = rss.vmm_kib.into();
        line["vmm"]["guest_rss_kib"] = rss.guest_kib.into();
    }
    line["vmm"]["console_bytes_dropped"] = machine.console_output().dropped_bytes().into();
    let exits = machine.exit_counters();
    line["exits"] = json!({
        "total": exits.total(),
        "pio": exits.pio.load(Ordering::Relaxed),
        "mmio": exits.mmio.load(Ordering::Relaxed),
        "other": exits.other.load(Ordering::Relaxed),
        "unclaimed": exits.unclaimed.load(Ordering::Relaxed),
    });
    let devices: Map<String, Value> = machine
        .devices()
        .virtio
        .iter()
        .map(|slot| {
            let stats = slot.interrupt.stats().snapshot();
            let io = slot.interrupt.io_stats().snapshot();
            (slot.name.clone(), device_entry(&stats, &io))
        })
        .collect();
    line["devices"] = devices.into();
    let kvm: Map<String, Value> = machine
        .kvm_stats()
        .iter()
        .filter_map(|(name, stats)| {
            let values = stats.read().ok()?;
            Some((name.clone(), json!(values)))
        })
        .collect();
    line["kvm"] = kvm.into();
}
