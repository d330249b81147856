//! Loader tests on hand-made images: minimal ELF64 kernels with and
//! without the PVH note, a minimal bzImage, and garbage.

use std::io::Write;

use linux_loader::loader::bootparam::setup_header;
use vm_memory::ByteValued;
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::test_payloads::elf_kernel;

const MIB: u64 = 1 << 20;

fn guest(size: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
}

fn file_with(bytes: &[u8]) -> TempFile {
    let file = TempFile::new().unwrap();
    file.as_file().write_all(bytes).unwrap();
    file
}

/// A bzImage with one setup sector and `payload` as the protected-mode
/// kernel.
fn bzimage(version: u16, payload: &[u8]) -> Vec<u8> {
    let hdr = setup_header {
        setup_sects: 1,
        boot_flag: 0xaa55,
        header: BOOT_HEADER_MAGIC,
        version,
        loadflags: 1,
        code32_start: 0x10_0000,
        initrd_addr_max: 0x37ff_ffff,
        kernel_alignment: 0x20_0000,
        xloadflags: 1,
        cmdline_size: 2047,
        pref_address: 0x100_0000,
        init_size: 0x200_0000,
        ..Default::default()
    };
    let mut image = vec![0u8; 1024];
    image[0x1f1..0x1f1 + std::mem::size_of::<setup_header>()].copy_from_slice(hdr.as_slice());
    image.extend_from_slice(payload);
    image
}

#[test]
fn elf_with_pvh_note_enters_through_pvh() {
    let mem = guest(64 * MIB);
    let file = file_with(&elf_kernel(&[0xf4; 100], 0x100_0000, Some(0x100_0040)));
    let kernel = load_kernel(&mem, file.as_path()).unwrap();
    assert_eq!(
        (kernel.mode, kernel.entry),
        (EntryMode::Protected32, 0x100_0040)
    );
    assert_eq!(kernel.initrd_floor, 0x100_0000 + 100);
    assert_eq!(kernel.cmdline_max, ELF_CMDLINE_MAX);
    assert!(kernel.setup_header.is_none());
    let byte: u8 = mem.read_obj(GuestAddress(0x100_0063)).unwrap();
    assert_eq!(byte, 0xf4, "segment loaded at p_paddr");
}

#[test]
fn elf_without_pvh_note_enters_in_long_mode() {
    let mem = guest(64 * MIB);
    let file = file_with(&elf_kernel(&[0x90; 16], 0x20_0000, None));
    let kernel = load_kernel(&mem, file.as_path()).unwrap();
    assert_eq!((kernel.mode, kernel.entry), (EntryMode::Long, 0x20_0000));
}

#[test]
fn bzimage_enters_at_the_64_bit_entry() {
    let mem = guest(64 * MIB);
    let file = file_with(&bzimage(0x020f, &[0xcc; 4096]));
    let kernel = load_kernel(&mem, file.as_path()).unwrap();
    assert_eq!(
        (kernel.mode, kernel.entry),
        (EntryMode::Long, HIMEM_START + 0x200)
    );
    assert_eq!(
        kernel.initrd_floor, 0x300_0000,
        "past pref_address + init_size"
    );
    assert_eq!(kernel.initrd_ceiling, 0x3800_0000);
    assert_eq!(kernel.cmdline_max, 2047);
    let byte: u8 = mem.read_obj(GuestAddress(HIMEM_START + 4095)).unwrap();
    assert_eq!(byte, 0xcc);
    let hdr = kernel.setup_header.unwrap();
    assert_eq!({ hdr.version }, 0x020f);
}

#[test]
fn old_bzimage_without_64_bit_entry_is_refused() {
    let mem = guest(64 * MIB);
    let file = file_with(&bzimage(0x0206, &[0; 512]));
    let err = load_kernel(&mem, file.as_path()).unwrap_err().to_string();
    assert!(err.contains("no 64-bit entry point"), "{err}");
}

#[test]
fn garbage_is_not_a_kernel() {
    let mem = guest(64 * MIB);
    let mut random = vec![0u8; 64 * 1024];
    let mut seed = 0x1234_5678u32;
    for byte in &mut random {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        *byte = seed as u8;
    }
    for (name, bytes) in [
        ("empty", vec![]),
        ("short", vec![0x7f, b'E']),
        ("random", random),
    ] {
        let file = file_with(&bytes);
        match load_kernel(&mem, file.as_path()) {
            Err(Error::Image(msg)) => assert!(
                msg.ends_with("is not a bzImage, ELF vmlinux or multiboot image"),
                "{name}: {msg}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn corrupt_kernels_are_image_errors() {
    let mem = guest(64 * MIB);
    let mut elf32 = elf_kernel(&[0x90], 0x20_0000, None);
    elf32[4] = 1;
    let truncated_elf = elf_kernel(&[0x90; 64], 0x20_0000, Some(0x20_0000))[..100].to_vec();
    let outside_ram = elf_kernel(&[0x90; 64], 0x1_0000_0000, None);
    let mut bad_bzimage = bzimage(0x020f, &[]);
    bad_bzimage.truncate(0x300);
    let huge_header = {
        let mut image = elf_kernel(&[0x90; 64], 0x20_0000, Some(0x20_0000));
        image[56..58].copy_from_slice(&0xffffu16.to_le_bytes()); // e_phnum
        image
    };
    for (name, bytes) in [
        ("elf32", elf32),
        ("truncated elf", truncated_elf),
        ("outside ram", outside_ram),
        ("truncated bzImage", bad_bzimage),
        ("phnum 65535", huge_header),
    ] {
        let file = file_with(&bytes);
        let err = load_kernel(&mem, file.as_path()).unwrap_err();
        assert!(
            matches!(err, Error::Image(_) | Error::Config(_)),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn missing_kernel_names_the_path() {
    let mem = guest(64 * MIB);
    let err = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
}

#[test]
fn initrd_goes_high_and_page_aligned() {
    assert_eq!(
        place_initrd(0x1800, 0x200_0000, 0x400_0000).unwrap(),
        0x3ff_e000
    );
    assert_eq!(place_initrd(MIB, 0, 0x400_0000).unwrap(), 0x3f0_0000);
    let err = place_initrd(5 * MIB, 0x300_0000, 0x340_0000)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not fit"), "{err}");
    assert_eq!(
        place_initrd(4 * MIB, 0x300_0000, 0x340_0000).unwrap(),
        0x300_0000,
        "exact fit"
    );
    assert!(place_initrd(u64::MAX, 0, 0x400_0000).is_err());
}

#[test]
fn initrd_is_loaded_below_the_kernel_limit() {
    let mem = guest(64 * MIB);
    let kernel = LoadedKernel {
        mode: EntryMode::Long,
        entry: HIMEM_START,
        setup_header: None,
        initrd_floor: 0x200_0000,
        initrd_ceiling: 0x300_0000,
        cmdline_max: 100,
    };
    let file = file_with(&[0xab; 5000]);
    let (addr, size) = load_initrd(&mem, file.as_path(), &kernel, 64 * MIB)
        .unwrap()
        .unwrap();
    assert_eq!((addr, size), (0x2ff_e000, 5000));
    let byte: u8 = mem.read_obj(GuestAddress(addr + 4999)).unwrap();
    assert_eq!(byte, 0xab);
    let empty = file_with(&[]);
    assert_eq!(
        load_initrd(&mem, empty.as_path(), &kernel, 64 * MIB).unwrap(),
        None
    );
}

#[test]
fn cmdline_is_written_with_its_nul_and_bounded() {
    let mem = guest(MIB);
    write_cmdline(&mem, "console=ttyS0 panic=-1", 100).unwrap();
    let mut bytes = [0xffu8; 23];
    mem.read_slice(&mut bytes, GuestAddress(CMDLINE_ADDR))
        .unwrap();
    assert_eq!(&bytes, b"console=ttyS0 panic=-1\0");
    let err = write_cmdline(&mem, &"x".repeat(101), 100)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 100"), "{err}");
    assert!(write_cmdline(&mem, "a\0b", 100).is_err());
}

/// Random bytes behind valid magic numbers: every outcome must be a clean
/// `Result`, never a panic.
#[test]
fn random_images_behind_valid_magic_never_panic() {
    let mem = guest(64 * MIB);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let len = 0x300 + (next() % 0x2000) as usize;
        let mut image: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            image[..4].copy_from_slice(ELF_MAGIC);
            image[4] = ELFCLASS64;
            image[0x12..0x14].copy_from_slice(&EM_X86_64.to_le_bytes());
            image[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
            image[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
            let phnum = 1 + next() % 4;
            image[0x38..0x3a].copy_from_slice(&(phnum as u16).to_le_bytes());
            for i in 0..phnum as usize {
                // PT_LOAD or PT_NOTE, with random (often absurd) fields.
                let p_type = if next() % 2 == 0 { 1u32 } else { 4 };
                image[64 + i * 56..68 + i * 56].copy_from_slice(&p_type.to_le_bytes());
            }
        } else {
            image[0x202..0x206].copy_from_slice(&BOOT_HEADER_MAGIC.to_le_bytes());
            image[0x211] |= 1; // loadflags: LOADED_HIGH
            image[0x1f1] = 1; // one setup sector
        }
        let file = file_with(&image);
        let _ = load_kernel(&mem, file.as_path());
    }
}

#[test]
fn multiboot_elf32_is_detected_and_entered_in_multiboot_mode() {
    let mem = guest(64 * MIB);
    let image = crate::test_payloads::multiboot_elf32(&[0xf4; 32], 0x40_0000, 0x1000);
    let file = file_with(&image);
    let kernel = load_kernel(&mem, file.as_path()).unwrap();
    assert_eq!(
        (kernel.mode, kernel.entry),
        (EntryMode::Multiboot, 0x40_0000)
    );
    assert_eq!(kernel.initrd_floor, 0x40_1020);
    assert_eq!(kernel.initrd_ceiling, 1 << 32);
    assert_eq!(kernel.cmdline_max, MULTIBOOT_CMDLINE_MAX);

    let mut no_header = image.clone();
    no_header[84] ^= 1;
    let err = load_kernel(&mem, file_with(&no_header).as_path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("is an ELF file but neither an x86_64 (ELF64) kernel nor a multiboot image"),
        "{err}"
    );
    let mut bad_checksum = image;
    bad_checksum[92] ^= 1;
    let err = load_kernel(&mem, file_with(&bad_checksum).as_path()).unwrap_err();
    assert!(err.to_string().contains("bad checksum"), "{err}");
}

#[test]
fn multiboot_images_stay_clear_of_the_boot_tables() {
    let mem = guest(64 * MIB);
    for (paddr, reserved) in [
        (0x500, "0x0..0x1000"),
        (0x7f00, "0x7000..0x8000"),
        (0x2_0100, "0x20000..0x21000"),
        (0xf_0000, "0x9fc00..0x100000"),
    ] {
        let image = crate::test_payloads::multiboot_elf32(&[0xf4; 0x200], paddr, 0);
        let err = load_kernel(&mem, file_with(&image).as_path()).unwrap_err();
        assert!(
            err.to_string().contains(&format!("overlaps {reserved}")),
            "{err}"
        );
    }
    let low = crate::test_payloads::multiboot_elf32(&[0xf4; 0x200], 0x8000, 0);
    assert!(load_kernel(&mem, file_with(&low).as_path()).is_ok());
}
