//! Loading the guest's boot payload into RAM: the kernel (a bzImage, an
//! ELF vmlinux, entered through PVH when it carries the PVH note, or a
//! multiboot image, see [`multiboot`]), the initrd (as high as the kernel allows, clear of its decompression
//! area), and the command line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use guest_memory::GuestMemoryMmap;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::gdt::EntryMode;
use super::layout::{CMDLINE_ADDR, EBDA_START, HIMEM_START, MULTIBOOT_INFO_ADDR, PAGE_SIZE};
use crate::{Error, Result};

mod multiboot;

/// "HdrS" at offset 0x202 marks a Linux boot-protocol header.
const BOOT_HEADER_MAGIC: u32 = 0x5372_6448;
const BOOT_HEADER_MAGIC_OFFSET: u64 = 0x202;
/// Boot protocol 2.12 introduced `xloadflags` and the 64-bit entry.
const BOOT_PROTOCOL_64BIT: u16 = 0x020c;
const XLF_KERNEL_64: u16 = 1 << 0;
/// The 64-bit entry point's offset into the protected-mode kernel.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// x86's COMMAND_LINE_SIZE (2048) less the NUL, for kernels without a
/// setup header to say otherwise.
const ELF_CMDLINE_MAX: usize = 2047;
/// Multiboot sets no limit; this leaves the command line well clear of
/// the EBDA.
const MULTIBOOT_CMDLINE_MAX: usize = 4095;
/// Multiboot structures are 32-bit: the initrd must end below 4 GiB.
const MULTIBOOT_INITRD_CEILING: u64 = 1 << 32;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;

/// A kernel in guest memory and what booting it takes.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// The mode the boot vCPU enters in.
    pub mode: EntryMode,
    /// Guest-physical entry point.
    pub entry: u64,
    /// The bzImage's setup header, the base of its zero page.
    pub setup_header: Option<setup_header>,
    /// Lowest address an initrd may use: past the kernel image and the
    /// memory it decompresses into.
    pub initrd_floor: u64,
    /// One past the highest address the kernel can reach an initrd at.
    pub initrd_ceiling: u64,
    /// Longest command line the kernel accepts, without the NUL.
    pub cmdline_max: usize,
}

enum ImageKind {
    BzImage,
    Elf,
    Multiboot(multiboot::Header),
}

fn image_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Image(format!("{}: {what}", path.display()))
}

/// Tells a bzImage from an ELF64 kernel from a multiboot image (in that
/// order: a file could carry more than one mark) from anything else.
fn detect(file: &mut File, path: &Path) -> Result<ImageKind> {
    let mut head = vec![0u8; multiboot::SEARCH_LIMIT];
    let read = read_up_to(file, &mut head).map_err(|e| image_err(path, e))?;
    head.truncate(read);
    let is_elf = head.starts_with(ELF_MAGIC);
    let is_elf64 = is_elf
        && read >= 0x14
        && head[4] == ELFCLASS64
        && u16::from_le_bytes([head[0x12], head[0x13]]) == EM_X86_64;
    if is_elf64 {
        return Ok(ImageKind::Elf);
    }
    let magic_at = BOOT_HEADER_MAGIC_OFFSET as usize;
    let is_bzimage = !is_elf
        && head
            .get(magic_at..magic_at + 4)
            .is_some_and(|m| m == BOOT_HEADER_MAGIC.to_le_bytes());
    if is_bzimage {
        return Ok(ImageKind::BzImage);
    }
    match multiboot::find_header(&head) {
        Some(Ok(header)) => Ok(ImageKind::Multiboot(header)),
        Some(Err(e)) => Err(image_err(path, e)),
        None if is_elf => Err(image_err(
            path,
            "is an ELF file but neither an x86_64 (ELF64) kernel nor a multiboot image",
        )),
        None => Err(Error::Image(format!(
            "{} is not a bzImage, ELF vmlinux or multiboot image",
            path.display()
        ))),
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Loads the kernel at `path` into `mem`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel> {
    let mut file = File::open(path)
        .map_err(|e| Error::Image(format!("cannot open kernel {}: {e}", path.display())))?;
    let kernel = match detect(&mut file, path)? {
        ImageKind::BzImage => load_bzimage(mem, &mut file, path)?,
        ImageKind::Elf => load_elf(mem, &mut file, path)?,
        ImageKind::Multiboot(header) => load_multiboot(mem, &mut file, path, header)?,
    };
    if !mem.address_in_range(GuestAddress(kernel.entry)) {
        return Err(image_err(
            path,
            format!("entry point {:#x} is outside guest RAM", kernel.entry),
        ));
    }
    Ok(kernel)
}

fn load_bzimage(mem: &GuestMemoryMmap, file: &mut File, path: &Path) -> Result<LoadedKernel> {
    let start = GuestAddress(HIMEM_START);
    let loaded = BzImage::load(mem, Some(start), file, Some(start))
        .map_err(|e| image_err(path, format!("cannot load bzImage: {e}")))?;
    let hdr = loaded
        .setup_header
        .ok_or_else(|| image_err(path, "bzImage without a setup header"))?;
    let (version, xloadflags) = (hdr.version, hdr.xloadflags);
    if version < BOOT_PROTOCOL_64BIT || xloadflags & XLF_KERNEL_64 == 0 {
        return Err(image_err(
            path,
            format!("bzImage (boot protocol {version:#x}) has no 64-bit entry point"),
        ));
    }
    let decompress_end = hdr.pref_address.saturating_add(u64::from(hdr.init_size));
    Ok(LoadedKernel {
        mode: EntryMode::Long,
        entry: loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
        setup_header: Some(hdr),
        initrd_floor: loaded.kernel_end.max(decompress_end),
        initrd_ceiling: u64::from(hdr.initrd_addr_max) + 1,
        cmdline_max: hdr.cmdline_size as usize,
    })
}

fn load_elf(mem: &GuestMemoryMmap, file: &mut File, path: &Path) -> Result<LoadedKernel> {
    let loaded = Elf::load(mem, None, file, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| image_err(path, format!("cannot load ELF kernel: {e}")))?;
    if loaded.kernel_end > 0 && !mem.address_in_range(GuestAddress(loaded.kernel_end - 1)) {
        return Err(Error::Config(format!(
            "{} needs guest RAM up to {:#x}: give the VM more memory",
            path.display(),
            loaded.kernel_end
        )));
    }
    let (mode, entry) = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (EntryMode::Protected32, addr.0),
        _ => (EntryMode::Long, loaded.kernel_load.0),
    };
    Ok(LoadedKernel {
        mode,
        entry,
        setup_header: None,
        initrd_floor: loaded.kernel_end,
        initrd_ceiling: u64::MAX,
        cmdline_max: ELF_CMDLINE_MAX,
    })
}

/// What a multiboot image must not overwrite: the real-mode IVT and BIOS
/// data area with tandem's GDT and IDT, the multiboot information, the
/// command line, and everything from the EBDA to 1 MiB (ACPI tables, the
/// reset vector). The rest of low memory is the image's to use.
fn multiboot_reserved() -> [std::ops::Range<u64>; 4] {
    let cmdline_end = CMDLINE_ADDR + MULTIBOOT_CMDLINE_MAX as u64 + 1;
    [
        0..0x1000,
        MULTIBOOT_INFO_ADDR..MULTIBOOT_INFO_ADDR + PAGE_SIZE,
        CMDLINE_ADDR..cmdline_end,
        EBDA_START..HIMEM_START,
    ]
}

fn load_multiboot(
    mem: &GuestMemoryMmap,
    file: &mut File,
    path: &Path,
    header: multiboot::Header,
) -> Result<LoadedKernel> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| image_err(path, e))?;
    let target = multiboot::Target {
        mem,
        reserved: &multiboot_reserved(),
    };
    let image = multiboot::load(&target, &bytes, header).map_err(|e| image_err(path, e))?;
    log::info!(
        "{}: loaded as a multiboot image (header at {:#x}, flags {:#x}), entry {:#x}",
        path.display(),
        header.offset,
        header.flags,
        image.entry
    );
    Ok(LoadedKernel {
        mode: EntryMode::Multiboot,
        entry: image.entry,
        setup_header: None,
        initrd_floor: image.end,
        initrd_ceiling: MULTIBOOT_INITRD_CEILING,
        cmdline_max: MULTIBOOT_CMDLINE_MAX,
    })
}

/// Where an initrd of `size` bytes goes: page-aligned, as high as possible
/// below `ceiling`, not below `floor`.
pub fn place_initrd(size: u64, floor: u64, ceiling: u64) -> Result<u64> {
    ceiling
        .checked_sub(size)
        .map(|top| top & !(PAGE_SIZE - 1))
        .filter(|&addr| addr >= floor)
        .ok_or_else(|| {
            Error::Config(format!(
                "initrd of {} MiB does not fit between the kernel ({floor:#x}) and {ceiling:#x}: \
                 give the VM more memory",
                size >> 20
            ))
        })
}

/// Loads the initrd at `path` below `low_ram_end`; returns (address, size),
/// or `None` for an empty file.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel: &LoadedKernel,
    low_ram_end: u64,
) -> Result<Option<(u64, u64)>> {
    let open_err = |e: std::io::Error| Error::Image(format!("initrd {}: {e}", path.display()));
    let mut file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    if size == 0 {
        return Ok(None);
    }
    let ceiling = kernel.initrd_ceiling.min(low_ram_end);
    let addr = place_initrd(size, kernel.initrd_floor, ceiling)?;
    let len =
        usize::try_from(size).map_err(|_| open_err(std::io::ErrorKind::FileTooLarge.into()))?;
    guest_memory::read_into_guest(mem, GuestAddress(addr), &mut file, len)
        .map_err(|e| Error::Image(format!("reading initrd {}: {e}", path.display())))?;
    Ok(Some((addr, size)))
}

/// Writes `cmdline` and its NUL at [`CMDLINE_ADDR`].
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<()> {
    if cmdline.len() > max {
        return Err(Error::Config(format!(
            "kernel command line is {} bytes; this kernel accepts at most {max}",
            cmdline.len()
        )));
    }
    if cmdline.contains('\0') {
        return Err(Error::Config(
            "kernel command line contains a NUL byte".into(),
        ));
    }
    let mut bytes = Vec::with_capacity(cmdline.len() + 1);
    bytes.extend_from_slice(cmdline.as_bytes());
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| Error::GuestMemory(format!("command line: {e}")))
}

#[cfg(test)]
mod tests;
