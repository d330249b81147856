//! The multiboot (v1) information block a multiboot kernel finds through
//! EBX: lower and upper memory, the command line, the initrd as the one
//! module, a memory map matching the e820 map, and the loader's name. It
//! and its tables fill one page at [`MULTIBOOT_INFO_ADDR`].

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::boot_info::BootInfo;
use super::layout::{
    E820Kind, CMDLINE_ADDR, EBDA_START, HIMEM_START, MULTIBOOT_INFO_ADDR, PAGE_SIZE,
};
use crate::{Error, Result};

/// Flag bits saying which fields are valid.
const INFO_MEMORY: u32 = 1 << 0;
const INFO_CMDLINE: u32 = 1 << 2;
const INFO_MODULES: u32 = 1 << 3;
const INFO_MEMORY_MAP: u32 = 1 << 6;
const INFO_LOADER_NAME: u32 = 1 << 9;

/// Field offsets in the information block.
const FLAGS: usize = 0;
const MEM_LOWER: usize = 4;
const MEM_UPPER: usize = 8;
const CMDLINE: usize = 16;
const MODS_COUNT: usize = 20;
const MODS_ADDR: usize = 24;
const MMAP_LENGTH: usize = 44;
const MMAP_ADDR: usize = 48;
const LOADER_NAME: usize = 64;
/// The block's size through the VBE fields (the framebuffer ones stay
/// unset).
const INFO_LEN: usize = 88;

/// Where the tables go, as offsets from the block.
const MODULE_OFFSET: usize = 0x80;
const MODULE_LEN: usize = 16;
const STRINGS_OFFSET: usize = 0x90;
const MMAP_OFFSET: usize = 0x100;
/// One memory map entry: its `size` word, then base, length and type.
const MMAP_ENTRY_LEN: usize = 24;
// The tables start past the block.
const _: () = assert!(INFO_LEN <= MODULE_OFFSET && STRINGS_OFFSET >= MODULE_OFFSET + MODULE_LEN);
/// The module's string (empty) and the loader's name, NUL-terminated.
const MODULE_STRING: &[u8] = b"\0";
const LOADER_NAME_STRING: &[u8] = b"tandem\0";

fn put(block: &mut [u8], offset: usize, value: u32) {
    block[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

/// A guest-physical address as a multiboot field, which is 32-bit.
fn addr32(what: &str, addr: u64) -> Result<u32> {
    u32::try_from(addr)
        .map_err(|_| Error::Config(format!("multiboot {what} at {addr:#x} is above 4 GiB")))
}

/// The information block and its tables as one page, for a block at
/// `base`.
pub fn info_page(base: u64, info: &BootInfo) -> Result<Vec<u8>> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    let at = |offset: usize| addr32("information", base + offset as u64);
    let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEMORY_MAP | INFO_LOADER_NAME;

    // mem_upper is the RAM contiguous from 1 MiB, in KiB, as BIOSes say it.
    let upper_end = info
        .e820
        .iter()
        .find(|e| e.kind == E820Kind::Ram && e.addr == HIMEM_START)
        .map_or(HIMEM_START, |e| e.addr + e.size);
    put(&mut page, MEM_LOWER, (EBDA_START >> 10) as u32);
    put(
        &mut page,
        MEM_UPPER,
        addr32("upper memory", (upper_end - HIMEM_START) >> 10)?,
    );
    put(&mut page, CMDLINE, addr32("command line", CMDLINE_ADDR)?);

    let strings = STRINGS_OFFSET;
    let name = strings + MODULE_STRING.len();
    page[strings..name].copy_from_slice(MODULE_STRING);
    page[name..name + LOADER_NAME_STRING.len()].copy_from_slice(LOADER_NAME_STRING);
    put(&mut page, LOADER_NAME, at(name)?);

    if let Some((start, size)) = info.initrd {
        flags |= INFO_MODULES;
        let end = start
            .checked_add(size)
            .ok_or_else(|| Error::Config("multiboot module size overflows".into()))?;
        let module = &mut page[MODULE_OFFSET..MODULE_OFFSET + MODULE_LEN];
        put(module, 0, addr32("module", start)?);
        put(module, 4, addr32("module end", end)?);
        put(module, 8, at(strings)?);
        put(&mut page, MODS_COUNT, 1);
        put(&mut page, MODS_ADDR, at(MODULE_OFFSET)?);
    }

    let mmap_len = info.e820.len() * MMAP_ENTRY_LEN;
    if MMAP_OFFSET + mmap_len > page.len() {
        return Err(Error::Config(format!(
            "multiboot memory map of {} entries does not fit its page",
            info.e820.len()
        )));
    }
    for (i, e) in info.e820.iter().enumerate() {
        let entry = &mut page[MMAP_OFFSET + i * MMAP_ENTRY_LEN..][..MMAP_ENTRY_LEN];
        // `size` counts the bytes after itself.
        put(entry, 0, (MMAP_ENTRY_LEN - 4) as u32);
        entry[4..12].copy_from_slice(&e.addr.to_le_bytes());
        entry[12..20].copy_from_slice(&e.size.to_le_bytes());
        put(entry, 20, e.kind as u32);
    }
    put(&mut page, MMAP_LENGTH, mmap_len as u32);
    put(&mut page, MMAP_ADDR, at(MMAP_OFFSET)?);
    put(&mut page, FLAGS, flags);
    Ok(page)
}

/// Writes the information block and its tables at [`MULTIBOOT_INFO_ADDR`].
pub fn write_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<()> {
    let page = info_page(MULTIBOOT_INFO_ADDR, info)?;
    mem.write_slice(&page, GuestAddress(MULTIBOOT_INFO_ADDR))
        .map_err(|e| Error::GuestMemory(format!("multiboot information: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::layout::e820_map;

    fn word(page: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(page[offset..offset + 4].try_into().unwrap())
    }

    fn c_string(page: &[u8], base: u64, addr: u32) -> &[u8] {
        let start = (u64::from(addr) - base) as usize;
        let len = page[start..].iter().position(|&b| b == 0).unwrap();
        &page[start..start + len]
    }

    #[test]
    fn block_describes_memory_cmdline_and_initrd() {
        let e820 = e820_map(128 << 20, None);
        let info = BootInfo {
            e820: &e820,
            cmdline_len: 10,
            initrd: Some((0x7f0_0000, 0x1234)),
            rsdp: 0xe_0000,
        };
        let page = info_page(0x7000, &info).unwrap();
        assert_eq!(word(&page, FLAGS), 0b10_0100_1101);
        assert_eq!(word(&page, MEM_LOWER), 639);
        assert_eq!(word(&page, MEM_UPPER), (127 << 20) >> 10);
        assert_eq!(word(&page, CMDLINE), CMDLINE_ADDR as u32);
        assert_eq!(c_string(&page, 0x7000, word(&page, LOADER_NAME)), b"tandem");
        assert_eq!(word(&page, MODS_COUNT), 1);
        let module = (word(&page, MODS_ADDR) - 0x7000) as usize;
        assert_eq!(
            (word(&page, module), word(&page, module + 4)),
            (0x7f0_0000, 0x7f0_1234),
            "end is exclusive"
        );
        assert_eq!(c_string(&page, 0x7000, word(&page, module + 8)), b"");

        assert_eq!(word(&page, MMAP_LENGTH) as usize, e820.len() * 24);
        let mut entry = (word(&page, MMAP_ADDR) - 0x7000) as usize;
        for e in &e820 {
            let size = word(&page, entry) as usize;
            let base = u64::from_le_bytes(page[entry + 4..entry + 12].try_into().unwrap());
            let len = u64::from_le_bytes(page[entry + 12..entry + 20].try_into().unwrap());
            assert_eq!(
                (base, len, word(&page, entry + 20)),
                (e.addr, e.size, e.kind as u32)
            );
            entry += size + 4;
        }
    }

    /// The information page of a VM of `memory` bytes with no initrd and
    /// no command line, and how many e820 entries it describes.
    fn bare_page(memory: u64) -> (Vec<u8>, usize) {
        let e820 = e820_map(memory, None);
        let info = BootInfo {
            e820: &e820,
            cmdline_len: 0,
            initrd: None,
            rsdp: 0,
        };
        (info_page(0x7000, &info).unwrap(), e820.len())
    }

    #[test]
    fn no_initrd_no_module() {
        let (page, _) = bare_page(64 << 20);
        assert_eq!(word(&page, FLAGS) & INFO_MODULES, 0);
        assert_eq!((word(&page, MODS_COUNT), word(&page, MODS_ADDR)), (0, 0));
    }

    #[test]
    fn upper_memory_stops_at_the_hole() {
        let (page, entries) = bare_page(5 << 30);
        assert_eq!(word(&page, MEM_UPPER), ((3 << 30) - (1 << 20)) >> 10);
        assert_eq!(word(&page, MMAP_LENGTH) as usize, entries * 24);
    }

    #[test]
    fn modules_above_4_gib_are_refused() {
        let e820 = e820_map(64 << 20, None);
        for initrd in [(0x1_0000_0000, 16), (0xffff_fff0, 0x20), (u64::MAX, 2)] {
            let info = BootInfo {
                e820: &e820,
                cmdline_len: 0,
                initrd: Some(initrd),
                rsdp: 0,
            };
            let err = info_page(0x7000, &info).unwrap_err().to_string();
            assert!(err.starts_with("multiboot module"), "{initrd:x?}: {err}");
        }
    }
}
