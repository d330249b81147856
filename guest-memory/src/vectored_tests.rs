//! Vectored file I/O against guest memory: bytes land where the parts
//! say, across regions and in order, a file that ends early is an error,
//! and the iovecs go on where a short transfer stopped.

use std::io::{Read, Seek, SeekFrom, Write};

use vm_memory::{Bytes, GuestMemoryBackend};

use super::*;
use crate::dirty_bitmap;

/// Two regions that touch, so a buffer can straddle them.
fn two_regions() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x10000), 0x10000)])
        .unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + i / 256) as u8).collect()
}

fn temp_file() -> File {
    vmm_sys_util::tempfile::TempFile::new().unwrap().into_file()
}

#[test]
fn writes_go_to_the_offset_in_order_across_regions() {
    let mem = two_regions();
    let data = pattern(0x3000);
    // Three parts, the middle one straddling the region boundary.
    let parts = [
        (GuestAddress(0x2000), 0x800),
        (GuestAddress(0xf800), 0x2000),
        (GuestAddress(0x100), 0x800),
    ];
    let mut at = 0;
    for (addr, len) in parts {
        mem.write_slice(&data[at..at + len], addr).unwrap();
        at += len;
    }
    let mut file = temp_file();
    write_guest_to(&mem, parts, &file, 512).unwrap();
    let mut on_disk = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut on_disk).unwrap();
    assert_eq!(on_disk.len(), 512 + 0x3000);
    assert!(
        on_disk[..512].iter().all(|&b| b == 0),
        "nothing before the offset"
    );
    assert_eq!(&on_disk[512..], data.as_slice());
}

#[test]
fn reads_fill_the_parts_in_order_and_mark_them_dirty() {
    let mem = two_regions();
    let data = pattern(0x3000);
    let mut file = temp_file();
    file.write_all(&[0xaa; 1024]).unwrap();
    file.write_all(&data).unwrap();
    let parts = [
        (GuestAddress(0xf000), 0x2000),
        (GuestAddress(0x4000), 0x1000),
    ];
    read_guest_from(&mem, parts, &file, 1024).unwrap();
    let mut got = vec![0u8; 0x2000];
    mem.read_slice(&mut got, GuestAddress(0xf000)).unwrap();
    assert_eq!(got, data[..0x2000]);
    let mut got = vec![0u8; 0x1000];
    mem.read_slice(&mut got, GuestAddress(0x4000)).unwrap();
    assert_eq!(got, data[0x2000..]);
    let regions: Vec<_> = mem.iter().collect();
    assert!(dirty_bitmap(regions[0]).is_addr_set(0xf000));
    assert!(dirty_bitmap(regions[0]).is_addr_set(0x4000));
    assert!(dirty_bitmap(regions[1]).is_addr_set(0));
    assert!(
        !dirty_bitmap(regions[0]).is_addr_set(0x8000),
        "untouched page"
    );
}

#[test]
fn a_file_that_ends_early_is_an_error() {
    let mem = two_regions();
    let mut file = temp_file();
    file.write_all(&[1; 100]).unwrap();
    let err = read_guest_from(&mem, [(GuestAddress(0), 4096)], &file, 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn parts_outside_memory_are_refused_before_any_io() {
    let mem = two_regions();
    let file = temp_file();
    let parts = [(GuestAddress(0), 512), (GuestAddress(0x1f000), 0x2000)];
    assert!(write_guest_to(&mem, parts, &file, 0).is_err());
    assert_eq!(file.metadata().unwrap().len(), 0, "nothing written");
}

#[test]
fn more_parts_than_one_call_takes_all_move() {
    let mem = two_regions();
    // 1500 parts of 16 bytes: two calls' worth of iovecs.
    let parts: Vec<_> = (0..1500u64).map(|i| (GuestAddress(i * 16), 16)).collect();
    let data = pattern(1500 * 16);
    mem.write_slice(&data, GuestAddress(0)).unwrap();
    let mut file = temp_file();
    write_guest_to(&mem, parts.iter().copied(), &file, 0).unwrap();
    let mut on_disk = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut on_disk).unwrap();
    assert_eq!(on_disk, data);
}

#[test]
fn iovecs_go_on_where_a_short_transfer_stopped() {
    let mem = two_regions();
    // 0x100 bytes, an empty part (left out), then 0x200 straddling the
    // region boundary (two iovecs).
    let parts = [
        (GuestAddress(0x1000), 0x100),
        (GuestAddress(0x2000), 0),
        (GuestAddress(0xff00), 0x200),
    ];
    let mut iovecs = GuestIovecs::new(&mem, parts, true).unwrap();
    let lens = |iovecs: &GuestIovecs| -> Vec<usize> {
        iovecs.pending().iter().map(|iov| iov.iov_len).collect()
    };
    assert_eq!(lens(&iovecs), [0x100, 0x100, 0x100]);
    let start = iovecs.pending()[0].iov_base as usize;
    iovecs.advance(0x80);
    assert_eq!(lens(&iovecs), [0x80, 0x100, 0x100]);
    assert_eq!(iovecs.pending()[0].iov_base as usize, start + 0x80);
    iovecs.advance(0x180);
    assert_eq!(lens(&iovecs), [0x100], "the second region's part");
    assert!(!iovecs.is_done());
    iovecs.advance(0x100);
    assert!(iovecs.is_done() && iovecs.pending().is_empty());
    // More than one call takes: pending offers at most MAX_IOVECS.
    let many: Vec<_> = (0..1500u64).map(|i| (GuestAddress(i * 16), 16)).collect();
    let mut iovecs = GuestIovecs::new(&mem, many, false).unwrap();
    assert_eq!(iovecs.pending().len(), MAX_IOVECS);
    iovecs.advance(16 * MAX_IOVECS);
    assert_eq!(iovecs.pending().len(), 1500 - MAX_IOVECS);
}
