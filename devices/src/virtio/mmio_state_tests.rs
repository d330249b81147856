//! Saving a serving virtio-rng behind its transport and restoring it into
//! a fresh transport over the same guest memory, as a snapshot's restore
//! does: the restored device goes on at the next ring entry. A restored
//! virtio-vsock tells its driver that its connections are gone.

use std::time::{Duration, Instant};

use guest_memory::GuestMemoryMmap;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::testing::{test_memory, TestRing};
use crate::virtio::vsock::Vsock;
use crate::virtio::{feature, Rng, INT_USED_BUFFER};
use crate::{BusDevice, IrqTrigger};

const RING_BASE: u64 = 0x1_0000;
const SIZE: u16 = 16;
const DRIVER_OK: u32 = VIRTIO_CONFIG_S_ACKNOWLEDGE
    | VIRTIO_CONFIG_S_DRIVER
    | VIRTIO_CONFIG_S_FEATURES_OK
    | VIRTIO_CONFIG_S_DRIVER_OK;

fn transport(mem: &GuestMemoryMmap) -> (MmioTransport, IrqTrigger) {
    let irq = IrqTrigger::new().unwrap();
    let rng = Box::new(Rng::new().unwrap());
    (
        MmioTransport::new(mem.clone(), irq.clone(), rng).unwrap(),
        irq,
    )
}

fn write(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(offset.into(), &value.to_le_bytes());
}

fn read(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    t.read(offset.into(), &mut data);
    u32::from_le_bytes(data)
}

/// What a Linux driver writes, up to DRIVER_OK, for the ring `TestRing`
/// lays out at `RING_BASE`.
fn start_driver(t: &mut MmioTransport) {
    start_driver_with_queues(t, 1);
}

/// [`start_driver`] for a device of `count` queues, queue `i`'s ring at
/// [`ring_base`]`(i)`.
fn start_driver_with_queues(t: &mut MmioTransport, count: u32) {
    let mut status = 0;
    for bit in [VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER] {
        status |= bit;
        write(t, VIRTIO_MMIO_STATUS, status);
    }
    write(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write(
        t,
        VIRTIO_MMIO_DRIVER_FEATURES,
        1 << (VIRTIO_F_VERSION_1 - 32),
    );
    write(t, VIRTIO_MMIO_STATUS, status | VIRTIO_CONFIG_S_FEATURES_OK);
    for queue in 0..count {
        let base = ring_base(queue);
        write(t, VIRTIO_MMIO_QUEUE_SEL, queue);
        write(t, VIRTIO_MMIO_QUEUE_NUM, SIZE.into());
        for (low, addr) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, base),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, base + 0x1000),
            (VIRTIO_MMIO_QUEUE_USED_LOW, base + 0x2000),
        ] {
            write(t, low, addr as u32);
        }
        write(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    write(t, VIRTIO_MMIO_STATUS, DRIVER_OK);
}

/// Where [`start_driver_with_queues`] puts queue `index`'s ring.
fn ring_base(index: u32) -> u64 {
    RING_BASE + u64::from(index) * 0x4000
}

/// Waits up to 5 s for `ring` to have `count` used entries.
fn wait_used(ring: &TestRing, count: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.used().len() < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    ring.used().len() == count
}

#[test]
fn a_restored_device_goes_on_at_the_next_ring_entry() {
    let mem = test_memory();
    let mut ring = TestRing::new(&mem, RING_BASE, SIZE);
    let (mut old, _) = transport(&mem);
    start_driver(&mut old);
    for i in 0..3 {
        ring.add_chain(&[(0x2_0000 + 0x100 * i, 0x10, true)]);
    }
    write(&mut old, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    assert!(wait_used(&ring, 3), "served before the snapshot");
    assert!(old.pause());
    let saved = old.save_state().unwrap();
    assert!(saved.serving && saved.activated);
    assert_eq!(saved.status, DRIVER_OK);
    assert_eq!(saved.driver_features, feature(VIRTIO_F_VERSION_1));
    assert_eq!(saved.queues[0].size, SIZE);
    assert_eq!(saved.queues[0].used_ring, RING_BASE + 0x2000);
    let at_three = QueuePosition {
        next_avail: 3,
        next_used: 3,
    };
    assert_eq!(saved.queues[0].position, at_three);
    assert_eq!(saved.interrupt.status, INT_USED_BUFFER, "not acked yet");
    drop(old);

    let (mut new, irq) = transport(&mem);
    new.restore_state(&saved).unwrap();
    assert_eq!(read(&mut new, VIRTIO_MMIO_STATUS), DRIVER_OK);
    assert_eq!(read(&mut new, VIRTIO_MMIO_QUEUE_READY), 1);
    assert_eq!(
        read(&mut new, VIRTIO_MMIO_INTERRUPT_STATUS),
        INT_USED_BUFFER
    );
    // Its worker starts parked: saved again before it ever ran, the same
    // state; a request made now waits for the resume.
    assert!(new.pause());
    assert_eq!(new.save_state().unwrap(), saved);
    let head = ring.add_chain(&[(0x2_1000, 0x20, true)]);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ring.used().len(), 3, "served while paused");
    new.resume();
    assert!(wait_used(&ring, 4), "served after the resume");
    assert_eq!(ring.used()[3], (u32::from(head), 0x20));
    assert!(irq.event_fd().read().unwrap() >= 1, "interrupts raised");
}

#[test]
fn a_state_for_another_device_or_features_is_refused() {
    let mem = test_memory();
    let (mut old, _) = transport(&mem);
    start_driver(&mut old);
    assert!(old.pause());
    let saved = old.save_state().unwrap();
    drop(old);
    let refuse = |state: &MmioState| transport(&mem).0.restore_state(state).unwrap_err();
    let other_type = MmioState {
        device_type: 2,
        ..saved.clone()
    };
    assert!(refuse(&other_type).contains("type 2"));
    let other_features = MmioState {
        driver_features: saved.driver_features | 1 << 40,
        ..saved.clone()
    };
    assert!(refuse(&other_features).contains("offers"));
    let mut bad_queue = saved.clone();
    bad_queue.queues[0].size = 3;
    assert!(refuse(&bad_queue).starts_with("queue 0"));
    let (mut used, _) = transport(&mem);
    start_driver(&mut used);
    assert_eq!(
        used.restore_state(&saved).unwrap_err(),
        "the device is in use already"
    );
}

#[test]
fn a_restored_vsock_tells_its_driver_its_connections_are_gone() {
    const EVENTS: u32 = 2;
    let mem = test_memory();
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let vsock = |name: &str| {
        let device = Vsock::new(3, &dir.as_path().join(name)).unwrap();
        let irq = IrqTrigger::new().unwrap();
        MmioTransport::new(mem.clone(), irq, Box::new(device)).unwrap()
    };
    let mut events = TestRing::new(&mem, ring_base(EVENTS), SIZE);
    let event = 0x3_0000;
    mem.write_obj(u32::MAX, GuestAddress(event)).unwrap();
    events.add_chain(&[(event, 4, true)]);
    let mut old = vsock("old.sock");
    start_driver_with_queues(&mut old, 3);
    write(&mut old, VIRTIO_MMIO_QUEUE_NOTIFY, EVENTS);
    std::thread::sleep(Duration::from_millis(50));
    assert!(events.used().is_empty(), "a fresh device owes no reset");
    assert!(old.pause());
    let saved = old.save_state().unwrap();
    drop(old);

    let mut new = vsock("new.sock");
    new.restore_state(&saved).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(events.used().is_empty(), "told before the VM resumed");
    new.resume();
    assert!(wait_used(&events, 1), "no event after the restore");
    let id: u32 = mem.read_obj(GuestAddress(event)).unwrap();
    assert_eq!(id, crate::virtio::vsock::packet::EVENT_TRANSPORT_RESET);
}
