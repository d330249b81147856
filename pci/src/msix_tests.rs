//! MSI-X as a driver programs it: entries written and read back, vectors
//! masked at reset, pending bits while masked and their release on unmask
//! (per vector and for the function), the capability's layout.

use super::*;
use crate::config::{ConfigWrite, Header};

const ENABLE: u16 = 1 << 15;
const FUNCTION_MASK: u16 = 1 << 14;

/// Programs vector `v` with `address`/`data` and unmasks it, as Linux does.
fn program(table: &mut MsixTable, v: u64, address: u64, data: u32) {
    table.write_table(v * 16, &address.to_le_bytes());
    table.write_table(v * 16 + 8, &data.to_le_bytes());
    table.write_table(v * 16 + 12, &0u32.to_le_bytes());
}

fn read_u32(table: &MsixTable, offset: u64) -> u32 {
    let mut data = [0; 4];
    table.read_table(offset, &mut data);
    u32::from_le_bytes(data)
}

#[test]
fn entries_read_back_as_written_and_start_masked() {
    let mut table = MsixTable::new(3);
    assert_eq!((table.table_size(), table.pba_size()), (48, 8));
    for v in 0..3 {
        assert_eq!(
            read_u32(&table, v * 16 + 12),
            1,
            "vector {v} masked at reset"
        );
    }
    program(&mut table, 1, 0xfee0_1000, 0x4041);
    let mut qword = [0; 8];
    table.read_table(16, &mut qword);
    assert_eq!(u64::from_le_bytes(qword), 0xfee0_1000);
    assert_eq!(read_u32(&table, 24), 0x4041);
    assert_eq!(read_u32(&table, 28), 0);
    // Reserved vector-control bits do not stick.
    table.write_table(28, &0xffff_fffeu32.to_le_bytes());
    assert_eq!(read_u32(&table, 28), 0);
}

#[test]
fn odd_or_outside_accesses_do_nothing() {
    let mut table = MsixTable::new(2);
    assert_eq!(table.write_table(2, &[0xff; 4]), None, "misaligned");
    assert_eq!(table.write_table(0, &[0xff; 2]), None, "two bytes");
    assert_eq!(table.write_table(32, &[0xff; 4]), None, "past the table");
    assert_eq!(read_u32(&table, 0), 0);
    let mut data = [0xaa; 4];
    table.read_table(40, &mut data);
    assert_eq!(data, [0; 4]);
}

#[test]
fn an_unmasked_vector_sends_its_message_only_with_msix_enabled() {
    let mut table = MsixTable::new(4);
    program(&mut table, 2, 0xfee0_0000, 0x31);
    assert_eq!(table.trigger(2), None, "MSI-X off: the device uses INTx");
    assert!(!table.is_pending(2), "not pending either: INTx carried it");
    table.set_control(ENABLE);
    assert!(table.enabled());
    assert_eq!(
        table.trigger(2),
        Some(MsiMessage {
            address: 0xfee0_0000,
            data: 0x31
        })
    );
    assert_eq!(table.trigger(9), None, "no such vector");
}

#[test]
fn a_masked_vector_is_pending_and_sent_when_unmasked() {
    let mut table = MsixTable::new(4);
    table.set_control(ENABLE);
    program(&mut table, 0, 0xfee0_0000, 0x22);
    table.write_table(12, &1u32.to_le_bytes());
    assert_eq!(table.trigger(0), None);
    assert!(table.is_pending(0));
    let mut pba = [0u8; 8];
    table.read_pba(0, &mut pba);
    assert_eq!(pba[0], 1);
    let released = table.write_table(12, &0u32.to_le_bytes());
    assert_eq!(
        released,
        Some(MsiMessage {
            address: 0xfee0_0000,
            data: 0x22
        })
    );
    assert!(!table.is_pending(0));
    assert_eq!(
        table.write_table(12, &0u32.to_le_bytes()),
        None,
        "sent once"
    );
}

#[test]
fn the_function_mask_holds_every_vector_and_releases_them_together() {
    let mut table = MsixTable::new(70);
    for v in 0..70 {
        program(&mut table, v, 0xfee0_0000, 0x40 + v as u32);
    }
    table.set_control(ENABLE | FUNCTION_MASK);
    for v in [0, 5, 69] {
        assert_eq!(table.trigger(v), None);
    }
    assert_eq!(table.pba_size(), 16);
    let mut pba = [0u8; 16];
    table.read_pba(0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba[..8].try_into().unwrap()), 1 | 1 << 5);
    assert_eq!(u64::from_le_bytes(pba[8..].try_into().unwrap()), 1 << 5);
    let released = table.set_control(ENABLE);
    let data: Vec<(u16, u32)> = released.iter().map(|(v, m)| (*v, m.data)).collect();
    assert_eq!(data, vec![(0, 0x40), (5, 0x45), (69, 0x85)]);
    assert!(table.set_control(ENABLE).is_empty());
}

#[test]
fn reset_masks_and_forgets_everything() {
    let mut table = MsixTable::new(2);
    table.set_control(ENABLE);
    program(&mut table, 1, 0xfee0_0000, 7);
    table.write_table(28, &1u32.to_le_bytes());
    table.trigger(1);
    table.reset();
    assert!(!table.enabled() && !table.is_pending(1));
    assert_eq!(read_u32(&table, 28), 1);
    assert_eq!(read_u32(&table, 24), 0);
}

#[test]
fn the_capability_names_size_bars_and_offsets() {
    let table = MsixTable::new(5);
    let (body, writable) = table.capability((2, 0x2000), (2, 0x3000));
    assert_eq!(
        u16::from_le_bytes([body[0], body[1]]),
        4,
        "table size minus one"
    );
    assert_eq!(u32::from_le_bytes(body[2..6].try_into().unwrap()), 0x2002);
    assert_eq!(u32::from_le_bytes(body[6..].try_into().unwrap()), 0x3002);
    assert_eq!(writable, [0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn the_capability_in_configuration_space_drives_the_table() {
    let mut space = ConfigSpace::new(Header {
        vendor_id: 0x1af4,
        ..Header::default()
    });
    let mut table = MsixTable::new(2);
    let offset = table.add_capability(&mut space, (1, 0), (1, 0x800));
    program(&mut table, 0, 0xfee0_0000, 0x51);
    // The driver enables MSI-X with the function masked, as Linux does first.
    let control = u16::to_le_bytes(ENABLE | FUNCTION_MASK);
    let change = space.write(u16::from(offset) + 2, &control);
    assert_eq!(change, ConfigWrite::Capability { offset });
    assert!(table.control_written(&space, offset).is_empty());
    assert!(table.enabled());
    assert_eq!(table.trigger(0), None, "held by the function mask");
    // The table size in the same word is read-only.
    let mut read = [0u8; 2];
    space.read(u16::from(offset) + 2, &mut read);
    assert_eq!(u16::from_le_bytes(read), ENABLE | FUNCTION_MASK | 1);
    space.write(u16::from(offset) + 2, &ENABLE.to_le_bytes());
    let released = table.control_written(&space, offset);
    assert_eq!(
        released,
        vec![(
            0,
            MsiMessage {
                address: 0xfee0_0000,
                data: 0x51
            }
        )]
    );
}
