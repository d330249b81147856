//! Tests of the Async engine's own behaviour, on a real ring, a real file
//! and real guest memory: many requests in flight at once and all
//! published, more requests than the ring holds, a bad request among good
//! ones, sticky flush failures, a worker that parks or ends with requests
//! in flight. (The request semantics both engines share are run on both
//! in `block_tests.rs`.) Each test is skipped, saying so, on a host
//! without io_uring (ENOSYS: qemu-user, old kernels).

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::tests::{
    disk_file, file_contents, fixture_with, patterned_file, start_driver, transport,
    unless_no_io_uring, wait_used, write_header, Fixture, DATA, HDR, IOERR, OK, SECTORS, STATUS,
};
use super::uring::UringEngine;
use super::*;
use crate::virtio::testing::TestRing;
use crate::virtio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use crate::{BusDevice, IrqTrigger};
use virtio_queue::QueueT;
use vmm_sys_util::epoll::EventSet;

fn async_fixture() -> Option<Fixture> {
    fixture_with(false, IoEngine::Async)
}

fn engine(f: &Fixture) -> &UringEngine {
    match &f.handler.engine {
        Active::Async(engine) => engine,
        Active::Sync => panic!("not the Async engine"),
    }
}

/// Waits for the ring's completion eventfd and lets the handler take the
/// completions in, until `count` requests are used.
fn complete_until(f: &mut Fixture, count: usize) {
    let fd = engine(f).completion_fd().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.ring.used().len() < count {
        assert!(Instant::now() < deadline, "requests never completed");
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe { libc::poll(&mut poll, 1, 100) };
        f.handler.backend_event(0, EventSet::IN).unwrap();
    }
}

/// Puts request `i` on the ring: its header (`request_type`, `sector`) at
/// HDR + 16 i, one 512-byte buffer at DATA + 512 i (device-written for a
/// read) and its status byte at STATUS + i.
fn add_request(f: &mut Fixture, i: u64, request_type: u32, sector: u64) {
    write_header(&f.mem, HDR + 16 * i, request_type, sector);
    f.ring.add_chain(&[
        (HDR + 16 * i, 16, false),
        (DATA + 512 * i, 512, request_type == VIRTIO_BLK_T_IN),
        (STATUS + i, 1, true),
    ]);
}

fn status_at(f: &Fixture, at: u64) -> u8 {
    f.mem.read_obj(GuestAddress(at)).unwrap()
}

#[test]
fn requests_are_in_flight_together_and_all_published() {
    let Some(mut f) = async_fixture() else {
        return;
    };
    // Five requests of three descriptors each on the 16-entry ring: four
    // reads (sector i into buffer i), then a read past the end.
    for i in 0..5u64 {
        let sector = if i == 4 { SECTORS } else { i };
        add_request(&mut f, i, VIRTIO_BLK_T_IN, sector);
    }
    f.handler.queue_event(0).unwrap();
    // The bad one was answered at once; the four reads are on the ring.
    assert_eq!(engine(&f).in_flight(), 4);
    assert_eq!(f.ring.used(), vec![(12, 1)]);
    assert_eq!(status_at(&f, STATUS + 4), IOERR);
    complete_until(&mut f, 5);
    let mut used = f.ring.used();
    used.sort();
    assert_eq!(used, vec![(0, 513), (3, 513), (6, 513), (9, 513), (12, 1)]);
    for i in 0..4u64 {
        assert_eq!(status_at(&f, STATUS + i), OK);
        let mut data = [0u8; 512];
        f.mem
            .read_slice(&mut data, GuestAddress(DATA + 512 * i))
            .unwrap();
        assert_eq!(data, [i as u8; 512], "request {i} read its sector");
    }
    assert_eq!(engine(&f).in_flight(), 0);
    let io = f.handler.side.interrupt.io_stats().snapshot();
    assert_eq!((io.requests, io.errors, io.bytes_read), (5, 1, 2048));
}

#[test]
fn a_full_ring_stops_taking_requests_until_completions_free_it() {
    let file = patterned_file(8, 0);
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Async,
    };
    let Some(block) = async_block(&config) else {
        return;
    };
    // 200 requests (one indirect descriptor each) on a 256-entry queue:
    // more than the ring's 128.
    let mem = crate::virtio::testing::test_memory();
    let mut ring = TestRing::new(&mem, 0, 256);
    let requests = 200u64;
    let (headers, tables, data, status) = (0x4000u64, 0x8000u64, 0x2_0000u64, 0x8_0000u64);
    for sector in 0..8u64 {
        write_header(&mem, headers + 16 * sector, VIRTIO_BLK_T_IN, sector);
    }
    for i in 0..requests {
        ring.add_indirect_chain(
            tables + 48 * i,
            &[
                (headers + 16 * (i % 8), 16, false),
                (data + 512 * i, 512, true),
                (status + i, 1, true),
            ],
        );
    }
    let mut f = Fixture {
        handler: BlockHandler {
            engine: block.engine.activate().unwrap(),
            side: Side {
                disk: block.disk.clone(),
                mem: mem.clone(),
                queue: ring.queue(true),
                interrupt: Arc::new(Interrupt::new(IrqTrigger::new().unwrap())),
            },
        },
        file,
        block,
        mem,
        ring,
    };
    f.handler.queue_event(0).unwrap();
    assert_eq!(engine(&f).in_flight(), ASYNC_QUEUE_DEPTH as usize);
    // A kick while the ring is full takes nothing (and is no error).
    f.handler.queue_event(0).unwrap();
    assert_eq!(
        f.handler.side.queue.next_avail(),
        ASYNC_QUEUE_DEPTH as u16,
        "nothing taken past the ring's depth"
    );
    complete_until(&mut f, requests as usize);
    assert_eq!(engine(&f).in_flight(), 0);
    for i in 0..requests {
        assert_eq!(status_at(&f, status + i), OK, "request {i}");
        let mut buf = [0u8; 512];
        f.mem
            .read_slice(&mut buf, GuestAddress(data + 512 * i))
            .unwrap();
        assert_eq!(buf, [(i % 8) as u8; 512], "request {i}");
    }
    // EVENT_IDX: kicks are asked for again at the next new request.
    assert_eq!(f.ring.avail_event(), requests as u16);
}

fn async_block(config: &BlockConfig) -> Option<Block> {
    unless_no_io_uring(Block::new(config))
}

#[test]
fn writes_land_in_the_file_and_a_flush_follows() {
    let Some(mut f) = async_fixture() else {
        return;
    };
    for i in 0..3u64 {
        f.mem
            .write_slice(&[0x40 + i as u8; 512], GuestAddress(DATA + 512 * i))
            .unwrap();
        add_request(&mut f, i, VIRTIO_BLK_T_OUT, 5 - i);
    }
    f.serve();
    assert_eq!(f.ring.used().len(), 3);
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.run(&[(HDR, 16, false), (STATUS, 1, true)]), (1, OK));
    let contents = file_contents(&f.file);
    for i in 0..3usize {
        let sector = 5 - i;
        assert_eq!(
            contents[sector * 512..][..512],
            [0x40 + i as u8; 512],
            "sector {sector}"
        );
    }
    assert_eq!(contents[..512], [0u8; 512], "sector 0 untouched");
}

#[test]
fn a_failed_flush_stays_failed() {
    let Some(mut f) = async_fixture() else {
        return;
    };
    // A flush the kernel fails (EIO), finished as the engine finishes one.
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    let head = f.ring.add_chain(&[(HDR, 16, false), (STATUS, 1, true)]);
    let chain = Chain::from_buffers(
        head,
        vec![
            crate::virtio::Buffer {
                addr: GuestAddress(HDR),
                len: 16,
                writable: false,
            },
            crate::virtio::Buffer {
                addr: GuestAddress(STATUS),
                len: 1,
                writable: true,
            },
        ],
    );
    let io = f.handler.side.interrupt.io_stats();
    let disk = lock(&f.block.disk);
    let block_disk::Step::Io(request) = disk.start(&f.mem, &chain, io) else {
        panic!("a flush is I/O for the engine");
    };
    let eio = Err(std::io::Error::from_raw_os_error(libc::EIO));
    assert_eq!(disk.finish(&f.mem, &request, eio, io), 1);
    drop(disk);
    assert_eq!(status_at(&f, STATUS), IOERR);
    // From then on, through the engine: flushes and writes fail, reads go on.
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.run(&[(HDR, 16, false), (STATUS, 1, true)]), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 2, (512, false)), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 3, (512, true)), (513, OK));
    assert_eq!(file_contents(&f.file), file_contents(&disk_file()));
}

#[test]
fn a_worker_ending_with_requests_in_flight_waits_publishes_nothing_and_gives_the_ring_back() {
    let Some(mut f) = async_fixture() else {
        return;
    };
    for i in 0..4u64 {
        add_request(&mut f, i, VIRTIO_BLK_T_IN, i);
    }
    f.handler.queue_event(0).unwrap();
    assert_eq!(engine(&f).in_flight(), 4);
    // A second worker cannot have the ring while this one holds it.
    assert!(f.block.engine.activate().is_err());
    let Fixture {
        block,
        handler,
        ring,
        ..
    } = f;
    drop(handler);
    assert!(ring.used().is_empty(), "a stopped worker publishes nothing");
    assert!(block.engine.activate().is_ok(), "the ring went back home");
}

/// An Async block device behind a transport, activated, with a 64-entry
/// queue.
fn async_transport(file: &TempFile) -> Option<(MmioTransport, GuestMemoryMmap, TestRing)> {
    let block = async_block(&BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Async,
    })?;
    let (transport, mem, _irq, ring) = transport(block, true, 64);
    Some((transport, mem, ring))
}

#[test]
fn a_paused_worker_has_nothing_in_flight() {
    let file = patterned_file(512, 0);
    let Some((mut transport, mem, mut ring)) = async_transport(&file) else {
        return;
    };
    // 16 reads of 16 KiB each, one kick, and a pause right behind it.
    let requests = 16u64;
    for i in 0..requests {
        write_header(&mem, 0x4000 + 16 * i, VIRTIO_BLK_T_IN, 32 * i);
        ring.add_chain(&[
            (0x4000 + 16 * i, 16, false),
            (0x2_0000 + 0x4000 * i, 0x4000, true),
            (0x8000 + i, 1, true),
        ]);
    }
    transport.write(QUEUE_NOTIFY_OFFSET, &0u32.to_le_bytes());
    assert!(transport.pause());
    let saved = transport.save_state().unwrap();
    let position = saved.queues[0].position;
    assert_eq!(
        position.next_avail, position.next_used,
        "every request taken was completed and published before parking"
    );
    assert_eq!(ring.used().len(), usize::from(position.next_used));
    transport.resume();
    wait_used(&ring, requests as usize);
    for i in 0..requests {
        let status: u8 = mem.read_obj(GuestAddress(0x8000 + i)).unwrap();
        assert_eq!(status, OK, "request {i}");
        let first: u8 = mem.read_obj(GuestAddress(0x2_0000 + 0x4000 * i)).unwrap();
        assert_eq!(first, (32 * i) as u8, "request {i}");
    }
    transport.write(0x70, &0u32.to_le_bytes()); // reset ends the worker
}

#[test]
fn a_swap_waits_for_requests_in_flight_and_the_next_activation_has_the_ring() {
    let file = patterned_file(512, 0);
    let Some((mut transport, mem, mut ring)) = async_transport(&file) else {
        return;
    };
    for i in 0..8u64 {
        write_header(&mem, 0x4000 + 16 * i, VIRTIO_BLK_T_OUT, 32 * i);
        ring.add_chain(&[
            (0x4000 + 16 * i, 16, false),
            (0x2_0000 + 0x4000 * i, 0x4000, false),
            (0x8000 + i, 1, true),
        ]);
    }
    transport.write(QUEUE_NOTIFY_OFFSET, &0u32.to_le_bytes());
    let other = disk_file();
    transport.update_backend(other.as_path()).unwrap();
    // Each request ran on one file: those the swap found in flight
    // finished on the old one first (zeroing their sector there), the
    // rest ran on the new one, too small for them (IOERR).
    wait_used(&ring, 8);
    let old = file_contents(&file);
    for i in 1..8usize {
        let status: u8 = mem.read_obj(GuestAddress(0x8000 + i as u64)).unwrap();
        let sector = &old[32 * i * 512..][..512];
        match status {
            OK => assert_eq!(sector, [0u8; 512], "request {i}"),
            IOERR => assert_eq!(sector, [(32 * i) as u8; 512], "request {i}"),
            other => panic!("request {i}: status {other}"),
        }
    }
    // A reset ends the worker, which gives the ring back: set up again,
    // the device serves the new file.
    transport.write(0x70, &0u32.to_le_bytes());
    let mut ring = TestRing::new(&mem, 0, 64);
    start_driver(&mut transport, 64);
    write_header(&mem, 0x4000, VIRTIO_BLK_T_IN, 3);
    ring.add_chain(&[
        (0x4000, 16, false),
        (0x2_0000, 512, true),
        (0x8000, 1, true),
    ]);
    transport.write(QUEUE_NOTIFY_OFFSET, &0u32.to_le_bytes());
    wait_used(&ring, 1);
    let status: u8 = mem.read_obj(GuestAddress(0x8000)).unwrap();
    assert_eq!(status, OK);
    let first: u8 = mem.read_obj(GuestAddress(0x2_0000)).unwrap();
    assert_eq!(first, 3, "sector 3 of the new file");
    transport.write(0x70, &0u32.to_le_bytes());
}
