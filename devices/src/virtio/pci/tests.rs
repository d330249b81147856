//! virtio-pci driven the way a guest driver drives it ([`Driver`]), over
//! a real virtio-rng serving from its worker thread: capabilities,
//! negotiation, queues, MSI-X per queue with masking, the INTx fallback,
//! reset, and accesses a driver should not make.

use std::time::Duration;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

use super::driver::*;
use super::NO_VECTOR;
use crate::virtio::testing::TestRing;
use crate::virtio::{feature, Rng, INT_CONFIG_CHANGE, INT_USED_BUFFER};

/// The rng's one queue, its rings from 0x10000, a buffer at 0x20000.
const RING: u64 = 0x10000;
const BUFFER: u64 = 0x20000;
const VERSION_1: u64 = feature(VIRTIO_F_VERSION_1);

fn rng() -> Driver {
    Driver::new(Box::new(Rng::new().unwrap()))
}

/// An rng the driver has started: queue 0 (16 entries) on `queue_vector`,
/// configuration on vector 0, MSI-X enabled if `msix`, vectors 0 and 1
/// programmed and unmasked.
fn started(queue_vector: u16, msix: bool) -> (Driver, TestRing) {
    let mut d = rng();
    assert!(d.negotiate(VERSION_1));
    if msix {
        d.msix_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
        for v in 0..2 {
            d.program_vector(v, message(v), false);
        }
        d.msix_control(MSIX_ENABLE);
    }
    d.set_common(CONFIG_MSIX_VECTOR, 2, 0);
    let ring = TestRing::new(&d.mem, RING, 16);
    d.setup_queue(0, 16, RING, queue_vector);
    d.driver_ok();
    assert_eq!(
        d.common(DEVICE_STATUS, 1),
        0xf,
        "DRIVER_OK without NEEDS_RESET"
    );
    (d, ring)
}

#[test]
fn the_function_says_what_it_is_and_where_its_structures_are() {
    let mut d = rng();
    assert_eq!(d.cfg_read(0x00, 2), 0x1af4);
    assert_eq!(d.cfg_read(0x02, 2), 0x1040 + 4, "modern id of virtio-rng");
    assert_eq!(d.cfg_read(0x08, 1), 1, "revision 1");
    assert_eq!(d.cfg_read(0x2c, 2), 0x1af4);
    assert_eq!(d.cfg_read(0x3d, 1), 1, "INTA#");
    // BAR0: 64-bit memory, sized by writing all-ones to both halves.
    assert_eq!(d.cfg_read(0x10, 4) & 0b111, 0b100);
    d.cfg_write(0x10, 4, u32::MAX);
    d.cfg_write(0x14, 4, u32::MAX);
    let size = !(u64::from(d.cfg_read(0x14, 4)) << 32 | u64::from(d.cfg_read(0x10, 4) & !0xf)) + 1;
    assert_eq!(size, super::layout::BAR_SIZE);
    let f = &d.found;
    assert_eq!(
        f.lengths[1], 0x38,
        "common configuration up to queue_device"
    );
    assert_eq!(
        (f.lengths[2], f.notify_multiplier),
        (4, 4),
        "one queue, 4 bytes"
    );
    assert_eq!(f.lengths[3], 1, "ISR byte");
    let regions = [
        f.common,
        f.notify,
        f.isr,
        f.device,
        f.msix_table,
        f.msix_pba,
    ];
    for (i, a) in regions.iter().enumerate() {
        assert!(a + 8 <= super::layout::BAR_SIZE);
        assert!(regions[i + 1..].iter().all(|b| a.abs_diff(*b) >= 0x1000));
    }
    assert_eq!(
        f.msix_vectors, 2,
        "one for the queue, one for configuration"
    );
    assert_eq!(d.common(NUM_QUEUES, 2), 1);
    assert_eq!(
        d.device_features(),
        VERSION_1 | feature(VIRTIO_RING_F_EVENT_IDX)
    );
    d.set_common(QUEUE_SELECT, 2, 0);
    assert_eq!(
        d.common(QUEUE_SIZE, 2),
        256,
        "the maximum until the driver sets one"
    );
}

#[test]
fn a_request_lands_in_memory_and_interrupts_on_exactly_its_vector() {
    let (mut d, mut ring) = started(1, true);
    ring.add_chain(&[(BUFFER, 32, true)]);
    d.kick(0);
    wait_for("the used buffer", || ring.used() == vec![(0, 32)]);
    let mut sent = Vec::new();
    wait_for("the message", || {
        sent.extend(d.sink.take());
        !sent.is_empty()
    });
    assert_eq!(sent, vec![(1, message(1))]);
    assert_eq!(d.isr(), 0, "MSI-X leaves the ISR alone");
    assert!(d.intx.event_fd().read().is_err(), "and INTx");
    // A second request: one more message, on the same vector.
    ring.add_chain(&[(BUFFER + 0x100, 16, true)]);
    d.kick(0);
    wait_for("the second message", || {
        sent.extend(d.sink.take());
        sent.len() == 2
    });
    assert_eq!(sent[1], (1, message(1)));
    assert_eq!(d.pci.stats().interrupts_sent, 2);
}

#[test]
fn configuration_changes_use_the_configuration_vector() {
    let (d, _ring) = started(1, true);
    d.pci.interrupt().signal_config_change();
    assert_eq!(d.sink.take(), vec![(0, message(0))]);
    let (mut d, _ring) = started(1, false);
    let generation = d.common(CONFIG_GENERATION, 1);
    d.pci.interrupt().signal_config_change();
    assert_eq!(d.common(CONFIG_GENERATION, 1), generation + 1);
    assert_eq!(d.isr(), INT_CONFIG_CHANGE as u8);
    assert_eq!(d.intx.event_fd().read().unwrap(), 1);
}

#[test]
fn a_masked_vector_goes_pending_and_is_sent_once_on_unmask() {
    let (mut d, mut ring) = started(1, true);
    d.mask_vector(1, true);
    ring.add_chain(&[(BUFFER, 8, true)]);
    d.kick(0);
    wait_for("the pending bit", || d.pending(1));
    assert_eq!(ring.used(), vec![(0, 8)]);
    assert!(d.sink.take().is_empty(), "nothing sent while masked");
    assert!(!d.pending(0));
    d.mask_vector(1, false);
    assert_eq!(d.sink.take(), vec![(1, message(1))]);
    assert!(!d.pending(1));
    d.mask_vector(1, true);
    d.mask_vector(1, false);
    assert!(d.sink.take().is_empty(), "sent once");
    // The function mask holds every vector the same way.
    d.msix_control(MSIX_ENABLE | MSIX_FUNCTION_MASK);
    d.pci.interrupt().signal_config_change();
    assert!(d.sink.take().is_empty() && d.pending(0));
    d.msix_control(MSIX_ENABLE);
    assert_eq!(d.sink.take(), vec![(0, message(0))]);
}

#[test]
fn a_source_without_a_vector_interrupts_nobody_while_msix_is_on() {
    let (mut d, mut ring) = started(NO_VECTOR, true);
    assert_eq!(d.common(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    ring.add_chain(&[(BUFFER, 8, true)]);
    d.kick(0);
    wait_for("the used buffer", || ring.used().len() == 1);
    std::thread::sleep(Duration::from_millis(20));
    assert!(d.sink.take().is_empty());
    assert_eq!(d.isr(), 0);
    assert!(d.intx.event_fd().read().is_err());
}

#[test]
fn vectors_past_the_table_read_back_as_no_vector() {
    let mut d = rng();
    assert!(d.negotiate(VERSION_1));
    d.set_common(CONFIG_MSIX_VECTOR, 2, 2);
    assert_eq!(d.common(CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.set_common(CONFIG_MSIX_VECTOR, 2, 1);
    assert_eq!(d.common(CONFIG_MSIX_VECTOR, 2), 1);
    d.set_common(QUEUE_SELECT, 2, 0);
    d.set_common(QUEUE_MSIX_VECTOR, 2, 7);
    assert_eq!(d.common(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.set_common(QUEUE_MSIX_VECTOR, 2, 0);
    assert_eq!(d.common(QUEUE_MSIX_VECTOR, 2), 0);
}

#[test]
fn without_msix_the_isr_and_intx_carry_the_interrupt() {
    let (mut d, mut ring) = started(1, false);
    ring.add_chain(&[(BUFFER, 8, true)]);
    d.kick(0);
    wait_for("INTx", || d.intx.event_fd().read().is_ok());
    assert_eq!(ring.used(), vec![(0, 8)]);
    assert!(d.sink.take().is_empty());
    assert_eq!(d.isr(), INT_USED_BUFFER as u8);
    assert_eq!(d.isr(), 0, "reading the ISR cleared it");
}

#[test]
fn the_intx_disable_bit_holds_the_line_low_while_status_shows_it_pending() {
    let (mut d, mut ring) = started(1, false);
    let command = d.cfg_read(0x04, 2);
    d.cfg_write(0x04, 2, command | 1 << 10);
    ring.add_chain(&[(BUFFER, 8, true)]);
    d.kick(0);
    wait_for("the used buffer", || ring.used().len() == 1);
    assert!(d.intx.event_fd().read().is_err(), "INTx disabled: no line");
    assert_eq!(d.cfg_read(0x06, 2) & 1 << 3, 1 << 3, "Interrupt Status");
    d.cfg_write(0x04, 2, command);
    assert_eq!(d.intx.event_fd().read().unwrap(), 1, "enabled: it rises");
    assert_eq!(d.isr(), INT_USED_BUFFER as u8);
    assert_eq!(d.cfg_read(0x06, 2) & 1 << 3, 0, "acknowledged");
}

#[test]
fn reset_stops_the_device_and_forgets_the_driver() {
    let (mut d, mut ring) = started(1, true);
    ring.add_chain(&[(BUFFER, 8, true)]);
    d.kick(0);
    wait_for("the used buffer", || ring.used().len() == 1);
    d.set_common(DEVICE_STATUS, 1, 0);
    assert_eq!(d.common(DEVICE_STATUS, 1), 0);
    d.set_common(QUEUE_SELECT, 2, 0);
    assert_eq!(d.common(QUEUE_ENABLE, 2), 0);
    assert_eq!(d.common(QUEUE_SIZE, 2), 256);
    assert_eq!(d.common(QUEUE_DESC, 8), 0);
    assert_eq!(d.common(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    assert_eq!(d.common(CONFIG_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.set_common(DRIVER_FEATURE_SELECT, 4, 0);
    assert_eq!(d.common(DRIVER_FEATURE, 4), 0);
    // The stopped device serves nothing more.
    d.sink.take();
    ring.add_chain(&[(BUFFER, 8, true)]);
    d.kick(0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ring.used().len(), 1);
    assert!(d.sink.take().is_empty());
    // And starts again from scratch.
    let ring = TestRing::new(&d.mem, RING, 16);
    assert!(d.negotiate(VERSION_1));
    d.setup_queue(0, 16, RING, 1);
    d.driver_ok();
    let mut ring = ring;
    ring.add_chain(&[(BUFFER, 4, true)]);
    d.kick(0);
    wait_for("the used buffer after reset", || {
        ring.used() == vec![(0, 4)]
    });
}

/// Every common configuration field, each read at its own width.
fn every_field(d: &mut Driver) -> Vec<u64> {
    let fields = [
        (0x00, 4),
        (0x04, 4),
        (0x08, 4),
        (0x0c, 4),
        (0x10, 2),
        (0x12, 2),
        (0x14, 1),
        (0x15, 1),
        (0x16, 2),
        (0x18, 2),
        (0x1a, 2),
        (0x1c, 2),
        (0x1e, 2),
        (0x20, 8),
        (0x28, 8),
        (0x30, 8),
    ];
    fields.iter().map(|&(at, len)| d.common(at, len)).collect()
}

#[test]
fn odd_accesses_change_nothing() {
    let mut d = rng();
    assert!(d.negotiate(VERSION_1));
    let common = d.found.common;
    d.set_common(QUEUE_SELECT, 2, 0);
    let before = every_field(&mut d);
    assert_eq!(
        before[3],
        VERSION_1 >> 32,
        "driver_feature page 1 read back"
    );
    // Odd sizes and misaligned halves, read-only fields, past the end.
    for (at, len) in [
        (0x01, 1),
        (0x04, 3),
        (0x12, 4),
        (0x21, 4),
        (0x38, 4),
        (0x20, 2),
    ] {
        d.bar_write(common + at, len, u64::MAX);
        assert_eq!(d.bar_read(common + at, len), 0, "{len} bytes at {at:#x}");
    }
    d.set_common(NUM_QUEUES, 2, 9);
    d.set_common(DEVICE_FEATURE, 4, 0);
    d.set_common(CONFIG_GENERATION, 1, 9);
    d.set_common(QUEUE_NOTIFY_OFF, 2, 9);
    assert_eq!(before, every_field(&mut d));
    // Outside every structure, and past the BAR: zero, ignored.
    for at in [0x6000, 0x7ffc, super::layout::BAR_SIZE, u64::MAX - 3] {
        d.bar_write(at, 4, u64::MAX);
        assert_eq!(d.bar_read(at, 4), 0);
    }
    // A kick to a queue that does not exist, a 1-byte kick.
    d.bar_write(d.found.notify + 4, 2, 1);
    d.bar_write(d.found.notify + 1, 1, 0);
    // Configuration space outside one dword reads all-ones.
    assert_eq!(d.cfg_read(0x02, 4), u32::MAX);
    assert_eq!(
        d.common(DEVICE_STATUS, 1),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
}

#[test]
fn queue_sizes_above_the_maximum_are_refused() {
    let mut d = rng();
    assert!(d.negotiate(VERSION_1));
    d.set_common(QUEUE_SELECT, 2, 0);
    for refused in [512, 3, 0] {
        d.set_common(QUEUE_SIZE, 2, refused);
        assert_eq!(d.common(QUEUE_SIZE, 2), 256, "size {refused}");
    }
    d.set_common(QUEUE_SIZE, 2, 64);
    assert_eq!(d.common(QUEUE_SIZE, 2), 64);
    // No such queue: reads zero, writes go nowhere.
    d.set_common(QUEUE_SELECT, 2, 1);
    d.set_common(QUEUE_SIZE, 2, 16);
    assert_eq!(d.common(QUEUE_SIZE, 2), 0);
}

#[test]
fn features_ok_is_refused_for_bits_not_offered_or_without_version_1() {
    let mut d = rng();
    assert!(!d.negotiate(VERSION_1 | 1 << 30), "unoffered bit 30");
    assert_eq!(d.common(DEVICE_STATUS, 1), ACKNOWLEDGE | DRIVER);
    assert!(
        !d.negotiate(feature(VIRTIO_RING_F_EVENT_IDX)),
        "legacy driver"
    );
    assert!(d.negotiate(VERSION_1 | feature(VIRTIO_RING_F_EVENT_IDX)));
    // Queues cannot be enabled before FEATURES_OK.
    let mut d = rng();
    d.set_common(DEVICE_STATUS, 1, ACKNOWLEDGE | DRIVER);
    d.setup_queue(0, 16, RING, 0);
    assert_eq!(d.common(QUEUE_ENABLE, 2), 0);
}

#[test]
fn the_pci_configuration_window_reaches_bar0() {
    let mut d = rng();
    assert_ne!(d.found.pci_cfg, 0, "capability type 5 found");
    let common = d.found.common;
    d.pci_cfg_write(common + DEVICE_STATUS, 1, ACKNOWLEDGE as u32);
    assert_eq!(d.common(DEVICE_STATUS, 1), ACKNOWLEDGE);
    assert_eq!(d.pci_cfg_read(common + NUM_QUEUES, 2), 1);
    d.set_common(DEVICE_FEATURE_SELECT, 4, 1);
    assert_eq!(d.pci_cfg_read(common + DEVICE_FEATURE, 4), 1, "VERSION_1");
    // A data access of another width than `length`, or another BAR:
    // plain configuration space, no BAR access.
    d.cfg_write(d.found.pci_cfg + 12, 4, 4);
    assert_eq!(d.cfg_read(d.found.pci_cfg + 16, 2), 0);
    d.cfg_write(d.found.pci_cfg + 4, 1, 2);
    assert_eq!(d.cfg_read(d.found.pci_cfg + 16, 4), 0);
    d.cfg_write(d.found.pci_cfg + 16, 4, 0);
    assert_eq!(d.common(DEVICE_STATUS, 1), ACKNOWLEDGE, "no reset written");
}
