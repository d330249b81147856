//! Loading the kernel and the initrd into guest RAM. A kernel is an arm64
//! `Image` (checked against its 64-byte header, so a broken one gets a
//! clear error) or, with no such header, a raw binary entered at its first
//! byte at RAM base + 512 KiB, as QEMU and kvmtool load one (test kernels
//! such as kvm-unit-tests' are). Files that are plainly something else (a
//! compressed vmlinuz, an ELF vmlinux, an initramfs) are refused by name.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use guest_memory::GuestMemoryMmap;
use linux_loader::loader::{pe::PE, KernelLoader};
use vm_memory::GuestAddress;

use super::layout::RAM_BASE;
use crate::{Error, Result};

/// "ARM\x64" at byte 56 of every arm64 Image.
const IMAGE_MAGIC: u32 = 0x644d_5241;
const HEADER_LEN: usize = 64;
/// Images older than Linux 3.17 leave image_size 0 and load at 0x80000.
const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;
/// Header flag bit 0: the kernel is big-endian.
const FLAG_BIG_ENDIAN: u64 = 1;

/// What the header of an arm64 Image says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Offset from a 2 MiB aligned base where the Image must be loaded.
    pub text_offset: u64,
    /// Memory the kernel occupies from its load address, BSS included
    /// (0 for pre-3.17 Images, whose size is unknown).
    pub image_size: u64,
}

/// How a kernel file is booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// An arm64 Image, placed as its header says.
    Image(ImageHeader),
    /// No Image header: the whole file at RAM base + [`RAW_LOAD_OFFSET`].
    Raw,
}

/// Where a raw binary goes in RAM, as QEMU and kvmtool place one.
pub const RAW_LOAD_OFFSET: u64 = 0x8_0000;

/// Leading bytes of files that are not kernels tandem can boot, and what
/// to tell the user about each (checked after the Image magic).
const NOT_BOOTABLE: [(&[u8], &str); 9] = [
    (
        &[0x1f, 0x8b],
        "gzip-compressed (a compressed vmlinuz must be gunzipped first)",
    ),
    (b"\xfd7zXZ\0", "xz-compressed (decompress it first)"),
    (
        &[0x28, 0xb5, 0x2f, 0xfd],
        "zstd-compressed (decompress it first)",
    ),
    (b"BZh", "bzip2-compressed (decompress it first)"),
    (
        &[0x04, 0x22, 0x4d, 0x18],
        "lz4-compressed (decompress it first)",
    ),
    (
        b"\x7fELF",
        "an ELF file (give the Image, arch/arm64/boot/Image, not vmlinux)",
    ),
    (
        b"MZ\0\0zimg",
        "a compressed EFI zboot image (tandem boots the Image inside it)",
    ),
    (
        b"070701",
        "a cpio archive (an initramfs: give it with --initrd)",
    ),
    (
        b"070702",
        "a cpio archive (an initramfs: give it with --initrd)",
    ),
];

/// Tells how the kernel whose first bytes are `bytes` boots, or why it
/// cannot.
pub fn identify(bytes: &[u8], path: &Path) -> Result<KernelFormat> {
    if bytes.len() >= HEADER_LEN
        && u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]) == IMAGE_MAGIC
    {
        return parse_header(bytes, path).map(KernelFormat::Image);
    }
    if bytes.is_empty() {
        return Err(Error::Image(format!("kernel {} is empty", path.display())));
    }
    match NOT_BOOTABLE
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
    {
        Some((_, what)) => Err(Error::Image(format!(
            "{} is {what}, not an arm64 Image or a raw binary",
            path.display()
        ))),
        None => Ok(KernelFormat::Raw),
    }
}

/// Reads the fields of an arm64 Image header (`bytes` holds all 64 bytes
/// and the magic), or says why they cannot be booted.
fn parse_header(bytes: &[u8], path: &Path) -> Result<ImageHeader> {
    let field = |at: usize| -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let (text_offset, image_size, flags) = (field(8), field(16), field(24));
    // No arm64 machine has this much memory (the largest IPA is 52 bits):
    // refusing here keeps every later sum of these fields from overflowing.
    if text_offset >= MAX_HEADER_SIZE || image_size >= MAX_HEADER_SIZE {
        return Err(Error::Image(format!(
            "{} has an impossible Image header (text_offset {text_offset:#x}, image_size {image_size:#x})",
            path.display()
        )));
    }
    if image_size != 0 && flags & FLAG_BIG_ENDIAN != 0 {
        return Err(Error::Image(format!(
            "{} is a big-endian arm64 Image; tandem boots little-endian kernels",
            path.display()
        )));
    }
    Ok(ImageHeader {
        text_offset: if image_size == 0 {
            LEGACY_TEXT_OFFSET
        } else {
            text_offset
        },
        image_size,
    })
}

/// Reads the start of the kernel at `path` and tells how it boots, so a
/// wrong file is refused before any VM exists.
pub fn check_kernel(path: &Path) -> Result<KernelFormat> {
    read_head(&mut open(path, "kernel")?, path)
}

fn read_head(file: &mut File, path: &Path) -> Result<KernelFormat> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::Image(format!("cannot read kernel {}: {e}", path.display())))?;
    identify(&head, path)
}

/// Where the kernel landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// First instruction: the load address.
    pub entry: u64,
    /// End of the memory the kernel claims (file or image_size, whichever
    /// is larger), exclusive.
    pub end: u64,
}

fn open(path: &Path, what: &str) -> Result<File> {
    File::open(path)
        .map_err(|e| Error::Image(format!("cannot open {what} {}: {e}", path.display())))
}

/// Header fields at or above this are refused (1 << 52, the largest IPA).
const MAX_HEADER_SIZE: u64 = 1 << 52;

/// Loads the kernel at `path`: an Image at RAM_BASE + text_offset, a raw
/// binary at RAM_BASE + [`RAW_LOAD_OFFSET`].
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel> {
    let mut file = open(path, "kernel")?;
    let read_err = |e: std::io::Error| Error::Image(format!("cannot read {}: {e}", path.display()));
    let format = read_head(&mut file, path)?;
    let file_len = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    let too_big = |e: &dyn std::fmt::Display| {
        Error::Image(format!(
            "cannot load {} ({file_len} bytes) into guest RAM: {e}; give the VM more memory?",
            path.display()
        ))
    };
    let (entry, claimed) = match format {
        KernelFormat::Image(header) => {
            let loaded = PE::load(mem, Some(GuestAddress(RAM_BASE)), &mut file, None)
                .map_err(|e| too_big(&e))?;
            (loaded.kernel_load.0, file_len.max(header.image_size))
        }
        KernelFormat::Raw => {
            let entry = RAM_BASE + RAW_LOAD_OFFSET;
            let len = usize::try_from(file_len).map_err(|e| too_big(&e))?;
            file.seek(SeekFrom::Start(0)).map_err(read_err)?;
            guest_memory::read_into_guest(mem, GuestAddress(entry), &mut file, len)
                .map_err(|e| too_big(&e))?;
            (entry, file_len)
        }
    };
    let end = entry
        .checked_add(claimed)
        .ok_or_else(|| Error::Image(format!("{} does not fit in memory", path.display())))?;
    match format {
        KernelFormat::Image(_) => log::info!("kernel: arm64 Image at {entry:#x}..{end:#x}"),
        KernelFormat::Raw => log::info!(
            "kernel: {} has no arm64 Image header; loaded as a raw binary at {entry:#x}..{end:#x}, entered at its first byte",
            path.display()
        ),
    }
    Ok(LoadedKernel { entry, end })
}

/// Size of the initrd at `path`.
pub fn initrd_size(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Image(format!("cannot open initrd {}: {e}", path.display())))?;
    if meta.len() == 0 {
        return Err(Error::Image(format!("initrd {} is empty", path.display())));
    }
    Ok(meta.len())
}

/// Copies the initrd at `path` (`size` bytes) to `addr`.
pub fn load_initrd(mem: &GuestMemoryMmap, path: &Path, addr: u64, size: u64) -> Result<()> {
    let mut file = open(path, "initrd")?;
    let len = usize::try_from(size).map_err(|_| Error::Image("initrd too large".into()))?;
    guest_memory::read_into_guest(mem, GuestAddress(addr), &mut file, len)
        .map_err(|e| Error::GuestMemory(format!("loading initrd {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use vm_memory::Bytes;
    use vmm_sys_util::tempfile::TempFile;

    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        h
    }

    fn file_with(bytes: &[u8]) -> TempFile {
        let file = TempFile::new().unwrap();
        file.as_file().write_all(bytes).unwrap();
        file
    }

    fn ram() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), 64 << 20)]).unwrap()
    }

    #[test]
    fn header_fields_are_read_little_endian() {
        let path = Path::new("Image");
        let parsed = parse_header(&header(0x20_0000, 0x150_0000, 0xa), path).unwrap();
        assert_eq!(parsed.text_offset, 0x20_0000);
        assert_eq!(parsed.image_size, 0x150_0000);
        let legacy = parse_header(&header(0x1234, 0, 0), path).unwrap();
        assert_eq!(legacy.text_offset, LEGACY_TEXT_OFFSET);
    }

    #[test]
    fn known_non_kernels_and_big_endian_images_are_refused_by_name() {
        let path = Path::new("/boot/vmlinuz");
        for (bytes, says) in [
            (&b""[..], "is empty"),
            (&[0x1f, 0x8b, 8, 0][..], "gunzipped first"),
            (&b"\x7fELF\x02\x01\x01"[..], "not vmlinux"),
            (&b"070701000000"[..], "--initrd"),
            (&b"MZ\0\0zimg\0\0"[..], "EFI zboot"),
        ] {
            let err = identify(bytes, path).unwrap_err();
            assert!(matches!(err, Error::Image(_)));
            assert!(err.to_string().contains("/boot/vmlinuz is "), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
        let err = identify(&header(0, 0x10_0000, 1), path).unwrap_err();
        assert!(err.to_string().contains("big-endian"), "{err}");
    }

    #[test]
    fn a_file_with_no_header_is_a_raw_binary() {
        let path = Path::new("test.flat");
        for bytes in [
            &[0u8; 4096][..],
            &header(0, 1, 0)[..60],
            &[0x91, 0, 0, 0x90],
        ] {
            assert_eq!(identify(bytes, path).unwrap(), KernelFormat::Raw);
        }
        assert!(matches!(
            identify(&header(0, 0x40_0000, 0), path).unwrap(),
            KernelFormat::Image(ImageHeader {
                image_size: 0x40_0000,
                ..
            })
        ));
    }

    #[test]
    fn crafted_header_sizes_are_clean_errors_not_overflows() {
        for (text_offset, image_size) in [
            (0, u64::MAX),
            (0x20_0000, u64::MAX - 0x10_0000),
            (u64::MAX - 0xfff, 0x1000),
        ] {
            let mut image = header(text_offset, image_size, 0);
            image.resize(0x1000, 0);
            let file = file_with(&image);
            let err = load_kernel(&ram(), file.as_path()).unwrap_err();
            assert!(err.to_string().contains("impossible Image header"), "{err}");
            assert!(check_kernel(file.as_path()).is_err());
        }
    }

    #[test]
    fn raw_binary_lands_at_512_kib_into_ram_and_is_entered_there() {
        let code: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let file = file_with(&code);
        assert_eq!(check_kernel(file.as_path()).unwrap(), KernelFormat::Raw);
        let mem = ram();
        let kernel = load_kernel(&mem, file.as_path()).unwrap();
        assert_eq!(kernel.entry, RAM_BASE + 0x8_0000);
        assert_eq!(kernel.end, RAM_BASE + 0x8_0000 + code.len() as u64);
        let mut copied = vec![0u8; code.len()];
        mem.read_slice(&mut copied, GuestAddress(kernel.entry))
            .unwrap();
        assert_eq!(copied, code);
        let mut below = [0xffu8; 16];
        mem.read_slice(&mut below, GuestAddress(kernel.entry - 16))
            .unwrap();
        assert_eq!(below, [0; 16], "nothing written below the entry");
    }

    #[test]
    fn missing_or_oversized_kernels_give_clean_errors() {
        let missing = load_kernel(&ram(), Path::new("/nonexistent/Image")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot open kernel"),
            "{missing}"
        );
        let raw = file_with(&vec![0xa5; 65 << 20]);
        let err = load_kernel(&ram(), raw.as_path()).unwrap_err();
        assert!(err.to_string().contains("cannot load"), "{err}");
    }

    #[test]
    fn image_is_copied_to_text_offset_and_claims_its_image_size() {
        let mut image = header(0, 0x40_0000, 0);
        image.extend((0..8192u32).map(|i| i as u8));
        let file = file_with(&image);
        let mem = ram();
        let kernel = load_kernel(&mem, file.as_path()).unwrap();
        assert_eq!(kernel.entry, RAM_BASE);
        assert_eq!(kernel.end, RAM_BASE + 0x40_0000);
        let mut copied = vec![0u8; image.len()];
        mem.read_slice(&mut copied, GuestAddress(RAM_BASE)).unwrap();
        assert_eq!(copied, image);
    }

    #[test]
    fn image_too_big_for_ram_is_an_error_not_a_panic() {
        let mut image = header(0, 0x100_0000, 0);
        image.resize(65 << 20, 0);
        let file = file_with(&image);
        let err = load_kernel(&ram(), file.as_path()).unwrap_err();
        assert!(err.to_string().contains("cannot load"), "{err}");
    }

    #[test]
    fn initrd_is_copied_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let file = file_with(&data);
        let mem = ram();
        let size = initrd_size(file.as_path()).unwrap();
        assert_eq!(size, data.len() as u64);
        load_initrd(&mem, file.as_path(), RAM_BASE + (32 << 20), size).unwrap();
        let mut copied = vec![0u8; data.len()];
        mem.read_slice(&mut copied, GuestAddress(RAM_BASE + (32 << 20)))
            .unwrap();
        assert_eq!(copied, data);
        assert!(initrd_size(file_with(&[]).as_path()).is_err());
    }
}
