//! Tests of the virtio-mmio register file and status state machine,
//! driven the way a Linux guest driver drives it.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::GuestAddress;

use super::*;
use crate::virtio::transport::{ACK, DRIVER, DRIVER_OK, FEATURES_OK};
use crate::virtio::worker::Worker;
use crate::virtio::{feature, ActivateContext};
use crate::virtio::{read_config_bytes, ActivateError, INT_CONFIG_CHANGE, INT_USED_BUFFER};

const DEVICE_TYPE: u32 = 42;
const OFFERED: u64 = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX) | 0b101;

/// What the fake device saw of an activation.
#[derive(Debug, Clone, PartialEq)]
struct Activation {
    features: u64,
    queues: Vec<(u16, u64, u64, u64, bool)>,
}

#[derive(Default)]
struct Record {
    activations: Vec<Activation>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
}

struct FakeDevice {
    record: Arc<Mutex<Record>>,
    worker: Option<Worker>,
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 32]
    }
    fn features(&self) -> u64 {
        OFFERED
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&[10, 11, 12, 13, 14, 15], offset, data)
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut record = self.record.lock().unwrap();
        record.config_writes.push((offset, data.to_vec()));
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let queues = ctx
            .queues
            .iter()
            .map(|q| {
                let q = &q.queue;
                let event_idx = q.event_idx_enabled();
                (
                    q.size(),
                    q.desc_table(),
                    q.avail_ring(),
                    q.used_ring(),
                    event_idx,
                )
            })
            .collect();
        let activation = Activation {
            features: ctx.features,
            queues,
        };
        self.record.lock().unwrap().activations.push(activation);
        Ok(())
    }
    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
    fn reset(&mut self) -> Option<Worker> {
        self.record.lock().unwrap().resets += 1;
        None
    }
}

struct Fixture {
    transport: MmioTransport,
    irq: IrqTrigger,
    record: Arc<Mutex<Record>>,
}

fn fixture() -> Fixture {
    let record = Arc::new(Mutex::new(Record::default()));
    let device = FakeDevice {
        record: record.clone(),
        worker: None,
    };
    fixture_with(Box::new(device), record)
}

fn fixture_with(device: Box<dyn VirtioDevice>, record: Arc<Mutex<Record>>) -> Fixture {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let irq = IrqTrigger::new().unwrap();
    let transport = MmioTransport::new(mem, irq.clone(), device).unwrap();
    Fixture {
        transport,
        irq,
        record,
    }
}

impl Fixture {
    fn read(&mut self, offset: u32) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset.into(), &mut data);
        u32::from_le_bytes(data)
    }

    fn write(&mut self, offset: u32, value: u32) {
        self.transport.write(offset.into(), &value.to_le_bytes());
    }

    fn status(&mut self) -> u32 {
        self.read(VIRTIO_MMIO_STATUS)
    }

    /// ACKNOWLEDGE, DRIVER, the features, FEATURES_OK; returns the status
    /// read back.
    fn negotiate(&mut self, features: u64) -> u32 {
        self.write(VIRTIO_MMIO_STATUS, ACK);
        self.write(VIRTIO_MMIO_STATUS, DRIVER);
        for page in 0..2 {
            self.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, page);
            self.write(
                VIRTIO_MMIO_DRIVER_FEATURES,
                (features >> (32 * page)) as u32,
            );
        }
        self.write(VIRTIO_MMIO_STATUS, FEATURES_OK);
        self.status()
    }

    /// Programs queue `index` with rings at `base`, `base + 0x100`, `base + 0x200`.
    fn setup_queue(&mut self, index: u32, size: u32, base: u32) {
        self.write(VIRTIO_MMIO_QUEUE_SEL, index);
        self.write(VIRTIO_MMIO_QUEUE_NUM, size);
        self.write(VIRTIO_MMIO_QUEUE_DESC_LOW, base);
        self.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
        self.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x100);
        self.write(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
        self.write(VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x200);
        self.write(VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
        self.write(VIRTIO_MMIO_QUEUE_READY, 1);
    }

    fn activations(&self) -> Vec<Activation> {
        self.record.lock().unwrap().activations.clone()
    }
}

#[test]
fn identity_registers() {
    let mut f = fixture();
    assert_eq!(f.read(VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
    assert_eq!(f.read(VIRTIO_MMIO_VERSION), 2);
    assert_eq!(f.read(VIRTIO_MMIO_DEVICE_ID), DEVICE_TYPE);
    assert_eq!(f.read(VIRTIO_MMIO_SHM_LEN_LOW), u32::MAX);
    f.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    assert_eq!(f.read(VIRTIO_MMIO_DEVICE_FEATURES), (OFFERED >> 32) as u32);
    f.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    assert_eq!(f.read(VIRTIO_MMIO_DEVICE_FEATURES), OFFERED as u32);
    f.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
    assert_eq!(f.read(VIRTIO_MMIO_DEVICE_FEATURES), 0);
    for (sel, max) in [(0, 16), (1, 32), (2, 0)] {
        f.write(VIRTIO_MMIO_QUEUE_SEL, sel);
        assert_eq!(f.read(VIRTIO_MMIO_QUEUE_NUM_MAX), max);
    }
}

#[test]
fn misaligned_or_narrow_register_accesses_are_ignored() {
    let mut f = fixture();
    let mut byte = [0xffu8];
    f.transport.read(0, &mut byte);
    assert_eq!(byte, [0]);
    f.transport.write(VIRTIO_MMIO_STATUS.into(), &[1]);
    f.transport
        .write(u64::from(VIRTIO_MMIO_STATUS) + 1, &[1, 0, 0, 0]);
    assert_eq!(f.status(), 0);
}

#[test]
fn negotiation_accepts_a_subset_with_version_1() {
    let mut f = fixture();
    let wanted = feature(VIRTIO_F_VERSION_1) | 0b1;
    assert_eq!(f.negotiate(wanted), FEATURES_OK);
    // Features are frozen once FEATURES_OK is set.
    f.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    f.write(VIRTIO_MMIO_DRIVER_FEATURES, 0b100);
    f.setup_queue(0, 16, 0x1000);
    f.setup_queue(1, 16, 0x2000);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(f.status(), DRIVER_OK);
    assert_eq!(f.activations()[0].features, wanted);
}

#[test]
fn negotiation_refuses_a_legacy_driver() {
    let mut f = fixture();
    assert_eq!(f.negotiate(0b1), DRIVER, "FEATURES_OK must not stick");
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(f.status(), DRIVER);
    assert!(f.activations().is_empty());
    f.write(VIRTIO_MMIO_STATUS, DRIVER | VIRTIO_CONFIG_S_FAILED);
    assert_eq!(f.status(), DRIVER | VIRTIO_CONFIG_S_FAILED);
}

#[test]
fn negotiation_refuses_unoffered_features() {
    let mut f = fixture();
    assert_eq!(f.negotiate(feature(VIRTIO_F_VERSION_1) | 0b10), DRIVER);
}

#[test]
fn out_of_order_status_writes_are_ignored() {
    let mut f = fixture();
    f.write(VIRTIO_MMIO_STATUS, DRIVER);
    assert_eq!(f.status(), 0, "DRIVER without ACKNOWLEDGE");
    f.write(VIRTIO_MMIO_STATUS, ACK);
    f.write(VIRTIO_MMIO_STATUS, ACK | VIRTIO_CONFIG_S_DRIVER_OK);
    assert_eq!(f.status(), ACK);
}

#[test]
fn driver_ok_hands_over_the_configured_queues() {
    let mut f = fixture();
    // Queue registers are ignored before FEATURES_OK.
    f.setup_queue(0, 8, 0x4000);
    f.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(f.read(VIRTIO_MMIO_QUEUE_READY), 0);

    let features = feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX);
    f.negotiate(features);
    f.setup_queue(0, 8, 0x1000);
    f.setup_queue(1, 32, 0x2000);
    f.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    assert_eq!(f.read(VIRTIO_MMIO_QUEUE_READY), 1);
    // Changing a ready queue is not allowed.
    f.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x8000);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(f.status(), DRIVER_OK);
    let expected = Activation {
        features,
        queues: vec![
            (8, 0x1000, 0x1100, 0x1200, true),
            (32, 0x2000, 0x2100, 0x2200, true),
        ],
    };
    assert_eq!(f.activations(), vec![expected]);
}

#[test]
fn unready_queue_makes_activation_fail_with_needs_reset() {
    let mut f = fixture();
    f.negotiate(feature(VIRTIO_F_VERSION_1));
    f.setup_queue(0, 16, 0x1000);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(f.status(), DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET);
    assert!(f.activations().is_empty());
    assert_eq!(f.read(VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG_CHANGE);
    assert_eq!(f.irq.event_fd().read().unwrap(), 1);
}

#[test]
fn queue_outside_guest_memory_is_refused() {
    let mut f = fixture();
    f.negotiate(feature(VIRTIO_F_VERSION_1));
    f.setup_queue(0, 16, 0x1000);
    f.setup_queue(1, 16, 0xff00);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_ne!(f.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    assert!(f.activations().is_empty());
}

#[test]
fn reset_clears_status_queues_and_features() {
    let mut f = fixture();
    f.negotiate(feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX));
    f.setup_queue(0, 8, 0x1000);
    f.setup_queue(1, 8, 0x2000);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    f.transport.core.interrupt.signal_used(0);
    f.write(VIRTIO_MMIO_STATUS, 0);
    assert_eq!(f.record.lock().unwrap().resets, 1);
    assert_eq!(f.status(), 0);
    assert_eq!(f.read(VIRTIO_MMIO_INTERRUPT_STATUS), 0);
    for sel in 0..2 {
        f.write(VIRTIO_MMIO_QUEUE_SEL, sel);
        assert_eq!(f.read(VIRTIO_MMIO_QUEUE_READY), 0);
    }
    // A second negotiation starts from no features at all.
    f.write(VIRTIO_MMIO_STATUS, ACK);
    f.write(VIRTIO_MMIO_STATUS, DRIVER);
    f.write(VIRTIO_MMIO_STATUS, FEATURES_OK);
    assert_eq!(f.status(), DRIVER, "old features were forgotten");
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture();
    f.transport.core.interrupt.signal_used(0);
    f.transport.core.interrupt.signal_config_change();
    let both = INT_USED_BUFFER | INT_CONFIG_CHANGE;
    assert_eq!(f.read(VIRTIO_MMIO_INTERRUPT_STATUS), both);
    assert_eq!(f.read(VIRTIO_MMIO_CONFIG_GENERATION), 1);
    f.write(VIRTIO_MMIO_INTERRUPT_ACK, INT_USED_BUFFER);
    assert_eq!(f.read(VIRTIO_MMIO_INTERRUPT_STATUS), INT_CONFIG_CHANGE);
    assert_eq!(f.irq.event_fd().read().unwrap(), 2);
}

#[test]
fn config_space_reads_and_writes() {
    let mut f = fixture();
    let mut data = [0u8; 4];
    f.transport.read(CONFIG_SPACE + 2, &mut data);
    assert_eq!(data, [12, 13, 14, 15]);
    let mut byte = [0u8];
    f.transport.read(CONFIG_SPACE + 5, &mut byte);
    assert_eq!(byte, [15]);
    f.transport.read(CONFIG_SPACE + 4, &mut data);
    assert_eq!(data, [14, 15, 0, 0], "zero past the end");
    f.transport.write(CONFIG_SPACE, &[1]);
    assert!(
        f.record.lock().unwrap().config_writes.is_empty(),
        "before DRIVER"
    );
    f.write(VIRTIO_MMIO_STATUS, ACK);
    f.write(VIRTIO_MMIO_STATUS, DRIVER);
    f.transport.write(CONFIG_SPACE + 3, &[7, 8]);
    assert_eq!(
        f.record.lock().unwrap().config_writes,
        vec![(3, vec![7, 8])]
    );
}

#[test]
fn queue_notify_signals_the_kick_event() {
    let mut f = fixture();
    let events: Vec<u32> = f.transport.queue_events().iter().map(|(i, _)| *i).collect();
    assert_eq!(events, vec![0, 1]);
    f.write(VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    f.write(VIRTIO_MMIO_QUEUE_NOTIFY, 7);
    assert!(
        f.transport.core.kicks[0].read().is_err(),
        "queue 0 not kicked"
    );
    assert_eq!(f.transport.core.kicks[1].read().unwrap(), 1);
}

#[path = "mmio_reset_tests.rs"]
mod reset;

#[path = "mmio_log_tests.rs"]
mod log_rates;
