//! virtio-blk tests: request round trips through a temporary file, every
//! kind of bad request getting the right status without a panic, and live
//! swaps of the backing file.

use std::fs::File;
use std::io::{Read, Write};

use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress};

use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::virtio::testing::{test_memory, TestRing};
use crate::virtio::{IoStatsSnapshot, MmioTransport, INT_CONFIG_CHANGE, QUEUE_NOTIFY_OFFSET};
use crate::{BusDevice, IrqTrigger};

const SECTORS: u64 = 8;
const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;
const OK: u8 = VIRTIO_BLK_S_OK as u8;
const IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;

/// A disk file whose sector `n` is filled with byte `n`.
fn disk_file() -> TempFile {
    patterned_file(SECTORS, 0)
}

/// A file of `sectors` sectors, sector `n` filled with byte `base + n`.
fn patterned_file(sectors: u64, base: u8) -> TempFile {
    let file = TempFile::new().unwrap();
    for sector in 0..sectors {
        file.as_file()
            .write_all(&[base + sector as u8; 512])
            .unwrap();
    }
    file
}

fn file_contents(file: &TempFile) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(file.as_path())
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    data
}

struct Fixture {
    file: TempFile,
    block: Block,
    mem: GuestMemoryMmap,
    ring: TestRing,
    handler: BlockHandler,
}

fn fixture(readonly: bool) -> Fixture {
    let file = disk_file();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly,
        id: Some("serial-1".into()),
    };
    let block = Block::new(&config).unwrap();
    let mem = test_memory();
    let ring = TestRing::new(&mem, 0, 16);
    let handler = BlockHandler {
        disk: block.disk.clone(),
        mem: mem.clone(),
        queue: ring.queue(false),
        interrupt: Arc::new(Interrupt::new(IrqTrigger::new().unwrap())),
    };
    Fixture {
        file,
        block,
        mem,
        ring,
        handler,
    }
}

impl Fixture {
    fn header(&self, request_type: u32, sector: u64) {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&request_type.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&header, GuestAddress(HDR)).unwrap();
        self.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
    }

    /// Queues `buffers`, runs the device, returns (used length, status byte).
    fn run(&mut self, buffers: &[(u64, u32, bool)]) -> (u32, u8) {
        let head = self.ring.add_chain(buffers);
        self.handler.queue_event(0).unwrap();
        let (id, len) = *self.ring.used().last().unwrap();
        assert_eq!(id, u32::from(head));
        (len, self.mem.read_obj(GuestAddress(STATUS)).unwrap())
    }

    fn request(&mut self, request_type: u32, sector: u64, data: (u32, bool)) -> (u32, u8) {
        self.header(request_type, sector);
        self.run(&[(HDR, 16, false), (DATA, data.0, data.1), (STATUS, 1, true)])
    }

    fn data(&self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
        buf
    }
}

#[test]
fn read_write_flush_round_trip() {
    let mut f = fixture(false);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 2, (1024, true)), (1025, OK));
    let mut expected = vec![2u8; 512];
    expected.extend([3u8; 512]);
    assert_eq!(f.data(1024), expected);

    f.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 7, (512, false)), (1, OK));
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.run(&[(HDR, 16, false), (STATUS, 1, true)]), (1, OK));
    let contents = file_contents(&f.file);
    assert_eq!(&contents[7 * 512..], &[0x5a; 512]);
    assert_eq!(
        &contents[6 * 512..7 * 512],
        &[6; 512],
        "neighbour untouched"
    );
    let io = f.handler.interrupt.io_stats().snapshot();
    let expected = IoStatsSnapshot {
        requests: 3,
        bytes_read: 1024,
        bytes_written: 512,
        errors: 0,
    };
    assert_eq!(io, expected);
}

#[test]
fn header_and_data_may_span_descriptors() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_IN, 1);
    let chain = [
        (HDR, 10, false),
        (HDR + 10, 6, false),
        (DATA, 256, true),
        (DATA + 256, 257, true),
    ];
    f.mem.write_obj(0xaau8, GuestAddress(DATA + 512)).unwrap();
    f.ring.add_chain(&chain);
    f.handler.queue_event(0).unwrap();
    assert_eq!(f.ring.used(), vec![(0, 513)]);
    assert_eq!(f.data(513)[..512], [1u8; 512]);
    assert_eq!(f.data(513)[512], OK, "status is the chain's last byte");
}

#[test]
fn get_id_returns_the_serial() {
    let mut f = fixture(false);
    assert_eq!(f.request(VIRTIO_BLK_T_GET_ID, 0, (20, true)), (21, OK));
    let mut expected = b"serial-1".to_vec();
    expected.resize(20, 0);
    assert_eq!(f.data(20), expected);
}

#[test]
fn readonly_disk_refuses_writes() {
    let mut f = fixture(true);
    assert_ne!(f.block.features() & feature(VIRTIO_BLK_F_RO), 0);
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, (512, false)), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, (512, true)), (513, OK));
    assert_eq!(file_contents(&f.file), file_contents(&disk_file()));
}

#[test]
fn out_of_range_and_unaligned_requests_fail() {
    let mut f = fixture(false);
    assert_eq!(
        f.request(VIRTIO_BLK_T_IN, SECTORS - 1, (1024, true)),
        (1, IOERR)
    );
    assert_eq!(
        f.request(VIRTIO_BLK_T_IN, u64::MAX, (512, true)),
        (1, IOERR)
    );
    assert_eq!(
        f.request(VIRTIO_BLK_T_OUT, SECTORS, (512, false)),
        (1, IOERR)
    );
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, (100, true)), (1, IOERR));
    assert_eq!(
        f.request(99, 0, (512, true)),
        (1, VIRTIO_BLK_S_UNSUPP as u8)
    );
    assert_eq!(file_contents(&f.file), file_contents(&disk_file()));
    let io = f.handler.interrupt.io_stats().snapshot();
    assert_eq!((io.requests, io.errors, io.bytes_read), (5, 5, 0));
}

#[test]
fn buffers_outside_guest_memory_fail() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_IN, 0);
    let outside = 0x10_0000 - 256;
    let chain = [(HDR, 16, false), (outside, 512, true), (STATUS, 1, true)];
    assert_eq!(f.run(&chain), (1, IOERR));
    let chain = [
        (HDR, 16, false),
        (u64::MAX - 100, 512, true),
        (STATUS, 1, true),
    ];
    assert_eq!(f.run(&chain), (1, IOERR));
    // No writable status byte in memory: returned with length 0.
    assert_eq!(f.run(&[(HDR, 16, false), (0x20_0000, 1, true)]).0, 0);
}

#[test]
fn wrong_directions_fail() {
    let mut f = fixture(false);
    f.mem.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, (512, false)), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, (512, true)), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_GET_ID, 0, (20, false)), (1, IOERR));
    assert_eq!(f.data(512), vec![0x77; 512], "guest buffer untouched");
    // Readable after writable breaks the layout rule.
    f.header(VIRTIO_BLK_T_IN, 0);
    let chain = [(DATA, 512, true), (HDR, 16, false), (STATUS, 1, true)];
    assert_eq!(f.run(&chain), (1, IOERR));
    // A device-readable status byte cannot be written.
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(f.run(&[(HDR, 16, false), (STATUS, 1, false)]), (0, 0xaa));
    assert_eq!(file_contents(&f.file), file_contents(&disk_file()));
}

#[test]
fn truncated_chains_fail() {
    let mut f = fixture(false);
    f.header(VIRTIO_BLK_T_IN, 0);
    assert_eq!(f.run(&[(HDR, 16, false)]), (0, 0xaa), "header only");
    assert_eq!(f.run(&[(HDR, 8, false), (STATUS, 1, true)]), (1, IOERR));
    assert_eq!(f.run(&[(STATUS, 1, true)]), (1, IOERR), "status only");
}

#[test]
fn config_space_reports_capacity() {
    // A file of its own: the fixture's device would hold it locked.
    let file = disk_file();
    let block = Block::new(&BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
    })
    .unwrap();
    let mut capacity = [0u8; 8];
    block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
    assert_eq!(block.features() & feature(VIRTIO_BLK_F_RO), 0);
    let id = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: Some("x".repeat(21)),
    };
    assert!(matches!(Block::new(&id), Err(BlockError::IdTooLong(_))));
    let missing = BlockConfig {
        path: "/nonexistent/disk.img".into(),
        readonly: true,
        id: None,
    };
    assert!(matches!(Block::new(&missing), Err(BlockError::Open { .. })));
    let dir = BlockConfig {
        path: std::env::temp_dir(),
        readonly: true,
        id: None,
    };
    assert!(matches!(Block::new(&dir), Err(BlockError::Open { .. })));
}

/// A transport over `block`, driven to DRIVER_OK with one queue of
/// `queue_size` entries at guest address 0 if `activate`.
fn transport(
    block: Block,
    activate: bool,
    queue_size: u16,
) -> (MmioTransport, GuestMemoryMmap, IrqTrigger, TestRing) {
    let mem = test_memory();
    let irq = IrqTrigger::new().unwrap();
    let mut transport = MmioTransport::new(mem.clone(), irq.clone(), Box::new(block)).unwrap();
    let ring = TestRing::new(&mem, 0, queue_size);
    if activate {
        for (offset, value) in [
            (0x70, 1),
            (0x70, 3),
            (0x24, 1),
            (0x20, 1), // VERSION_1
            (0x70, 11),
            (0x38, u32::from(queue_size)),
            (0x80, 0),
            (0x90, 0x1000),
            (0xa0, 0x2000),
            (0x44, 1),
            (0x70, 15),
        ] {
            transport.write(offset, &u32::to_le_bytes(value));
        }
    }
    (transport, mem, irq, ring)
}

fn read_u32(transport: &mut MmioTransport, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    transport.read(offset, &mut data);
    u32::from_le_bytes(data)
}

/// Waits for `count` used buffers.
fn wait_used(ring: &TestRing, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ring.used().len() < count {
        assert!(Instant::now() < deadline, "the worker did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The whole path: transport registers, DRIVER_OK, a kick, the worker
/// thread, the interrupt.
#[test]
fn serves_requests_through_the_transport() {
    let file = disk_file();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
    };
    let block = Block::new(&config).unwrap();
    let (mut transport, mem, irq, mut ring) = transport(block, true, 16);

    let mut header = [0u8; 16];
    header[8] = 5; // sector 5
    mem.write_slice(&header, GuestAddress(HDR)).unwrap();
    ring.add_chain(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    transport.write(QUEUE_NOTIFY_OFFSET, &0u32.to_le_bytes());

    let deadline = Instant::now() + Duration::from_secs(5);
    while irq.event_fd().read().is_err() {
        assert!(Instant::now() < deadline, "no interrupt from the worker");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(ring.used(), vec![(0, 513)]);
    let mut data = [0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(data, [5u8; 512]);
    assert!(transport.stats().interrupts_sent >= 1);
    transport.write(0x70, &0u32.to_le_bytes()); // reset joins the worker
    assert_eq!(transport.stats().interrupts_sent, 1);
}

#[test]
fn swap_serves_the_new_file() {
    let mut f = fixture(false);
    let new = patterned_file(2 * SECTORS, 0x40);
    f.block.update_backend(new.as_path()).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 2, (512, true)), (513, OK));
    assert_eq!(f.data(512), vec![0x42; 512]);
    // Sector 9 exists only in the new file.
    f.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 9, (512, false)), (1, OK));
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 1, (512, false)), (1, OK));
    let contents = file_contents(&new);
    assert_eq!(&contents[9 * 512..10 * 512], &[0x5a; 512]);
    assert_eq!(&contents[512..1024], &[0x5a; 512]);
    assert_eq!(
        file_contents(&f.file),
        file_contents(&disk_file()),
        "old file untouched"
    );
    let mut capacity = [0u8; 8];
    f.block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 2 * SECTORS);
    assert_eq!(f.block.capacity(), 2 * SECTORS);
    // The serial number is the disk's, not the file's.
    assert_eq!(f.request(VIRTIO_BLK_T_GET_ID, 0, (20, true)), (21, OK));
    assert_eq!(&f.data(8), b"serial-1");
}

#[test]
fn swap_rounds_down_to_whole_sectors() {
    let mut f = fixture(false);
    let new = patterned_file(3, 0x40);
    new.as_file().write_all(&[0xee; 100]).unwrap();
    f.block.update_backend(new.as_path()).unwrap();
    assert_eq!(f.block.capacity(), 3);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 3, (512, true)), (1, IOERR));
}

#[test]
fn failed_swap_keeps_the_old_file() {
    let mut f = fixture(false);
    let missing = f
        .block
        .update_backend(Path::new("/nonexistent/disk.img"))
        .unwrap_err();
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    assert!(
        missing.to_string().contains("/nonexistent/disk.img"),
        "{missing}"
    );
    let dir = std::env::temp_dir();
    let not_a_file = f.block.update_backend(&dir).unwrap_err();
    assert!(
        not_a_file.to_string().contains("not a regular file"),
        "{not_a_file}"
    );
    assert!(!not_a_file.to_string().contains('\n'));
    assert_eq!(f.block.capacity(), SECTORS);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 3, (512, true)), (513, OK));
    assert_eq!(f.data(512), vec![3; 512]);
    f.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, (512, false)), (1, OK));
    assert_eq!(&file_contents(&f.file)[..512], &[0x5a; 512]);
}

#[test]
fn readonly_disk_stays_readonly_after_swap() {
    let mut f = fixture(true);
    let new = patterned_file(SECTORS, 0x40);
    f.block.update_backend(new.as_path()).unwrap();
    assert_ne!(f.block.features() & feature(VIRTIO_BLK_F_RO), 0);
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 0, (512, false)), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 0, (512, true)), (513, OK));
    assert_eq!(f.data(512), vec![0x40; 512]);
    assert_eq!(
        file_contents(&new),
        file_contents(&patterned_file(SECTORS, 0x40))
    );
}

#[test]
fn swap_on_an_active_device_signals_a_config_change() {
    let file = disk_file();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
    };
    let (mut transport, mem, irq, mut ring) = transport(Block::new(&config).unwrap(), true, 16);
    assert_eq!(read_u32(&mut transport, 0x60), 0);
    let generation = read_u32(&mut transport, 0xfc);
    let new = patterned_file(2 * SECTORS, 0x40);
    transport.update_backend(new.as_path()).unwrap();
    assert_eq!(read_u32(&mut transport, 0x60), INT_CONFIG_CHANGE);
    assert_ne!(read_u32(&mut transport, 0xfc), generation);
    assert_eq!(irq.event_fd().read().unwrap(), 1);
    assert_eq!(read_u32(&mut transport, 0x100), 2 * SECTORS as u32);

    // The worker serves the new file.
    let mut header = [0u8; 16];
    header[8] = 12;
    mem.write_slice(&header, GuestAddress(HDR)).unwrap();
    ring.add_chain(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    transport.write(QUEUE_NOTIFY_OFFSET, &0u32.to_le_bytes());
    wait_used(&ring, 1);
    let mut data = [0u8; 512];
    mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(data, [0x40 + 12; 512]);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), OK);
}

#[test]
fn swap_on_an_inactive_device_is_silent() {
    let file = disk_file();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
    };
    let (mut transport, _mem, irq, _ring) = transport(Block::new(&config).unwrap(), false, 16);
    let new = patterned_file(2 * SECTORS, 0x40);
    transport.update_backend(new.as_path()).unwrap();
    assert_eq!(read_u32(&mut transport, 0x60), 0);
    assert_eq!(read_u32(&mut transport, 0xfc), 0);
    assert!(irq.event_fd().read().is_err(), "no interrupt");
    assert_eq!(read_u32(&mut transport, 0x100), 2 * SECTORS as u32);
}

/// Requests racing a swap each see one whole file, old or new.
#[test]
fn requests_racing_a_swap_see_one_file() {
    let file = disk_file();
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
    };
    let (mut transport, mem, _irq, mut ring) = transport(Block::new(&config).unwrap(), true, 64);
    let new = patterned_file(SECTORS, 0x40);
    let header = [0u8; 16]; // read from sector 0
    mem.write_slice(&header, GuestAddress(HDR)).unwrap();
    const REQUESTS: u64 = 20;
    for i in 0..REQUESTS {
        let (data, status) = (DATA + i * 0x800, STATUS + i);
        ring.add_chain(&[(HDR, 16, false), (data, 0x800, true), (status, 1, true)]);
    }
    transport.write(QUEUE_NOTIFY_OFFSET, &0u32.to_le_bytes());
    transport.update_backend(new.as_path()).unwrap();
    wait_used(&ring, REQUESTS as usize);
    for i in 0..REQUESTS {
        let mut data = [0u8; 0x800];
        mem.read_slice(&mut data, GuestAddress(DATA + i * 0x800))
            .unwrap();
        let base = data[0];
        assert!(base == 0 || base == 0x40, "request {i} read {base:#x}");
        for (sector, bytes) in data.chunks(512).enumerate() {
            assert_eq!(bytes, &[base + sector as u8; 512][..], "request {i}");
        }
    }
}

#[test]
fn devices_without_a_backing_file_refuse_a_swap() {
    let mut rng = crate::virtio::Rng::new().unwrap();
    let e = rng.update_backend(Path::new("/tmp")).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::Unsupported);
}

#[path = "block_disk_tests.rs"]
mod disk_tests;
