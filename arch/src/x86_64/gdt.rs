//! The boot GDT: descriptors for the two entry modes (64-bit long mode for
//! the Linux boot protocol, 32-bit protected mode for PVH), and decoding a
//! descriptor into the `kvm_segment` KVM loads, so the table in guest
//! memory and the segment registers always agree.

use kvm_bindings::kvm_segment;

/// Access and flag bits of a descriptor, packed as `flags << 12 | access`:
/// bits 0-7 are the access byte (type, S, DPL, P), bits 12-15 AVL, L, D/B
/// and G.
type DescriptorFlags = u16;

/// Present, ring 0, code, execute/read, accessed.
const CODE_ACCESS: DescriptorFlags = 0x9b;
/// Present, ring 0, data, read/write, accessed.
const DATA_ACCESS: DescriptorFlags = 0x93;
/// Present, system, busy 32/64-bit TSS.
const TSS_ACCESS: DescriptorFlags = 0x8b;
/// Granularity 4 KiB.
const G: DescriptorFlags = 1 << 15;
/// Default operand size 32 bits.
const DB: DescriptorFlags = 1 << 14;
/// 64-bit code segment.
const L: DescriptorFlags = 1 << 13;

/// Selector of the code segment in both tables.
pub const CODE_SELECTOR: u16 = 0x08;
/// Selector of the data segment in both tables.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the TSS in both tables.
pub const TSS_SELECTOR: u16 = 0x18;

/// Which mode the boot vCPU starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    /// Long mode with paging, for the 64-bit Linux boot protocol.
    Long,
    /// 32-bit protected mode without paging, for PVH.
    Protected32,
    /// 32-bit protected mode without paging, with the multiboot magic in
    /// EAX and the multiboot information in EBX.
    Multiboot,
}

/// Builds one 8-byte descriptor.
pub const fn descriptor(flags: DescriptorFlags, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The GDT for `mode`: null, code, data, TSS.
pub fn gdt(mode: EntryMode) -> [u64; 4] {
    let code = match mode {
        EntryMode::Long => descriptor(G | L | CODE_ACCESS, 0, 0xfffff),
        EntryMode::Protected32 | EntryMode::Multiboot => {
            descriptor(G | DB | CODE_ACCESS, 0, 0xfffff)
        }
    };
    [
        0,
        code,
        descriptor(G | DB | DATA_ACCESS, 0, 0xfffff),
        descriptor(TSS_ACCESS, 0, 0x67),
    ]
}

/// The segment register contents a descriptor loads as `selector`.
pub fn segment(descriptor: u64, selector: u16) -> kvm_segment {
    let bit = |n: u32| ((descriptor >> n) & 1) as u8;
    let base = ((descriptor >> 16) & 0x00ff_ffff) | ((descriptor >> 32) & 0xff00_0000);
    let raw_limit = (descriptor & 0xffff) | ((descriptor >> 32) & 0x000f_0000);
    let g = bit(55);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = bit(47);
    kvm_segment {
        base,
        limit: limit as u32,
        selector,
        type_: ((descriptor >> 40) & 0xf) as u8,
        present,
        dpl: ((descriptor >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g,
        avl: bit(52),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(mode: EntryMode, selector: u16) -> kvm_segment {
        segment(gdt(mode)[usize::from(selector / 8)], selector)
    }

    #[test]
    fn long_mode_code_is_64_bit() {
        let cs = seg(EntryMode::Long, CODE_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.s, cs.present, cs.dpl), (1, 0, 1, 1, 0));
        assert_eq!(cs.type_, 0xb, "execute/read, accessed");
        assert_eq!((cs.base, cs.limit, cs.g), (0, 0xffff_ffff, 1));
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn pvh_code_is_flat_32_bit() {
        let cs = seg(EntryMode::Protected32, CODE_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.s, cs.present), (0, 1, 1, 1));
        assert_eq!((cs.base, cs.limit, cs.type_), (0, 0xffff_ffff, 0xb));
    }

    #[test]
    fn data_and_tss() {
        for mode in [EntryMode::Long, EntryMode::Protected32] {
            let ds = seg(mode, DATA_SELECTOR);
            assert_eq!((ds.type_, ds.s, ds.db, ds.l), (0x3, 1, 1, 0));
            assert_eq!((ds.base, ds.limit, ds.present), (0, 0xffff_ffff, 1));
            let tr = seg(mode, TSS_SELECTOR);
            assert_eq!((tr.type_, tr.s, tr.present, tr.g), (0xb, 0, 1, 0));
            assert_eq!((tr.base, tr.limit), (0, 0x67));
        }
        assert_eq!(segment(0, 0).unusable, 1, "the null descriptor is unusable");
    }

    #[test]
    fn descriptor_round_trips_base_and_limit() {
        let d = descriptor(DATA_ACCESS, 0x1234_5678, 0xa_bcde);
        let s = segment(d, 0x10);
        assert_eq!((s.base, s.limit, s.g), (0x1234_5678, 0xa_bcde, 0));
    }
}
