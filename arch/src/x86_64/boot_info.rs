//! What the kernel reads at entry besides its registers: `boot_params`
//! (the zero page) for the 64-bit Linux boot protocol, or `hvm_start_info`
//! with its memory map and module list for PVH. Both carry the e820 map,
//! the command line, the initrd and the ACPI RSDP address.

use guest_memory::GuestMemoryMmap;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    E820Entry, CMDLINE_ADDR, PVH_INFO_ADDR, PVH_MEMMAP_ADDR, PVH_MODLIST_ADDR, ZERO_PAGE_ADDR,
};
use crate::{Error, Result};

/// 0xAA55 at the end of the boot sector.
const BOOT_FLAG: u16 = 0xaa55;
/// "HdrS".
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader` for a loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;
/// Alignment Linux assumes for kernels without a setup header (16 MiB).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// `hvm_start_info.magic`.
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Everything both boot protocols hand over.
#[derive(Clone, Copy, Debug)]
pub struct BootInfo<'a> {
    /// The e820 map.
    pub e820: &'a [E820Entry],
    /// Length of the command line at `CMDLINE_ADDR`, without its NUL.
    pub cmdline_len: usize,
    /// Initrd (address, size), if any.
    pub initrd: Option<(u64, u64)>,
    /// Address of the ACPI RSDP.
    pub rsdp: u64,
}

fn memory_err(what: &str) -> impl Fn(vm_memory::GuestMemoryError) -> Error + '_ {
    move |e| Error::GuestMemory(format!("{what}: {e}"))
}

/// The zero page for the 64-bit boot protocol. `header` is the bzImage's
/// setup header; an ELF kernel gets a minimal one.
pub fn zero_page(header: Option<setup_header>, info: &BootInfo) -> Result<boot_params> {
    let mut params = boot_params {
        hdr: header.unwrap_or_else(|| setup_header {
            kernel_alignment: DEFAULT_KERNEL_ALIGNMENT,
            ..Default::default()
        }),
        ..Default::default()
    };
    params.hdr.boot_flag = BOOT_FLAG;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    params.acpi_rsdp_addr = info.rsdp;
    if info.e820.len() > params.e820_table.len() {
        return Err(Error::Config(format!(
            "{} e820 entries do not fit the zero page",
            info.e820.len()
        )));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(info.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    params.e820_entries = info.e820.len() as u8;
    Ok(params)
}

/// Writes the zero page to [`ZERO_PAGE_ADDR`].
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    info: &BootInfo,
) -> Result<()> {
    mem.write_obj(zero_page(header, info)?, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(memory_err("zero page"))
}

/// The PVH start info and the tables it points at.
pub fn start_info(
    info: &BootInfo,
) -> (
    hvm_start_info,
    Vec<hvm_memmap_table_entry>,
    Vec<hvm_modlist_entry>,
) {
    let memmap: Vec<_> = info
        .e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind as u32,
            reserved: 0,
        })
        .collect();
    let modules: Vec<_> = info
        .initrd
        .iter()
        .map(|&(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .collect();
    let start = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_ADDR
        },
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: info.rsdp,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    (start, memmap, modules)
}

/// Writes the PVH start info at [`PVH_INFO_ADDR`] and its tables.
pub fn write_start_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<()> {
    let (start, memmap, modules) = start_info(info);
    let room = (super::layout::ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) as usize;
    if memmap.len() * std::mem::size_of::<hvm_memmap_table_entry>() > room {
        return Err(Error::Config("PVH memory map too large".into()));
    }
    mem.write_obj(start, GuestAddress(PVH_INFO_ADDR))
        .map_err(memory_err("PVH start info"))?;
    for (i, module) in modules.into_iter().enumerate() {
        let addr = PVH_MODLIST_ADDR + (i * std::mem::size_of::<hvm_modlist_entry>()) as u64;
        mem.write_obj(module, GuestAddress(addr))
            .map_err(memory_err("PVH module list"))?;
    }
    for (i, entry) in memmap.into_iter().enumerate() {
        let addr = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        mem.write_obj(entry, GuestAddress(addr))
            .map_err(memory_err("PVH memory map"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::layout::{e820_map, E820Kind};

    const MIB: u64 = 1 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn zero_page_fields() {
        let e820 = e820_map(5 << 30, None);
        let info = BootInfo {
            e820: &e820,
            cmdline_len: 42,
            initrd: Some((0x7f00_0000, 3 * MIB)),
            rsdp: 0xe_0000,
        };
        let bzimage_header = setup_header {
            version: 0x020f,
            setup_sects: 30,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let m = mem();
        write_zero_page(&m, Some(bzimage_header), &info).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let hdr = p.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.header }, HDRS_MAGIC);
        assert_eq!({ hdr.version }, 0x020f, "bzImage header kept");
        assert_eq!({ hdr.setup_sects }, 30);
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!(({ hdr.cmd_line_ptr }, { hdr.cmdline_size }), (0x2_0000, 42));
        assert_eq!(
            ({ hdr.ramdisk_image }, { hdr.ramdisk_size }),
            (0x7f00_0000, 3 << 20)
        );
        assert_eq!(({ p.ext_ramdisk_image }, { p.ext_ramdisk_size }), (0, 0));
        assert_eq!({ p.acpi_rsdp_addr }, 0xe_0000);
        assert_eq!(usize::from(p.e820_entries), e820.len());
        for (raw, e) in p.e820_table.iter().zip(&e820) {
            assert_eq!(
                ({ raw.addr }, { raw.size }, { raw.r#type }),
                (e.addr, e.size, e.kind as u32)
            );
        }
        assert_eq!({ p.e820_table[e820.len()].size }, 0);
    }

    #[test]
    fn elf_kernels_get_a_minimal_header() {
        let e820 = e820_map(256 * MIB, None);
        let info = BootInfo {
            e820: &e820,
            cmdline_len: 0,
            initrd: None,
            rsdp: 0xe_0000,
        };
        let p = zero_page(None, &info).unwrap();
        let hdr = p.hdr;
        assert_eq!(({ hdr.header }, { hdr.boot_flag }), (HDRS_MAGIC, BOOT_FLAG));
        assert_eq!({ hdr.kernel_alignment }, DEFAULT_KERNEL_ALIGNMENT);
        assert_eq!(({ hdr.ramdisk_image }, { hdr.ramdisk_size }), (0, 0));
    }

    #[test]
    fn pvh_start_info_in_memory() {
        let e820 = e820_map(6 << 30, None);
        let info = BootInfo {
            e820: &e820,
            cmdline_len: 10,
            initrd: Some((0xbf00_0000, 5 * MIB)),
            rsdp: 0xe_0000,
        };
        let m = mem();
        write_start_info(&m, &info).unwrap();
        let s: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!((s.magic, s.version), (XEN_HVM_START_MAGIC, 1));
        assert_eq!((s.cmdline_paddr, s.rsdp_paddr), (CMDLINE_ADDR, 0xe_0000));
        assert_eq!((s.nr_modules, s.modlist_paddr), (1, PVH_MODLIST_ADDR));
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(s.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), (0xbf00_0000, 5 * MIB));
        assert_eq!(s.memmap_entries as usize, e820.len());
        for (i, e) in e820.iter().enumerate() {
            let addr = s.memmap_paddr + i as u64 * 24;
            let entry: hvm_memmap_table_entry = m.read_obj(GuestAddress(addr)).unwrap();
            assert_eq!(
                (entry.addr, entry.size, entry.type_),
                (e.addr, e.size, e.kind as u32)
            );
        }
        let last = e820.last().unwrap();
        assert_eq!((last.addr, last.kind), (4 << 30, E820Kind::Ram));
        assert!(s.memmap_paddr + e820.len() as u64 * 24 <= ZERO_PAGE_ADDR);
        assert!(PVH_MODLIST_ADDR >= PVH_INFO_ADDR + std::mem::size_of::<hvm_start_info>() as u64);
    }

    #[test]
    fn pvh_without_initrd_has_no_modules() {
        let e820 = e820_map(128 * MIB, None);
        let info = BootInfo {
            e820: &e820,
            cmdline_len: 0,
            initrd: None,
            rsdp: 0xe_0000,
        };
        let (s, _, modules) = start_info(&info);
        assert_eq!((s.nr_modules, s.modlist_paddr), (0, 0));
        assert!(modules.is_empty());
    }
}
