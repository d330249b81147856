//! virtio-net tests without a TAP: a datagram socket pair stands in for
//! it (one frame per datagram, non-blocking), the host end plays the
//! network.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::testing::{test_memory, TestRing};
use crate::IrqTrigger;

struct Fixture {
    mem: GuestMemoryMmap,
    rx: TestRing,
    tx: TestRing,
    host: UnixDatagram,
    irq: IrqTrigger,
    handler: NetHandler,
}

fn fixture(mergeable: bool) -> Fixture {
    fixture_sized(mergeable, 16)
}

/// A fixture whose receive queue has `rx_size` entries.
fn fixture_sized(mergeable: bool, rx_size: u16) -> Fixture {
    let (guest_end, host) = UnixDatagram::pair().unwrap();
    guest_end.set_nonblocking(true).unwrap();
    host.set_nonblocking(true).unwrap();
    let tap = Tap::from_file(File::from(OwnedFd::from(guest_end)), "fake0");
    let mem = test_memory();
    let (rx, tx) = (
        TestRing::new(&mem, 0, rx_size),
        TestRing::new(&mem, 0x4000, 16),
    );
    let irq = IrqTrigger::new().unwrap();
    let interrupt = Arc::new(Interrupt::new(irq.clone()));
    let queues = vec![rx.queue(true), tx.queue(true)];
    let tx_batch = TxBatch::new(Arc::new(Mutex::new(nonblocking_timer().unwrap())));
    let handler = NetHandler {
        mergeable,
        ..NetHandler::new(Arc::new(tap), mem.clone(), queues, interrupt, tx_batch)
    };
    Fixture {
        mem,
        rx,
        tx,
        host,
        irq,
        handler,
    }
}

/// A frame as the TAP delivers it: a header whose `num_buffers` holds
/// garbage, then `len` payload bytes counting up.
fn tap_frame(len: usize) -> Vec<u8> {
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
    frame[NUM_BUFFERS_OFFSET] = 0xee;
    frame.extend((0..len).map(|i| i as u8));
    frame
}

impl Fixture {
    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }
}

#[test]
fn transmit_sends_header_and_frame_to_the_tap() {
    let mut f = fixture(false);
    let frame = tap_frame(60);
    f.mem
        .write_slice(&frame[..VNET_HDR_LEN], GuestAddress(0x8000))
        .unwrap();
    f.mem
        .write_slice(&frame[VNET_HDR_LEN..], GuestAddress(0x9000))
        .unwrap();
    f.tx.add_chain(&[(0x8000, VNET_HDR_LEN as u32, false), (0x9000, 60, false)]);
    f.tx.add_chain(&[(0x8000, 4, false)]); // shorter than a header: dropped
    f.handler.queue_event(TX_QUEUE).unwrap();
    let mut got = vec![0u8; 200];
    let n = f.host.recv(&mut got).unwrap();
    assert_eq!(&got[..n], frame.as_slice());
    assert!(f.host.recv(&mut got).is_err(), "runt not sent");
    assert!(f.tx.used().is_empty(), "completions held for a batch");
    f.handler.flush().unwrap();
    assert_eq!(f.tx.used(), vec![(0, 0), (2, 0)]);
    assert_eq!(f.irq.event_fd().read().unwrap(), 1);
    let io = f.handler.interrupt.io_stats().snapshot();
    let counts = (io.requests, io.bytes_written, io.bytes_read, io.errors);
    assert_eq!(counts, (2, 60, 0, 1), "one frame of 60 bytes, one runt");
}

#[test]
fn mergeable_receive_spreads_a_frame_over_buffers() {
    let mut f = fixture(true);
    for i in 0..4 {
        f.rx.add_chain(&[(0x10000 + 0x1000 * i, 1000, true)]);
    }
    f.host.send(&tap_frame(2500)).unwrap();
    f.handler.backend_event(0, EventSet::IN).unwrap();
    let total = (VNET_HDR_LEN + 2500) as u32;
    assert_eq!(f.rx.used(), vec![(0, 1000), (1, 1000), (2, total - 2000)]);
    let header = f.read(0x10000, VNET_HDR_LEN);
    assert_eq!(
        u16::from_le_bytes([header[10], header[11]]),
        3,
        "num_buffers"
    );
    assert_eq!(
        header[0], VIRTIO_NET_HDR_F_DATA_VALID as u8,
        "header passed through"
    );
    let mut payload = f.read(0x10000 + VNET_HDR_LEN as u64, 1000 - VNET_HDR_LEN);
    payload.extend(f.read(0x11000, 1000));
    payload.extend(f.read(0x12000, total as usize - 2000));
    assert_eq!(payload, tap_frame(2500)[VNET_HDR_LEN..]);
}

/// Two 1000-byte receive buffers, then a 100-byte frame (it takes the
/// first) and a 2500-byte one (it holds the second, waiting for more).
fn fixture_with_a_waiting_frame() -> Fixture {
    let mut f = fixture(true);
    f.rx.add_chain(&[(0x10000, 1000, true)]);
    f.rx.add_chain(&[(0x11000, 1000, true)]);
    f.host.send(&tap_frame(100)).unwrap();
    f.host.send(&tap_frame(2500)).unwrap();
    f.handler.backend_event(0, EventSet::IN).unwrap();
    f
}

#[test]
fn receive_waits_for_buffers_and_rearms_kicks() {
    let mut f = fixture_with_a_waiting_frame();
    let first = (VNET_HDR_LEN + 100) as u32;
    assert_eq!(f.rx.used(), vec![(0, first)], "the big frame waits");
    assert_eq!(f.rx.avail_event(), 2, "kick wanted for the next new buffer");
    assert_eq!(f.irq.event_fd().read().unwrap(), 1);
    f.rx.add_chain(&[(0x12000, 1000, true)]);
    f.handler.queue_event(RX_QUEUE).unwrap();
    assert_eq!(
        f.rx.avail_event(),
        3,
        "still short: re-armed past the new buffer"
    );
    assert_eq!(f.rx.used().len(), 1);
    f.rx.add_chain(&[(0x13000, 1000, true)]);
    f.rx.set_used_event(1); // the driver saw used entry 0, wants the next
    f.handler.queue_event(RX_QUEUE).unwrap();
    let total = (VNET_HDR_LEN + 2500) as u32;
    let expected = vec![(0, first), (1, 1000), (2, 1000), (3, total - 2000)];
    assert_eq!(f.rx.used(), expected);
    assert_eq!(f.irq.event_fd().read().unwrap(), 1);
}

#[test]
fn without_mergeable_buffers_an_oversized_frame_is_dropped() {
    let mut f = fixture(false);
    f.rx.add_chain(&[(0x10000, 100, true)]);
    f.host.send(&tap_frame(500)).unwrap();
    f.host.send(&tap_frame(50)).unwrap();
    f.handler.backend_event(0, EventSet::IN).unwrap();
    let total = (VNET_HDR_LEN + 50) as u32;
    assert_eq!(
        f.rx.used(),
        vec![(0, total)],
        "the buffer went to the small frame"
    );
    let header = f.read(0x10000, VNET_HDR_LEN);
    assert_eq!(
        u16::from_le_bytes([header[10], header[11]]),
        1,
        "num_buffers"
    );
    assert_eq!(
        f.read(0x10000 + VNET_HDR_LEN as u64, 50),
        tap_frame(50)[VNET_HDR_LEN..]
    );
    let io = f.handler.interrupt.io_stats().snapshot();
    let counts = (io.requests, io.bytes_read, io.bytes_written, io.errors);
    assert_eq!(counts, (2, 50, 0, 1), "the big frame counts as an error");
}

#[test]
fn receive_buffer_outside_memory_breaks_the_device() {
    let mut f = fixture(true);
    f.rx.add_chain(&[(0x10_0000 - 10, 1000, true)]);
    f.host.send(&tap_frame(100)).unwrap();
    assert!(f.handler.backend_event(0, EventSet::IN).is_err());
    assert!(f.rx.used().is_empty());
}

#[test]
fn frame_splitting() {
    assert_eq!(split_frame(10, &[4, 4, 4]), Some(vec![4, 4, 2]));
    assert_eq!(split_frame(8, &[4, 4, 4]), Some(vec![4, 4]));
    assert_eq!(split_frame(13, &[4, 4, 4]), None);
    assert_eq!(split_frame(3, &[100]), Some(vec![3]));
}

#[test]
fn offloads_follow_the_guest_receive_features() {
    let csum = feature(VIRTIO_NET_F_GUEST_CSUM);
    let tso4 = feature(VIRTIO_NET_F_GUEST_TSO4);
    assert_eq!(tap_offload(0), 0);
    assert_eq!(tap_offload(tso4), 0, "TSO needs checksum offload");
    assert_eq!(
        tap_offload(csum | tso4),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4
    );
    let host_only = feature(VIRTIO_NET_F_HOST_TSO4) | feature(VIRTIO_NET_F_CSUM);
    assert_eq!(tap_offload(host_only), 0);
}

#[test]
fn config_space_holds_mac_and_link_status() {
    let (end, _peer) = UnixDatagram::pair().unwrap();
    let tap = Tap::from_file(File::from(OwnedFd::from(end)), "fake0");
    let net = Net::with_tap(tap, [2, 0, 0, 0, 0, 7]).unwrap();
    let mut config = [0u8; 8];
    net.read_config(0, &mut config);
    assert_eq!(config, [2, 0, 0, 0, 0, 7, 1, 0]);
    assert_ne!(net.features() & feature(VIRTIO_NET_F_MAC), 0);
    assert_ne!(net.features() & feature(VIRTIO_NET_F_MRG_RXBUF), 0);
}

#[test]
fn macs_parse_and_generate() {
    assert_eq!(
        parse_mac("52:54:00:ab:CD:ef"),
        Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
    );
    for bad in [
        "52:54:00:ab:cd",
        "52:54:00:ab:cd:ef:01",
        "5:54:00:ab:cd:ef",
        "zz:54:00:ab:cd:ef",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
    let mac = random_mac().unwrap();
    assert_eq!(mac[0] & 0x03, 0x02, "unicast, locally administered");
}

/// Descriptors the device holds for receive chains it has popped but not
/// yet filled: what a driver can make it keep.
fn held_segments(handler: &NetHandler) -> usize {
    let held = handler.rx_held.iter().map(|b| b.writable.count()).sum();
    assert_eq!(handler.rx_held_segments, held, "accounting");
    held
}

/// The stated bound on [`held_segments`].
const HELD_SEGMENTS_BOUND: usize = MAX_RX_HELD_SEGMENTS;

#[test]
fn receive_heads_naming_one_huge_indirect_table_are_refused() {
    // The attack: every receive head names the same indirect table of
    // 4096 descriptors, one writable byte and then empty buffers, so the
    // device holds all of them (each chain has room for one byte) while a
    // frame waits.
    let mut f = fixture_sized(true, 256);
    let mut table = vec![(0x40000, 0, true); 4096];
    table[0].1 = 1;
    f.rx.write_indirect_table(0x20000, &table);
    for _ in 0..256 {
        f.rx.add_indirect_head(0x20000, table.len());
    }
    f.host.send(&tap_frame(1000)).unwrap();
    let result = f.handler.backend_event(0, EventSet::IN);
    let held = held_segments(&f.handler);
    assert!(held <= HELD_SEGMENTS_BOUND, "{held} segments held");
    assert!(result.is_err(), "a chain over the cap is a broken driver");
}

#[test]
fn fragmented_receive_buffers_hold_a_bounded_number_of_segments() {
    // Within the descriptor cap: 256 heads, each an indirect table of 256
    // one-byte buffers (64 KiB in all), and a frame larger than that.
    let mut f = fixture_sized(true, 256);
    f.rx.write_indirect_table(0x20000, &[(0x40000, 1, true); 256]);
    for _ in 0..256 {
        f.rx.add_indirect_head(0x20000, 256);
    }
    f.host.send(&tap_frame(0x1_0000 + 50)).unwrap();
    f.handler.backend_event(0, EventSet::IN).unwrap();
    let held = held_segments(&f.handler);
    assert!(held <= HELD_SEGMENTS_BOUND, "{held} segments held");
    assert!(f.rx.used().is_empty(), "the frame does not fit: dropped");
    assert_eq!(f.handler.interrupt.io_stats().snapshot().errors, 1);
    // A frame that fits goes into the first held chain.
    f.host.send(&tap_frame(100)).unwrap();
    f.handler.backend_event(0, EventSet::IN).unwrap();
    assert_eq!(f.rx.used(), vec![(0, (VNET_HDR_LEN + 100) as u32)]);
}

#[test]
fn held_receive_buffers_are_given_back_in_the_saved_positions() {
    let f = fixture_with_a_waiting_frame();
    // The first frame took one buffer; the second holds the other, waiting
    // for more.
    assert_eq!(f.rx.used().len(), 1);
    assert_eq!(f.handler.rx_held.len(), 1);
    let positions = f.handler.queue_positions();
    let rx = QueuePosition {
        next_avail: 1,
        next_used: 1,
    };
    assert_eq!(positions, vec![rx, QueuePosition::default()]);
}

#[path = "net_tx_tests.rs"]
mod tx_tests;
