//! Configuration-space semantics as a guest driver sees them: identity
//! registers read-only, BAR sizing for each kind, the command register,
//! the capability list, and odd accesses.

use super::*;

fn virtio_blk_header() -> Header {
    Header {
        vendor_id: 0x1af4,
        device_id: 0x1042,
        revision: 1,
        class_code: 0x01_8000,
        subsystem_vendor_id: 0x1af4,
        subsystem_id: 0x40,
        interrupt_pin: 1,
    }
}

fn read32(space: &ConfigSpace, offset: u16) -> u32 {
    let mut data = [0; 4];
    space.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn write32(space: &mut ConfigSpace, offset: u16, value: u32) -> ConfigWrite {
    space.write(offset, &value.to_le_bytes())
}

/// What a driver does to size a BAR: write all-ones, read back.
fn sized(space: &mut ConfigSpace, offset: u16) -> u32 {
    write32(space, offset, u32::MAX);
    read32(space, offset)
}

#[test]
fn identity_registers_read_back_and_ignore_writes() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    assert_eq!(read32(&space, 0x00), 0x1042_1af4);
    assert_eq!(
        read32(&space, 0x08),
        0x0180_0001,
        "class 01 80 00, revision 1"
    );
    assert_eq!(read32(&space, 0x2c), 0x0040_1af4);
    for offset in [0x00, 0x08, 0x2c, 0x34] {
        let before = read32(&space, offset);
        assert_eq!(
            write32(&mut space, offset, 0xdead_beef),
            ConfigWrite::Nothing
        );
        assert_eq!(read32(&space, offset), before, "offset {offset:#x}");
    }
    // Interrupt pin read-only, interrupt line writable.
    write32(&mut space, 0x3c, 0xffff_ff0b);
    assert_eq!(read32(&space, 0x3c), 0x0000_010b);
}

#[test]
fn command_register_keeps_only_its_writable_bits_and_reports_changes() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    let change = space.write(0x04, &0xffffu16.to_le_bytes());
    assert_eq!(
        change,
        ConfigWrite::Command {
            old: 0,
            new: 0x0547
        }
    );
    assert_eq!(space.command(), 0x0547);
    // Status (the upper half) is read-only: no capabilities yet.
    assert_eq!(read32(&space, 0x04), 0x0000_0547);
    assert_eq!(
        space.write(0x04, &0x0547u16.to_le_bytes()),
        ConfigWrite::Nothing
    );
    assert_eq!(
        space.write(0x04, &[0x00]),
        ConfigWrite::Command {
            old: 0x0547,
            new: 0x0500
        }
    );
}

#[test]
fn a_32_bit_memory_bar_sizes_and_moves() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    space.add_bar(
        0,
        Bar {
            kind: BarKind::Memory32,
            size: 0x4000,
        },
    );
    assert_eq!(sized(&mut space, 0x10), 0xffff_c000);
    assert_eq!(
        write32(&mut space, 0x10, 0xfebf_0000),
        ConfigWrite::Bar {
            index: 0,
            old: 0xffff_c000,
            new: 0xfebf_0000
        }
    );
    // Low bits below the size do not stick.
    write32(&mut space, 0x10, 0xfebf_0123);
    assert_eq!(space.bar_address(0), Some(0xfebf_0000));
    assert!(
        !space.bar_enabled(0),
        "memory decoding is off until the command says"
    );
    space.write(0x04, &[COMMAND_MEMORY as u8]);
    assert!(space.bar_enabled(0));
}

#[test]
fn a_64_bit_prefetchable_bar_spans_two_slots() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    space.add_bar(
        2,
        Bar {
            kind: BarKind::Memory64 { prefetchable: true },
            size: 0x1_0000_0000,
        },
    );
    // 4 GiB: the low half has no writable address bits, only its flags.
    assert_eq!(sized(&mut space, 0x18), 0x0000_000c);
    assert_eq!(sized(&mut space, 0x1c), 0xffff_ffff);
    let change = write32(&mut space, 0x1c, 0x0000_0080);
    assert_eq!(
        change,
        ConfigWrite::Bar {
            index: 2,
            old: 0xffff_ffff_0000_0000,
            new: 0x80_0000_0000
        }
    );
    assert_eq!(space.bar_address(2), Some(0x80_0000_0000));
    assert_eq!(space.bar(3), None, "the high slot is no BAR of its own");

    let mut small = ConfigSpace::new(virtio_blk_header());
    small.add_bar(
        0,
        Bar {
            kind: BarKind::Memory64 {
                prefetchable: false,
            },
            size: 0x4000,
        },
    );
    assert_eq!(sized(&mut small, 0x10), 0xffff_c004);
    assert_eq!(sized(&mut small, 0x14), 0xffff_ffff);
}

#[test]
fn an_io_bar_sizes_with_its_flag() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    space.add_bar(
        1,
        Bar {
            kind: BarKind::Io,
            size: 0x40,
        },
    );
    assert_eq!(sized(&mut space, 0x14), 0xffff_ffc1);
    write32(&mut space, 0x14, 0xc040);
    assert_eq!(space.bar_address(1), Some(0xc040));
    space.write(0x04, &[COMMAND_MEMORY as u8]);
    assert!(!space.bar_enabled(1), "I/O decoding is its own bit");
    space.write(0x04, &[COMMAND_IO as u8]);
    assert!(space.bar_enabled(1));
}

#[test]
fn slots_without_bars_read_zero_and_stay_zero() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    space.add_bar(
        0,
        Bar {
            kind: BarKind::Memory32,
            size: 0x1000,
        },
    );
    for offset in (0x14..0x28).step_by(4) {
        assert_eq!(sized(&mut space, offset), 0, "offset {offset:#x}");
    }
    assert_eq!(sized(&mut space, 0x30), 0, "no expansion ROM");
}

#[test]
fn capabilities_form_a_list_with_their_own_writable_bits() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    let first = space.add_capability(0x09, &[0x10, 1, 2, 3], &[]);
    let second = space.add_capability(0x11, &[0x03, 0x00], &[0x00, 0xc0]);
    assert_eq!((first, second), (0x40, 0x48));
    assert_eq!(
        read32(&space, 0x04) >> 16 & 0x10,
        0x10,
        "status says a list exists"
    );
    let mut walk = Vec::new();
    let mut at = {
        let mut p = [0u8];
        space.read(0x34, &mut p);
        p[0]
    };
    while at != 0 {
        let mut header = [0u8; 2];
        space.read(u16::from(at), &mut header);
        walk.push((at, header[0]));
        at = header[1];
    }
    assert_eq!(walk, vec![(0x40, 0x09), (0x48, 0x11)]);
    // Read-only capability bytes stay; writable bits change and are reported.
    assert_eq!(
        space.write(0x42, &[0xff]),
        ConfigWrite::Capability { offset: 0x40 }
    );
    assert_eq!(space.capability_body(0x40, 4), &[0x10, 1, 2, 3]);
    assert_eq!(
        space.write(0x4a, &0xffffu16.to_le_bytes()),
        ConfigWrite::Capability { offset: 0x48 }
    );
    assert_eq!(space.capability_body(0x48, 2), &[0x03, 0xc0]);
    assert_eq!(
        space.write(0x4c, &[1]),
        ConfigWrite::Nothing,
        "past the last capability"
    );
}

#[test]
fn odd_accesses_read_all_ones_and_write_nothing() {
    let mut space = ConfigSpace::new(virtio_blk_header());
    let mut three = [0u8; 3];
    space.read(0x00, &mut three);
    assert_eq!(three, [0xff; 3]);
    let mut crossing = [0u8; 2];
    space.read(0x03, &mut crossing);
    assert_eq!(crossing, [0xff; 2], "a read across a dword");
    let mut misaligned = [0u8; 4];
    space.read(0x02, &mut misaligned);
    assert_eq!(misaligned, [0xff; 4]);
    assert_eq!(space.write(0x05, &[0xff, 0xff]), ConfigWrite::Nothing);
    assert_eq!(space.command(), 0);
    // Extended space (ECAM's 4 KiB) reads as zero: no extended capabilities.
    let mut extended = [0xaau8; 4];
    space.read(0x100, &mut extended);
    assert_eq!(extended, [0; 4]);
}

#[test]
#[should_panic(expected = "BAR size")]
fn a_bar_of_a_size_that_is_no_power_of_two_is_a_bug() {
    ConfigSpace::new(virtio_blk_header()).add_bar(
        0,
        Bar {
            kind: BarKind::Memory32,
            size: 0x3000,
        },
    );
}

#[test]
fn interrupt_status_shows_in_any_read_that_covers_the_status_register() {
    let mut dword = 0x0010_0006u32.to_le_bytes();
    show_interrupt_pending(0x04, &mut dword);
    assert_eq!(
        u32::from_le_bytes(dword),
        0x0018_0006,
        "status bit 3, command untouched"
    );
    let mut status = [0x10, 0];
    show_interrupt_pending(0x06, &mut status);
    assert_eq!(status, [0x18, 0]);
    let mut command = [0u8; 2];
    show_interrupt_pending(0x04, &mut command);
    assert_eq!(command, [0; 2], "a read of the command register alone");
    let mut header = [0u8; 1];
    show_interrupt_pending(0x08, &mut header);
    assert_eq!(header, [0], "a read past it");
}
