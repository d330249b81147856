//! Transmit batches (net_tx.rs): frames leave at once, their completions
//! wait for the batch to fill, for its timer or for a flush, and each
//! batch costs one interrupt.

use std::os::fd::AsRawFd;

use super::*;
use crate::virtio::net::tx::BATCH_BYTES;

/// Queues `count` one-frame chains of `len` payload bytes on the transmit
/// ring (ring size 16).
fn queue_frames(f: &mut Fixture, count: usize, len: usize) {
    let frame = tap_frame(len);
    f.mem.write_slice(&frame, GuestAddress(0x20000)).unwrap();
    for _ in 0..count {
        f.tx.add_chain(&[(0x20000, frame.len() as u32, false)]);
    }
}

fn frames_sent(f: &Fixture) -> usize {
    let mut buf = vec![0u8; MAX_FRAME];
    std::iter::from_fn(|| f.host.recv(&mut buf).ok()).count()
}

fn interrupts(f: &Fixture) -> u64 {
    f.irq.event_fd().read().unwrap_or(0)
}

/// Waits up to 5 s for the batch timer (backend fd 1) to fire.
fn timer_fires(f: &Fixture) -> bool {
    let fd = f.handler.backend_fds()[1].0;
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&mut poll, 1, 5000) == 1 }
}

#[test]
fn completions_wait_for_the_timer_and_share_one_interrupt() {
    let mut f = fixture(false);
    queue_frames(&mut f, 3, 100);
    f.handler.queue_event(TX_QUEUE).unwrap();
    assert_eq!(frames_sent(&f), 3, "frames leave at once");
    assert!(f.tx.used().is_empty(), "completions held");
    assert_eq!(interrupts(&f), 0);
    assert_eq!(f.tx.avail_event(), 3, "kicks stay armed for new frames");
    assert!(timer_fires(&f), "the hold timer was armed");
    f.handler.backend_event(1, EventSet::IN).unwrap();
    assert_eq!(f.tx.used(), vec![(0, 0), (1, 0), (2, 0)]);
    assert_eq!(interrupts(&f), 1, "one interrupt for the batch");
    // Fired and read: a later timer event with nothing held does nothing.
    f.handler.backend_event(1, EventSet::IN).unwrap();
    assert_eq!((f.tx.used().len(), interrupts(&f)), (3, 0));
}

#[test]
fn frames_from_the_tap_take_held_completions_along() {
    let mut f = fixture(false);
    queue_frames(&mut f, 2, 100);
    f.handler.queue_event(TX_QUEUE).unwrap();
    assert!(f.tx.used().is_empty());
    f.rx.add_chain(&[(0x10000, 1000, true)]);
    f.host.send(&tap_frame(60)).unwrap();
    f.handler.backend_event(0, EventSet::IN).unwrap();
    assert_eq!(f.rx.used().len(), 1, "the frame was received");
    assert_eq!(f.tx.used(), vec![(0, 0), (1, 0)], "and the batch published");
}

#[test]
fn half_a_ring_is_published_at_once() {
    let mut f = fixture(false);
    queue_frames(&mut f, 9, 100);
    f.handler.queue_event(TX_QUEUE).unwrap();
    assert_eq!(frames_sent(&f), 9);
    assert_eq!(f.tx.used().len(), 8, "half of the 16-entry ring");
    assert_eq!(interrupts(&f), 1);
    f.handler.flush().unwrap();
    assert_eq!(f.tx.used().len(), 9, "the ninth was held, then flushed");
}

#[test]
fn a_batch_closes_at_its_byte_limit() {
    let mut f = fixture(false);
    queue_frames(&mut f, 3, BATCH_BYTES / 2);
    f.handler.queue_event(TX_QUEUE).unwrap();
    assert_eq!(frames_sent(&f), 3);
    assert_eq!(f.tx.used().len(), 2, "two half-limit frames fill a batch");
}

#[test]
fn event_idx_decides_the_batch_interrupt() {
    let mut f = fixture(false);
    // The driver wants an interrupt only once used entry 5 is written.
    f.tx.set_used_event(5);
    queue_frames(&mut f, 3, 100);
    f.handler.queue_event(TX_QUEUE).unwrap();
    f.handler.flush().unwrap();
    assert_eq!((f.tx.used().len(), interrupts(&f)), (3, 0));
    queue_frames(&mut f, 3, 100);
    f.handler.queue_event(TX_QUEUE).unwrap();
    f.handler.flush().unwrap();
    assert_eq!((f.tx.used().len(), interrupts(&f)), (6, 1));
}

#[test]
fn a_new_device_has_its_transmit_timer_disarmed() {
    let (end, _peer) = UnixDatagram::pair().unwrap();
    let tap = Tap::from_file(File::from(OwnedFd::from(end)), "fake0");
    let net = Net::with_tap(tap, [2, 0, 0, 0, 0, 7]).unwrap();
    let timer = net.tx_timer.lock().unwrap();
    assert!(timer.as_raw_fd() >= 0);
    assert!(!timer.is_armed().unwrap(), "armed only by a held batch");
}
