//! virtio-blk behind virtio-pci: its configuration read through the
//! device configuration structure and a read request served end to end,
//! interrupting on the queue's MSI-X vector.

use std::io::Write;

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::tempfile::TempFile;

use super::driver::*;
use crate::virtio::testing::TestRing;
use crate::virtio::{feature, Block, BlockConfig, IoEngine};

const SECTORS: u64 = 8;
const RING: u64 = 0x10000;
const HEADER: u64 = 0x20000;
const DATA: u64 = 0x21000;
const STATUS: u64 = 0x22000;

/// A disk whose sector `n` is filled with byte `n`, behind virtio-pci.
fn block() -> (Driver, TempFile) {
    let file = TempFile::new().unwrap();
    for sector in 0..SECTORS {
        file.as_file().write_all(&[sector as u8; 512]).unwrap();
    }
    let config = BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Sync,
    };
    let device = Block::new(&config).unwrap();
    (Driver::new(Box::new(device)), file)
}

#[test]
fn the_capacity_reads_through_the_device_configuration() {
    let (mut d, _file) = block();
    assert_eq!(d.cfg_read(0x02, 2), 0x1040 + 2, "modern id of virtio-blk");
    assert_eq!(d.cfg_read(0x0a, 2), 0x0180, "mass storage, other");
    let device = d.found.device;
    let capacity = d.bar_read(device, 4) | d.bar_read(device + 4, 4) << 32;
    assert_eq!(capacity, SECTORS);
}

#[test]
fn a_read_request_is_served_and_interrupts_on_its_vector() {
    let (mut d, _file) = block();
    assert!(d.negotiate(feature(VIRTIO_F_VERSION_1)));
    d.msix_control(MSIX_ENABLE);
    d.program_vector(1, message(1), false);
    let mut ring = TestRing::new(&d.mem, RING, 16);
    d.setup_queue(0, 16, RING, 1);
    d.driver_ok();
    // VIRTIO_BLK_T_IN of sector 3.
    let mut header = [0u8; 16];
    header[8..].copy_from_slice(&3u64.to_le_bytes());
    d.mem.write_slice(&header, GuestAddress(HEADER)).unwrap();
    ring.add_chain(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, true)]);
    d.kick(0);
    wait_for("the used buffer", || ring.used() == vec![(0, 513)]);
    let mut data = [0u8; 512];
    d.mem.read_slice(&mut data, GuestAddress(DATA)).unwrap();
    assert_eq!(data, [3; 512]);
    let status: u8 = d.mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(status, 0, "VIRTIO_BLK_S_OK");
    let mut sent = Vec::new();
    wait_for("the message", || {
        sent.extend(d.sink.take());
        !sent.is_empty()
    });
    assert_eq!(sent, vec![(1, message(1))]);
}
