//! virtio-blk against hostile requests: a chain of thousands of
//! descriptors naming one buffer, and data beyond what `seg_max` and
//! `size_max` allow, are refused before the disk is touched.

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::tests::{handler_for, write_header};
use super::*;
use crate::test_log::{assert_few, Capture};
use crate::virtio::testing::{test_memory, TestRing};

const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x3_0000;
const TABLE: u64 = 0x4_0000;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
/// A sparse disk large enough that every request below is in range.
const DISK_BYTES: u64 = 64 << 20;
/// What the device advertises: 254 segments of at most 64 KiB.
const SEGMENTS: u32 = 254;
const SEGMENT_BYTES: u32 = 0x1_0000;

struct Fixture {
    _file: TempFile,
    mem: GuestMemoryMmap,
    ring: TestRing,
    handler: BlockHandler,
}

fn fixture() -> Fixture {
    let file = TempFile::new().unwrap();
    file.as_file().set_len(DISK_BYTES).unwrap();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Sync,
    };
    let block = Block::new(&config).unwrap();
    let mem = test_memory();
    let ring = TestRing::new(&mem, 0, 256);
    let handler = handler_for(&block, &mem, &ring);
    write_header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    Fixture {
        _file: file,
        mem,
        ring,
        handler,
    }
}

impl Fixture {
    /// Serves what is queued; returns the last (used length, status byte)
    /// and how long serving took.
    fn serve(&mut self) -> ((u32, u8), Duration) {
        let started = Instant::now();
        self.handler.queue_event(0).unwrap();
        let took = started.elapsed();
        let (_, len) = *self.ring.used().last().unwrap();
        let status = self.mem.read_obj(GuestAddress(STATUS)).unwrap();
        ((len, status), took)
    }

    fn bytes_read(&self) -> u64 {
        self.handler.side.interrupt.io_stats().snapshot().bytes_read
    }
}

/// An IN request: header, `count` writable buffers of `len` bytes all at
/// the same address, status.
fn read_request(count: usize, len: u32) -> Vec<(u64, u32, bool)> {
    let mut chain = vec![(HDR, 16, false)];
    chain.extend(std::iter::repeat_n((DATA, len, true), count));
    chain.push((STATUS, 1, true));
    chain
}

#[test]
fn a_hostile_indirect_request_is_dropped_without_reading() {
    let mut f = fixture();
    // 4000 descriptors, 3998 of them naming the same 4 KiB: 16 MB of disk
    // reads for one request, gigabytes for a ring of them.
    let table = read_request(3998, 0x1000);
    f.ring.add_indirect_chain(TABLE, &table);
    let (result, took) = f.serve();
    assert_eq!(result, (0, 0xaa), "returned empty, no status written");
    assert_eq!(f.bytes_read(), 0, "nothing read from the disk");
    assert!(took < Duration::from_millis(50), "took {took:?}");
}

#[test]
fn data_beyond_seg_max_times_size_max_gets_ioerr() {
    let mut f = fixture();
    // The largest request a driver honouring the limits sends is served.
    f.ring
        .add_indirect_chain(TABLE, &read_request(SEGMENTS as usize, SEGMENT_BYTES));
    let (result, _) = f.serve();
    let limit = SEGMENTS * SEGMENT_BYTES;
    assert_eq!(result, (limit + 1, OK));
    assert_eq!(f.bytes_read(), u64::from(limit));
    // 200 buffers of 128 KiB (25 MiB, within the descriptor cap): IOERR,
    // before any disk read.
    f.ring.add_chain(&read_request(200, 2 * SEGMENT_BYTES));
    let (result, _) = f.serve();
    assert_eq!(result, (1, IOERR));
    // One sector more than the limit: 127 buffers of 128 KiB, one of 512.
    let mut chain = read_request(127, 2 * SEGMENT_BYTES);
    chain.insert(128, (DATA, 512, true));
    f.ring.add_chain(&chain);
    assert_eq!(f.serve().0, (1, IOERR));
    assert_eq!(f.bytes_read(), u64::from(limit), "nothing more read");
}

#[test]
fn requests_without_a_status_byte_leave_few_lines() {
    let mut f = fixture();
    let log = Capture::start();
    for _ in 0..10_000 {
        f.ring.add_chain(&[(HDR, 16, false)]);
        f.handler.queue_event(0).unwrap();
    }
    assert_few(&log.warnings_here(), "status-less requests");
    assert_eq!(f.ring.used().len(), 10_000, "every one returned");
}

#[test]
fn heads_past_the_descriptor_table_leave_no_lines() {
    let mut f = fixture();
    let log = Capture::start();
    for _ in 0..10_000 {
        f.ring.add_head(256);
        assert!(f.handler.queue_event(0).is_err(), "a broken ring");
    }
    let lines = log.warnings_here();
    assert!(
        lines.is_empty(),
        "{} lines: {:?}…",
        lines.len(),
        lines.first()
    );
}

#[test]
fn the_limits_are_advertised() {
    let file = TempFile::new().unwrap();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Sync,
    };
    let block = Block::new(&config).unwrap();
    let wanted = feature(VIRTIO_BLK_F_SEG_MAX) | feature(VIRTIO_BLK_F_SIZE_MAX);
    assert_eq!(block.features() & wanted, wanted);
    let mut word = [0u8; 4];
    block.read_config(8, &mut word);
    assert_eq!(u32::from_le_bytes(word), SEGMENT_BYTES, "size_max");
    block.read_config(12, &mut word);
    assert_eq!(u32::from_le_bytes(word), SEGMENTS, "seg_max");
    assert_eq!(MAX_REQUEST_BYTES, u64::from(SEGMENTS * SEGMENT_BYTES));
}
