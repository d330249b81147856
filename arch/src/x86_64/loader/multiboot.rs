//! Multiboot (v1) images: finding and checking the header in the first
//! 8 KiB, and loading the image the way the header says — at the header's
//! own addresses when flag 16 is set, else from its ELF32 PT_LOAD
//! segments (linux-loader loads only ELF64). Test kernels such as
//! kvm-unit-tests' x86 `.flat` files are built this way.
//!
//! Every field comes from the file: each is checked, sums use checked
//! arithmetic, and whatever lands in guest RAM must lie in RAM below 4 GiB
//! and clear of the ranges the caller reserves (tandem's boot tables; low
//! memory is otherwise the image's, as real-mode tests need).

use std::ops::Range;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use guest_memory::GuestMemoryMmap;

/// The header's first word.
pub const HEADER_MAGIC: u32 = 0x1bad_b002;
/// The header must start within this many bytes of the file.
pub const SEARCH_LIMIT: usize = 8192;
/// Flag 0: page-align modules (tandem always does).
const FLAG_PAGE_ALIGN: u32 = 1 << 0;
/// Flag 1: pass memory information (tandem always does).
const FLAG_MEMORY_INFO: u32 = 1 << 1;
/// Flag 16: the address fields are valid and take precedence.
const FLAG_ADDRESSES: u32 = 1 << 16;
/// Flags 0-15 are requirements: a loader must refuse ones it cannot meet.
const REQUIRED_MASK: u32 = 0xffff;
/// magic, flags, checksum, then header_addr .. entry_addr (flag 16).
const HEADER_LEN: usize = 32;
/// Multiboot is 32-bit: everything must lie below 4 GiB.
const FOUR_GIB: u64 = 1 << 32;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS32: u8 = 1;
const ELFDATA2LSB: u8 = 1;
const EM_386: u16 = 3;
const ELF32_EHDR_LEN: usize = 52;
const ELF32_PHDR_LEN: usize = 32;
const PT_LOAD: u32 = 1;

/// A multiboot header as found in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Its offset in the file.
    pub offset: usize,
    /// Its flags word.
    pub flags: u32,
}

/// Where a loaded multiboot image sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// Guest-physical entry point.
    pub entry: u64,
    /// One past the highest byte the image occupies (bss included).
    pub end: u64,
}

/// Why an image cannot be loaded; the caller adds the file name.
pub type Result<T> = std::result::Result<T, String>;

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let end = offset.checked_add(2)?;
    Some(u16::from_le_bytes(bytes.get(offset..end)?.try_into().ok()?))
}

/// Finds the multiboot header: 4-byte aligned, within the first 8 KiB,
/// magic, flags and checksum summing to zero. `None` when there is no
/// magic there at all; an error when the magic is there but no header is
/// valid.
pub fn find_header(head: &[u8]) -> Option<Result<Header>> {
    let head = &head[..head.len().min(SEARCH_LIMIT)];
    let mut bad_checksum = None;
    for offset in (0..head.len().saturating_sub(11)).step_by(4) {
        if u32_at(head, offset) != Some(HEADER_MAGIC) {
            continue;
        }
        let (Some(flags), Some(checksum)) = (u32_at(head, offset + 4), u32_at(head, offset + 8))
        else {
            continue;
        };
        if HEADER_MAGIC.wrapping_add(flags).wrapping_add(checksum) == 0 {
            return Some(Ok(Header { offset, flags }));
        }
        bad_checksum.get_or_insert(offset);
    }
    bad_checksum.map(|offset| {
        Err(format!(
            "multiboot magic at offset {offset:#x} with a bad checksum"
        ))
    })
}

impl Header {
    /// Refuses requirements tandem cannot meet (flags 2-15: video mode and
    /// reserved bits).
    pub fn check_requirements(&self) -> Result<()> {
        let unmet = self.flags & REQUIRED_MASK & !(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO);
        if unmet != 0 {
            return Err(format!(
                "multiboot header requires features tandem does not provide (flags {unmet:#x}; \
                 bit 2 is a video mode)"
            ));
        }
        Ok(())
    }
}

/// Where an image is loaded: guest RAM and the ranges it must stay out of.
pub struct Target<'a> {
    /// Guest RAM.
    pub mem: &'a GuestMemoryMmap,
    /// Guest-physical ranges tandem keeps for itself.
    pub reserved: &'a [Range<u64>],
}

/// Checks that `[addr, addr + len)` may hold image bytes; returns its end.
fn check_span(target: &Target, what: &str, addr: u64, len: u64) -> Result<u64> {
    let end = addr
        .checked_add(len)
        .filter(|&end| end <= FOUR_GIB)
        .ok_or_else(|| format!("{what} at {addr:#x} of {len:#x} bytes goes past 4 GiB"))?;
    if let Some(r) = target
        .reserved
        .iter()
        .find(|r| len > 0 && addr < r.end && r.start < end)
    {
        return Err(format!(
            "{what} at {addr:#x}..{end:#x} overlaps {:#x}..{:#x}, which tandem keeps for its \
             boot tables",
            r.start, r.end
        ));
    }
    let mem = target.mem;
    let fits = usize::try_from(len)
        .is_ok_and(|len| len == 0 || GuestMemoryBackend::check_range(mem, GuestAddress(addr), len));
    if !fits {
        return Err(format!(
            "{what} at {addr:#x}..{end:#x} is outside guest RAM: give the VM more memory"
        ));
    }
    Ok(end)
}

/// Copies `file[offset..offset + file_len]` to `addr` and zeroes the rest
/// up to `mem_len`, after checking both fit.
fn place(
    target: &Target,
    file: &[u8],
    what: &str,
    (offset, file_len): (u64, u64),
    addr: u64,
    mem_len: u64,
) -> Result<u64> {
    if file_len > mem_len {
        return Err(format!(
            "{what}: {file_len:#x} bytes in the file but only {mem_len:#x} in memory"
        ));
    }
    let bytes = usize::try_from(offset)
        .ok()
        .zip(usize::try_from(file_len).ok())
        .and_then(|(start, len)| file.get(start..start.checked_add(len)?))
        .ok_or_else(|| {
            format!(
                "{what}: {file_len:#x} bytes at file offset {offset:#x} pass the end of the file"
            )
        })?;
    let end = check_span(target, what, addr, mem_len)?;
    let write_err = |e| format!("{what}: {e}");
    target
        .mem
        .write_slice(bytes, GuestAddress(addr))
        .map_err(write_err)?;
    let zeroes = vec![0u8; (mem_len - file_len) as usize];
    target
        .mem
        .write_slice(&zeroes, GuestAddress(addr + file_len))
        .map_err(write_err)?;
    Ok(end)
}

/// Loads `file`, whose multiboot header is `header`, into `target`.
pub fn load(target: &Target, file: &[u8], header: Header) -> Result<LoadedImage> {
    header.check_requirements()?;
    if header.flags & FLAG_ADDRESSES != 0 {
        load_by_header(target, file, header)
    } else if file.starts_with(ELF_MAGIC) {
        load_elf32(target, file)
    } else {
        Err("multiboot image is neither ELF nor has load addresses (flag 16)".into())
    }
}

/// The a.out kludge: the header says where the file goes.
fn load_by_header(target: &Target, file: &[u8], header: Header) -> Result<LoadedImage> {
    if file.len() < header.offset + HEADER_LEN {
        return Err("multiboot header with flag 16 is cut short by the end of the file".into());
    }
    let field = |i: usize| u64::from(u32_at(file, header.offset + 12 + 4 * i).unwrap_or(0));
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0), field(1), field(2), field(3), field(4));
    let before_header = header_addr.checked_sub(load_addr).ok_or_else(|| {
        format!("multiboot load_addr {load_addr:#x} is above header_addr {header_addr:#x}")
    })?;
    let file_offset = (header.offset as u64)
        .checked_sub(before_header)
        .ok_or_else(|| {
            format!("multiboot load_addr {load_addr:#x} would start before the file does")
        })?;
    let file_len = match load_end {
        0 => file.len() as u64 - file_offset,
        end => end.checked_sub(load_addr).ok_or_else(|| {
            format!("multiboot load_end_addr {end:#x} is below load_addr {load_addr:#x}")
        })?,
    };
    let mem_len = match bss_end {
        0 => file_len,
        end => end.checked_sub(load_addr).ok_or_else(|| {
            format!("multiboot bss_end_addr {end:#x} is below load_addr {load_addr:#x}")
        })?,
    };
    let end = place(
        target,
        file,
        "multiboot image",
        (file_offset, file_len),
        load_addr,
        mem_len,
    )?;
    Ok(LoadedImage { entry, end })
}

/// Loads the PT_LOAD segments of a little-endian i386 ELF32 file at their
/// physical addresses.
fn load_elf32(target: &Target, file: &[u8]) -> Result<LoadedImage> {
    if file.len() < ELF32_EHDR_LEN
        || file[4] != ELFCLASS32
        || file[5] != ELFDATA2LSB
        || u16_at(file, 18) != Some(EM_386)
    {
        return Err("multiboot image is an ELF file but not a little-endian i386 ELF32".into());
    }
    let entry = u64::from(u32_at(file, 24).unwrap_or(0));
    let phoff = u32_at(file, 28).unwrap_or(0) as usize;
    let phentsize = usize::from(u16_at(file, 42).unwrap_or(0));
    let phnum = usize::from(u16_at(file, 44).unwrap_or(0));
    if phentsize != ELF32_PHDR_LEN {
        return Err(format!(
            "ELF32 program headers of {phentsize} bytes (expected {ELF32_PHDR_LEN})"
        ));
    }
    let table = phoff
        .checked_add(phnum * ELF32_PHDR_LEN)
        .and_then(|end| file.get(phoff..end))
        .ok_or_else(|| {
            format!("ELF32 program header table ({phnum} entries) passes the end of the file")
        })?;
    let mut end = 0;
    for (index, phdr) in table.chunks_exact(ELF32_PHDR_LEN).enumerate() {
        let word = |i: usize| u64::from(u32_at(phdr, 4 * i).unwrap_or(0));
        if word(0) != u64::from(PT_LOAD) || word(5) == 0 {
            continue;
        }
        let (offset, paddr, file_len, mem_len) = (word(1), word(3), word(4), word(5));
        let what = format!("ELF32 segment {index}");
        end = end.max(place(
            target,
            file,
            &what,
            (offset, file_len),
            paddr,
            mem_len,
        )?);
    }
    if end == 0 {
        return Err("ELF32 multiboot image has no loadable segment".into());
    }
    Ok(LoadedImage { entry, end })
}

#[cfg(test)]
mod tests;
