//! Loading the arm64 `Image` (checked against its 64-byte header first, so
//! a wrong file gets a clear error) and the initrd into guest RAM.

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

/// Parses an arm64 Image header, or says why `path` is not a bootable one.
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<ImageHeader> {
    let field = |at: usize| -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let magic_ok = bytes.len() >= HEADER_LEN
        && u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]) == IMAGE_MAGIC;
    if !magic_ok {
        return Err(Error::Image(format!(
            "{} is not an arm64 Image (a compressed vmlinuz must be gunzipped first)",
            path.display()
        )));
    }
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

/// Reads and checks the Image header at `path`, so a wrong file is refused
/// before any VM exists.
pub fn check_kernel(path: &Path) -> Result<ImageHeader> {
    use std::io::Read;
    let mut head = Vec::with_capacity(HEADER_LEN);
    open(path, "kernel")?
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::Image(format!("cannot read kernel {}: {e}", path.display())))?;
    parse_header(&head, path)
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

/// Loads the Image at `path` at RAM_BASE + text_offset.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel> {
    let mut file = open(path, "kernel")?;
    let read_err = |e: std::io::Error| Error::Image(format!("cannot read {}: {e}", path.display()));
    let mut header = Vec::with_capacity(HEADER_LEN);
    (&mut file)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(read_err)?;
    let parsed = parse_header(&header, path)?;
    let file_len = file.seek(SeekFrom::End(0)).map_err(read_err)?;

    let loaded = PE::load(mem, Some(GuestAddress(RAM_BASE)), &mut file, None).map_err(|e| {
        Error::Image(format!(
            "cannot load {} ({file_len} bytes) into guest RAM: {e}; give the VM more memory?",
            path.display()
        ))
    })?;
    let entry = loaded.kernel_load.0;
    let end = entry
        .checked_add(file_len.max(parsed.image_size))
        .ok_or_else(|| Error::Image(format!("{} does not fit in memory", path.display())))?;
    log::info!("kernel at {entry:#x}..{end:#x}");
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
    fn non_images_and_big_endian_images_are_refused() {
        let path = Path::new("/boot/vmlinuz");
        for bytes in [
            &b""[..],
            &[0x1f, 0x8b, 8, 0],
            &[0u8; 4096],
            &header(0, 1, 0)[..60],
        ] {
            let err = parse_header(bytes, path).unwrap_err();
            assert!(matches!(err, Error::Image(_)));
            assert!(
                err.to_string()
                    .contains("/boot/vmlinuz is not an arm64 Image"),
                "{err}"
            );
        }
        let err = parse_header(&header(0, 0x10_0000, 1), path).unwrap_err();
        assert!(err.to_string().contains("big-endian"), "{err}");
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
    fn garbage_file_gives_a_clean_error() {
        let file = file_with(&[0xa5; 10_000]);
        let err = load_kernel(&ram(), file.as_path()).unwrap_err();
        assert!(err.to_string().contains("is not an arm64 Image"), "{err}");
        let err = check_kernel(file.as_path()).unwrap_err();
        assert!(err.to_string().contains("is not an arm64 Image"), "{err}");
        let short = file_with(&header(0, 1, 0)[..40]);
        assert!(check_kernel(short.as_path()).is_err());
        let good = file_with(&header(0, 0x40_0000, 0));
        assert_eq!(check_kernel(good.as_path()).unwrap().image_size, 0x40_0000);
        let missing = load_kernel(&ram(), Path::new("/nonexistent/Image")).unwrap_err();
        assert!(
            missing.to_string().contains("cannot open kernel"),
            "{missing}"
        );
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
