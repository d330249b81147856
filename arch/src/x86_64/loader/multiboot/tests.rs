//! Multiboot header and loading tests on hand-made images: ELF32 files
//! from `test_payloads`, raw images with load addresses (flag 16), and
//! every way their fields can be wrong.

use super::*;
use crate::test_payloads::multiboot_elf32;

const MIB: u64 = 1 << 20;

fn guest() -> GuestMemoryMmap {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), (64 * MIB) as usize)]).unwrap();
    mem.write_slice(&vec![0xffu8; (16 * MIB) as usize], GuestAddress(0))
        .unwrap();
    mem
}

fn header_of(file: &[u8]) -> Header {
    find_header(file)
        .expect("a header")
        .expect("a valid header")
}

/// Reserved as tandem reserves low memory, in part.
const RESERVED: [Range<u64>; 2] = [0..0x1000, 0x7000..0x8000];

fn load_into(mem: &GuestMemoryMmap, file: &[u8]) -> Result<LoadedImage> {
    let target = Target {
        mem,
        reserved: &RESERVED,
    };
    load(&target, file, header_of(file))
}

fn load_file(file: &[u8]) -> Result<LoadedImage> {
    load_into(&guest(), file)
}

fn err_of(file: &[u8]) -> String {
    load_file(file).unwrap_err()
}

/// A raw image of `len` bytes with a flag-16 header at `offset` holding
/// `fields` (header_addr, load_addr, load_end_addr, bss_end_addr, entry).
fn raw_image(len: usize, offset: usize, flags: u32, fields: [u32; 5]) -> Vec<u8> {
    let mut image: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
    let words = [
        HEADER_MAGIC,
        flags,
        0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags)),
    ];
    for (i, word) in words.iter().chain(&fields).enumerate() {
        image[offset + 4 * i..][..4].copy_from_slice(&word.to_le_bytes());
    }
    image
}

/// Sets the 32-bit word at `offset` of a copy of `file`.
fn patched(file: &[u8], offset: usize, value: u32) -> Vec<u8> {
    let mut file = file.to_vec();
    file[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    file
}

/// Offsets in `multiboot_elf32`'s files.
const PHDR: usize = 52;
const MB_HEADER: usize = 84;

#[test]
fn elf32_segments_load_at_their_addresses_with_bss_zeroed() {
    let code = [0x90, 0x90, 0xf4];
    let file = multiboot_elf32(&code, 0x40_0000, 0x100);
    assert_eq!(
        header_of(&file),
        Header {
            offset: MB_HEADER,
            flags: 0
        }
    );
    let mem = guest();
    let image = load_into(&mem, &file).unwrap();
    assert_eq!(
        image,
        LoadedImage {
            entry: 0x40_0000,
            end: 0x40_0103
        }
    );
    let mut loaded = [0u8; 0x103];
    mem.read_slice(&mut loaded, GuestAddress(0x40_0000))
        .unwrap();
    assert_eq!(&loaded[..3], &code);
    assert!(loaded[3..].iter().all(|&b| b == 0), "bss zeroed");
}

#[test]
fn header_search_needs_magic_checksum_alignment_and_the_first_8_kib() {
    let file = multiboot_elf32(&[0xf4], 0x40_0000, 0);
    assert!(
        find_header(&patched(&file, MB_HEADER, 0x1bad_b003)).is_none(),
        "bad magic"
    );
    let bad_sum = patched(&file, MB_HEADER + 8, 0);
    assert_eq!(
        find_header(&bad_sum).unwrap().unwrap_err(),
        "multiboot magic at offset 0x54 with a bad checksum"
    );
    let misaligned = raw_image(0x3000, 0x102, 1 << 16, [0; 5]);
    assert!(find_header(&misaligned).is_none(), "not 4-byte aligned");
    let last_fit = raw_image(0x3000, SEARCH_LIMIT - 12, 1 << 16, [0; 5]);
    assert_eq!(
        find_header(&last_fit).unwrap().unwrap().offset,
        SEARCH_LIMIT - 12
    );
    let straddling = raw_image(0x3000, SEARCH_LIMIT - 8, 1 << 16, [0; 5]);
    assert!(
        find_header(&straddling).is_none(),
        "header must end within 8 KiB"
    );
    let past = raw_image(0x3000, SEARCH_LIMIT, 1 << 16, [0; 5]);
    assert!(find_header(&past).is_none(), "header past 8 KiB");
    assert!(find_header(&[]).is_none());
}

#[test]
fn requirements_tandem_cannot_meet_are_refused() {
    let file = raw_image(
        0x1000,
        0,
        (1 << 16) | (1 << 2),
        [0x10_0000, 0x10_0000, 0, 0, 0x10_0000],
    );
    assert!(
        err_of(&file).contains("flags 0x4; bit 2 is a video mode"),
        "{}",
        err_of(&file)
    );
    let mem_and_align = raw_image(
        0x1000,
        0,
        (1 << 16) | 3,
        [0x10_0000, 0x10_0000, 0, 0, 0x10_0000],
    );
    assert!(load_file(&mem_and_align).is_ok());
}

#[test]
fn flag_16_addresses_take_precedence() {
    // Header at 0x40, so the file starts 0x40 below header_addr.
    let fields = [0x20_0040, 0x20_0000, 0x20_0800, 0x20_1000, 0x20_0050];
    let file = raw_image(0x1000, 0x40, 1 << 16, fields);
    let mem = guest();
    let image = load_into(&mem, &file).unwrap();
    assert_eq!(
        image,
        LoadedImage {
            entry: 0x20_0050,
            end: 0x20_1000
        }
    );
    let mut loaded = vec![0u8; 0x1000];
    mem.read_slice(&mut loaded, GuestAddress(0x20_0000))
        .unwrap();
    assert_eq!(
        &loaded[..0x800],
        &file[..0x800],
        "load_end_addr bounds the copy"
    );
    assert!(
        loaded[0x800..].iter().all(|&b| b == 0),
        "bss to bss_end_addr"
    );

    let whole = raw_image(
        0x1000,
        0x40,
        1 << 16,
        [0x20_0040, 0x20_0000, 0, 0, 0x20_0000],
    );
    assert_eq!(
        load_file(&whole).unwrap().end,
        0x20_1000,
        "load_end 0: the whole file"
    );
}

#[test]
fn bad_flag_16_addresses_are_refused() {
    let cases: [([u32; 5], &str); 5] = [
        (
            [0x20_0000, 0x20_0040, 0, 0, 0],
            "load_addr 0x200040 is above header_addr",
        ),
        (
            [0x20_0100, 0x20_0000, 0, 0, 0],
            "would start before the file does",
        ),
        (
            [0x20_0040, 0x20_0000, 0x1f_0000, 0, 0],
            "load_end_addr 0x1f0000 is below",
        ),
        (
            [0x20_0040, 0x20_0000, 0, 0x1f_0000, 0],
            "bss_end_addr 0x1f0000 is below",
        ),
        (
            [0x20_0040, 0x20_0000, 0x20_2000, 0, 0],
            "pass the end of the file",
        ),
    ];
    for (fields, expected) in cases {
        let err = err_of(&raw_image(0x1000, 0x40, 1 << 16, fields));
        assert!(err.contains(expected), "{fields:x?}: {err}");
    }
    let short = raw_image(0x60, 0x40, 1 << 16, [0; 5])[..0x4c].to_vec();
    assert!(err_of(&short).contains("cut short"));
    let no_addresses = raw_image(0x1000, 0x40, 0, [0; 5]);
    assert!(err_of(&no_addresses).contains("neither ELF nor has load addresses"));
}

#[test]
fn segments_outside_ram_are_refused() {
    let elf = |paddr, bss| multiboot_elf32(&[0xf4; 16], paddr, bss);
    let cases = [
        (elf(0x7ff8, 0), "overlaps 0x7000..0x8000"),
        (elf(0x800, 0), "overlaps 0x0..0x1000"),
        (elf(0x400_0000, 0), "outside guest RAM"),
        (elf(0x3ff_fff8, 0), "outside guest RAM"),
        (elf(0x40_0000, 0x800_0000), "outside guest RAM"),
        (elf(0xffff_fff8, 0), "goes past 4 GiB"),
        (elf(0x40_0000, 0xffff_fff8 - 16), "goes past 4 GiB"),
    ];
    for (file, expected) in cases {
        let err = err_of(&file);
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn low_memory_outside_the_reserved_ranges_is_the_images() {
    // Like kvm-unit-tests' realmode test, loaded at 0x8000.
    let image = load_file(&multiboot_elf32(&[0xf4; 16], 0x8000, 0x100)).unwrap();
    assert_eq!(
        image,
        LoadedImage {
            entry: 0x8000,
            end: 0x8110
        }
    );
}

#[test]
fn bad_elf32_headers_are_refused() {
    let file = multiboot_elf32(&[0xf4; 16], 0x40_0000, 0);
    let mut elf64_class = file.clone();
    elf64_class[4] = 2;
    let mut big_endian = file.clone();
    big_endian[5] = 2;
    let mut bad_phentsize = file.clone();
    bad_phentsize[42] = 56;
    let mut many_phdrs = file.clone();
    many_phdrs[44..46].copy_from_slice(&0xffffu16.to_le_bytes());
    let cases = [
        (elf64_class, "not a little-endian i386 ELF32"),
        (big_endian, "not a little-endian i386 ELF32"),
        (bad_phentsize, "program headers of 56 bytes"),
        (many_phdrs, "65535 entries) passes the end of the file"),
        (patched(&file, 28, u32::MAX), "passes the end of the file"),
        (
            patched(&file, PHDR + 16, 17),
            "0x11 bytes in the file but only 0x10 in memory",
        ),
        (
            patched(&file, PHDR + 4, 0xffff_fff0),
            "pass the end of the file",
        ),
        (patched(&file, PHDR + 16, u32::MAX), "in the file but only"),
        (patched(&file, PHDR, 4), "no loadable segment"),
    ];
    for (bytes, expected) in cases {
        let err = err_of(&bytes);
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn random_fields_behind_a_valid_header_never_panic() {
    let base = multiboot_elf32(&[0xf4; 64], 0x40_0000, 0);
    let mut seed = 0x9e37_79b9u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mem = guest();
    for _ in 0..2000 {
        let mut file = base.clone();
        for _ in 0..4 {
            let at = (next() as usize % (MB_HEADER / 4)) * 4;
            file[at..at + 4].copy_from_slice(&next().to_le_bytes());
        }
        let _ = load_into(&mem, &file);
        let raw = raw_image(
            0x200,
            0,
            1 << 16,
            std::array::from_fn(|_| next() & 0x7ff_ffff),
        );
        let _ = load_into(&mem, &raw);
    }
}
