//! What a driver that programs nonsense over and over leaves in the log:
//! a handful of lines, however many times it tries.

use super::*;
use crate::test_log::{assert_few, Capture};

const TIMES: u32 = 10_000;

#[test]
fn invalid_queue_sizes_are_refused_with_few_lines() {
    let mut f = fixture();
    f.negotiate(feature(VIRTIO_F_VERSION_1));
    f.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    let log = Capture::start();
    // Not a power of two, zero, over QueueNumMax (16), over 16 bits.
    for (i, size) in (0..TIMES).zip([3, 0, 64, 0x1_0000].into_iter().cycle()) {
        f.write(VIRTIO_MMIO_QUEUE_NUM, size + (i % 2) * 0x100);
    }
    assert_few(&log.warnings_here(), "invalid QueueNum writes");
    // The queue keeps working with a valid size.
    f.setup_queue(0, 8, 0x1000);
    f.setup_queue(1, 16, 0x2000);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(f.activations()[0].queues[0].0, 8);
}

#[test]
fn misaligned_ring_addresses_are_refused_with_few_lines() {
    let mut f = fixture();
    f.negotiate(feature(VIRTIO_F_VERSION_1));
    f.write(VIRTIO_MMIO_QUEUE_SEL, 0);
    let log = Capture::start();
    let registers = [
        (VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1008),
        (VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x1101),
        (VIRTIO_MMIO_QUEUE_USED_LOW, 0x1202),
    ];
    for (_, &(register, value)) in (0..TIMES).zip(registers.iter().cycle()) {
        f.write(register, value);
    }
    assert_few(&log.warnings_here(), "misaligned ring addresses");
    // Valid addresses still land.
    f.setup_queue(0, 16, 0x1000);
    f.setup_queue(1, 16, 0x2000);
    f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
    assert_eq!(
        f.activations()[0].queues[0],
        (16, 0x1000, 0x1100, 0x1200, false)
    );
}

#[test]
fn activate_reset_cycles_with_a_broken_queue_leave_few_lines() {
    let mut f = fixture();
    let log = Capture::start();
    for i in 0..TIMES {
        f.negotiate(feature(VIRTIO_F_VERSION_1));
        f.setup_queue(0, 16, 0x1000);
        // Queue 1 either never made ready or placed past guest memory.
        if i % 2 == 0 {
            f.setup_queue(1, 16, 0xff00);
        }
        f.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
        assert_ne!(f.status() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        f.write(VIRTIO_MMIO_STATUS, 0);
    }
    assert!(f.activations().is_empty());
    assert_few(&log.warnings_here(), "failed activations");
}
