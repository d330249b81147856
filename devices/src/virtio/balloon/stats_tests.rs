//! Stats queue tests: parsing a stats buffer, refusing garbage without
//! losing the buffer, the hold-and-give-back protocol on the interval and
//! on an interval change, Firecracker's on/off rule, and a seeded
//! adversarial driver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::handler::{BalloonHandler, STATS_CHANGED, STATS_TIMER};
use super::stats::{check_len, parse, GuestStats, StatsError, MAX_STATS, STAT_LEN};
use super::tests::{handler_for, new_shared};
use super::*;
use crate::virtio::testing::{test_memory, TestRing};
use crate::virtio::worker::WorkerHandler;
use vmm_sys_util::epoll::EventSet;

const STATS_QUEUE: usize = 2;
const BUFFER: u64 = 0x8000;

fn entries(stats: &[(u16, u64)]) -> Vec<u8> {
    stats
        .iter()
        .flat_map(|&(tag, value)| {
            let mut entry = tag.to_le_bytes().to_vec();
            entry.extend_from_slice(&value.to_le_bytes());
            entry
        })
        .collect()
}

fn stats_config() -> BalloonConfig {
    BalloonConfig {
        stats_interval_s: 1,
        ..Default::default()
    }
}

/// A handler with inflate, deflate and stats queues; the stats ring is
/// the one returned.
fn stats_handler(mem: &GuestMemoryMmap, shared: &Arc<Shared>) -> (BalloonHandler, TestRing) {
    let (inflate, deflate) = (
        TestRing::new(mem, 0x10000, 16),
        TestRing::new(mem, 0x20000, 16),
    );
    let stats = TestRing::new(mem, 0, 16);
    let features = feature(VIRTIO_BALLOON_F_STATS_VQ);
    let handler = handler_for(mem, &[&inflate, &deflate, &stats], shared, features);
    (handler, stats)
}

#[test]
fn a_stats_buffer_parses_into_firecracker_fields() {
    let mut stats = GuestStats::default();
    let bytes = entries(&[
        (4, 100 << 20),
        (5, 512 << 20),
        (0, 7),
        (99, 1),
        (5, 500 << 20),
    ]);
    assert_eq!(parse(&bytes, &mut stats), Ok(1), "one unknown tag");
    assert_eq!(stats.free_memory, Some(100 << 20));
    assert_eq!(
        stats.total_memory,
        Some(500 << 20),
        "the last of a repeated tag"
    );
    assert_eq!(stats.swap_in, Some(7));
    assert_eq!(stats.swap_out, None);
    // A later buffer updates what it names and keeps the rest.
    parse(&entries(&[(4, 1)]), &mut stats).unwrap();
    assert_eq!((stats.free_memory, stats.swap_in), (Some(1), Some(7)));
}

#[test]
fn garbage_lengths_are_refused_and_change_nothing() {
    let mut stats = GuestStats::default();
    let mut bytes = entries(&[(4, 1)]);
    bytes.push(0);
    assert_eq!(parse(&bytes, &mut stats), Err(StatsError::BadLength(11)));
    assert_eq!(parse(&[], &mut stats), Err(StatsError::BadLength(0)));
    let long = entries(&vec![(4, 2); MAX_STATS + 1]);
    assert_eq!(
        parse(&long, &mut stats),
        Err(StatsError::TooLong(long.len()))
    );
    assert_eq!(stats, GuestStats::default());
    assert!(check_len(MAX_STATS * STAT_LEN).is_ok());
    assert!(check_len(usize::MAX).is_err());
}

#[test]
fn the_device_holds_the_buffer_until_the_interval_passes() {
    let mem = test_memory();
    let shared = new_shared(stats_config());
    let (mut handler, mut ring) = stats_handler(&mem, &shared);
    let bytes = entries(&[(5, 512 << 20), (4, 300 << 20)]);
    mem.write_slice(&bytes, GuestAddress(BUFFER)).unwrap();
    ring.add_chain(&[(BUFFER, bytes.len() as u32, false)]);
    handler.queue_event(STATS_QUEUE).unwrap();
    assert!(ring.used().is_empty(), "held, not returned");
    let control = BalloonControl(shared.clone());
    assert_eq!(control.guest_stats().total_memory, Some(512 << 20));
    assert_eq!(control.stats().stats_updates, 1);
    // Looked at before the timer fired (as after a pause): still held.
    handler.backend_event(STATS_TIMER, EventSet::IN).unwrap();
    assert!(ring.used().is_empty());
    // A snapshot now would hand the held buffer to the restored device.
    let positions = handler.queue_positions();
    assert_eq!(positions[STATS_QUEUE].next_avail, 0);

    arm(&handler.stats_timer, 1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.used().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        handler.backend_event(STATS_TIMER, EventSet::IN).unwrap();
    }
    assert_eq!(ring.used(), vec![(0, 0)], "given back after the interval");
    assert_eq!(handler.queue_positions()[STATS_QUEUE].next_avail, 1);
    // Nothing held: another interval returns nothing more.
    handler.ask_for_stats().unwrap();
    assert_eq!(ring.used().len(), 1);
}

#[test]
fn a_new_interval_asks_at_once_and_on_off_is_refused() {
    let mem = test_memory();
    let shared = new_shared(stats_config());
    let (mut handler, mut ring) = stats_handler(&mem, &shared);
    mem.write_slice(&entries(&[(4, 1)]), GuestAddress(BUFFER))
        .unwrap();
    ring.add_chain(&[(BUFFER, STAT_LEN as u32, false)]);
    handler.queue_event(STATS_QUEUE).unwrap();
    let control = BalloonControl(shared.clone());
    assert_eq!(control.set_stats_interval(1), Ok(()), "unchanged");
    assert_eq!(
        control.set_stats_interval(0),
        Err(StatsIntervalError::OnOffAfterBoot)
    );
    control.set_stats_interval(30).unwrap();
    handler.backend_event(STATS_CHANGED, EventSet::IN).unwrap();
    assert_eq!(ring.used(), vec![(0, 0)]);
    assert!(handler.stats_timer.lock().unwrap().is_armed().unwrap());

    let off = BalloonControl(new_shared(BalloonConfig::default()));
    assert!(!off.stats_enabled());
    assert_eq!(
        off.set_stats_interval(5),
        Err(StatsIntervalError::OnOffAfterBoot)
    );
    assert_eq!(off.set_stats_interval(0), Ok(()));
}

#[test]
fn garbage_buffers_are_refused_but_still_given_back() {
    let mem = test_memory();
    let shared = new_shared(stats_config());
    let (mut handler, mut ring) = stats_handler(&mem, &shared);
    // Not whole entries; too long; write-only; outside memory.
    ring.add_chain(&[(BUFFER, 11, false)]);
    ring.add_chain(&[(BUFFER, (STAT_LEN * (MAX_STATS + 1)) as u32, false)]);
    ring.add_chain(&[(BUFFER, 20, true)]);
    ring.add_chain(&[(0x20_0000, 20, false)]);
    handler.queue_event(STATS_QUEUE).unwrap();
    let stats = BalloonControl(shared.clone()).stats();
    assert_eq!((stats.stats_updates, stats.stats_refused), (0, 4));
    assert_eq!(BalloonControl(shared).guest_stats(), GuestStats::default());
    // A driver that queues several gets all but the last back at once.
    assert_eq!(ring.used(), vec![(0, 0), (1, 0), (2, 0)]);
    handler.ask_for_stats().unwrap();
    assert_eq!(ring.used().len(), 4);
}

/// A seeded adversarial driver: random buffers, lengths, tags and chain
/// shapes, some over the rings themselves. The device never panics, holds
/// at most one buffer, hands every other one back, and records known
/// tags only.
#[test]
fn an_adversarial_driver_cannot_break_the_stats_queue() {
    let mem = test_memory();
    let shared = new_shared(stats_config());
    let (mut handler, mut ring) = stats_handler(&mem, &shared);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut queued = 0usize;
    for round in 0..2000 {
        let addr = next() % 0x10_1000; // sometimes past the end of memory
        let len = match next() % 4 {
            0 => (next() % 700) as u32,
            1 => (STAT_LEN * (1 + next() as usize % 20)) as u32,
            2 => u32::MAX,
            _ => 10,
        };
        let garbage: Vec<u8> = (0..64).map(|_| next() as u8).collect();
        let _ = mem.write_slice(&garbage, GuestAddress(0x8000 + next() % 0x1000));
        match next() % 3 {
            0 => ring.add_chain(&[(addr, len, next() % 5 == 0)]),
            1 => ring.add_chain(&[(BUFFER, 10, false), (addr, len, false)]),
            _ => {
                ring.add_head((next() % 20) as u16);
                0
            }
        };
        queued += 1;
        if handler.queue_event(STATS_QUEUE).is_err() {
            // A head past the table breaks the queue: the worker would set
            // NEEDS_RESET; the driver resets it.
            (handler, ring) = stats_handler(&mem, &shared);
            queued = 0;
            continue;
        }
        if round % 7 == 0 {
            handler.ask_for_stats().unwrap();
        }
        let used = ring.used().len();
        let held = usize::from(handler.stats.holds());
        assert_eq!(
            used + held,
            queued,
            "round {round}: every buffer back or held"
        );
    }
    assert!(BalloonControl(shared).stats().stats_refused > 0);
}
