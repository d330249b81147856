//! Boot page tables for the 64-bit entry: the first 4 GiB identity-mapped
//! with 2 MiB pages, enough for the kernel, its boot data and an initrd
//! anywhere below the hole. Linux replaces them early in boot.

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress};

use super::layout::{CMDLINE_ADDR, PML4_ADDR};
use crate::{Error, Result};

const PAGE_TABLE_SIZE: u64 = 4096;
/// Present + writable.
const TABLE_FLAGS: u64 = 0x3;
/// Present + writable + page size (a 2 MiB leaf in a page directory).
const HUGE_PAGE_FLAGS: u64 = 0x83;
const HUGE_PAGE_SIZE: u64 = 2 << 20;
/// One PDPT entry, hence one page directory, per GiB.
pub const MAPPED_GIB: u64 = 4;

/// Where the PDPT lives.
pub const PDPT_ADDR: u64 = PML4_ADDR + PAGE_TABLE_SIZE;
/// Where the first page directory lives; the others follow it.
pub const PD_ADDR: u64 = PDPT_ADDR + PAGE_TABLE_SIZE;
/// First byte after the page tables.
pub const PAGE_TABLES_END: u64 = PD_ADDR + MAPPED_GIB * PAGE_TABLE_SIZE;
const _: () = assert!(
    PAGE_TABLES_END <= CMDLINE_ADDR,
    "page tables overrun the command line"
);

/// Writes the tables and returns the value for CR3.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<u64> {
    let write = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(|e| Error::GuestMemory(format!("page table at {addr:#x}: {e}")))
    };
    write(PDPT_ADDR | TABLE_FLAGS, PML4_ADDR)?;
    for gib in 0..MAPPED_GIB {
        let pd = PD_ADDR + gib * PAGE_TABLE_SIZE;
        write(pd | TABLE_FLAGS, PDPT_ADDR + gib * 8)?;
        for entry in 0..512 {
            let phys = (gib * 512 + entry) * HUGE_PAGE_SIZE;
            write(phys | HUGE_PAGE_FLAGS, pd + entry * 8)?;
        }
    }
    Ok(PML4_ADDR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86_64::layout::ZERO_PAGE_ADDR;

    /// Walks 4-level paging the way the CPU does; `None` if unmapped.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, vaddr: u64) -> Option<u64> {
        let addr_mask = 0x000f_ffff_ffff_f000u64;
        let read = |table: u64, index: u64| -> u64 {
            mem.read_obj(GuestAddress((table & addr_mask) + index * 8))
                .unwrap()
        };
        let pml4e = read(cr3, (vaddr >> 39) & 0x1ff);
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte = read(pml4e, (vaddr >> 30) & 0x1ff);
        if pdpte & 1 == 0 || pdpte & 0x80 != 0 {
            return None;
        }
        let pde = read(pdpte, (vaddr >> 21) & 0x1ff);
        if pde & 1 == 0 || pde & 0x80 == 0 {
            return None; // only 2 MiB leaves are expected here
        }
        Some((pde & 0x000f_ffff_ffe0_0000) | (vaddr & (HUGE_PAGE_SIZE - 1)))
    }

    #[test]
    fn identity_maps_the_first_4_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let cr3 = write_identity_page_tables(&mem).unwrap();
        for addr in [
            0,
            ZERO_PAGE_ADDR,
            0x100_0000 + 0x1234,
            (1 << 30) - 1,
            1 << 30,
            0xc000_0000,
            0xfee0_0000,
            (4 << 30) - 1,
        ] {
            assert_eq!(translate(&mem, cr3, addr), Some(addr), "{addr:#x}");
        }
        assert_eq!(translate(&mem, cr3, 4 << 30), None, "5th GiB unmapped");
        assert_eq!(
            translate(&mem, cr3, 1 << 39),
            None,
            "2nd PML4 slot unmapped"
        );
    }
}
