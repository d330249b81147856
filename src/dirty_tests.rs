//! Diff memory files: only dirty pages are written (zero pages included),
//! and rebasing one onto its base gives the later memory.

use std::io::Read;

use vm_memory::{GuestAddress, MemoryRegionAddress};
use vmm_sys_util::tempfile::TempFile;

use super::*;
use crate::memory::{map_guest_memory, save_guest_memory};

const PAGE: u64 = 4096;

/// Two regions of 8 and 4 pages, page n of each filled with byte n + 1.
fn memory() -> GuestMemoryMmap {
    let regions = [
        (GuestAddress(0), 8 * PAGE),
        (GuestAddress(0x10_0000), 4 * PAGE),
    ];
    let mem = map_guest_memory(&regions).unwrap();
    for region in mem.iter() {
        for n in 0..region.len() / PAGE {
            let fill = vec![n as u8 + 1; PAGE as usize];
            region
                .write_slice(&fill, MemoryRegionAddress(n * PAGE))
                .unwrap();
        }
    }
    mem
}

fn contents(file: &File) -> Vec<u8> {
    let mut data = Vec::new();
    file.try_clone().unwrap().read_to_end(&mut data).unwrap();
    data
}

fn temp_file() -> File {
    TempFile::new_with_prefix("/var/tmp/tandem-dirty")
        .unwrap()
        .into_file()
}

#[test]
fn a_diff_holds_the_dirty_pages_and_rebases_onto_its_base() {
    if arch::host_page_size().unwrap() != PAGE {
        eprintln!("skipped: the test's pages are 4 KiB, this host's are not");
        return;
    }
    let mem = memory();
    let base = temp_file();
    save_guest_memory(&mem, &base, false).unwrap();
    // Later: page 2 of region 0 rewritten, page 1 of region 1 zeroed.
    mem.write_slice(&[0xaa; PAGE as usize], GuestAddress(2 * PAGE))
        .unwrap();
    mem.write_slice(&[0; PAGE as usize], GuestAddress(0x10_0000 + PAGE))
        .unwrap();
    let dirty = DirtyPages {
        regions: vec![vec![1 << 2], vec![1 << 1]],
        page_size: PAGE,
    };
    assert_eq!(dirty.count(), 2);
    let mut diff = temp_file();
    save_dirty_memory(&mem, &diff, &dirty).unwrap();
    let total = 12 * PAGE;
    assert_eq!(diff.metadata().unwrap().len(), total);
    let data: Vec<(u64, u64)> =
        std::iter::successors(next_data(&mut diff, 0, total).unwrap(), |&(_, end)| {
            next_data(&mut diff, end, total).unwrap()
        })
        .collect();
    assert_eq!(
        data,
        [(2 * PAGE, 3 * PAGE), (9 * PAGE, 10 * PAGE)],
        "only the two dirty pages are data, the zeroed one included"
    );

    assert_eq!(rebase(&base, &mut diff).unwrap(), 2 * PAGE);
    let mut later = Vec::new();
    for region in mem.iter() {
        let mut bytes = vec![0u8; region.len() as usize];
        region
            .read_slice(&mut bytes, MemoryRegionAddress(0))
            .unwrap();
        later.extend(bytes);
    }
    assert_eq!(
        contents(&base),
        later,
        "the base now holds the later memory"
    );
}

#[test]
fn a_diff_of_another_size_is_refused() {
    let (base, mut diff) = (temp_file(), temp_file());
    base.set_len(8 * PAGE).unwrap();
    diff.set_len(4 * PAGE).unwrap();
    let err = rebase(&base, &mut diff).unwrap_err().to_string();
    assert!(err.contains("not the same VM"), "{err}");
}

#[test]
fn dirty_pages_come_as_runs_of_neighbours_within_each_region() {
    let mem = memory();
    // Region 0: pages 1, 2, 3 and 7; region 1: page 0 (a neighbour of
    // region 0's page 7 in the file, but another region).
    let dirty = DirtyPages {
        regions: vec![vec![0b1000_1110], vec![1]],
        page_size: PAGE,
    };
    let run = |addr: u64, offset: u64, pages: u64| DirtyRun {
        addr: GuestAddress(addr),
        offset: offset * PAGE,
        len: (pages * PAGE) as usize,
    };
    assert_eq!(
        dirty.runs(&mem, 1 << 20),
        [run(PAGE, 1, 3), run(7 * PAGE, 7, 1), run(0x10_0000, 8, 1)]
    );
    // At most two pages a run.
    assert_eq!(
        dirty.runs(&mem, 2 * PAGE as usize),
        [
            run(PAGE, 1, 2),
            run(3 * PAGE, 3, 1),
            run(7 * PAGE, 7, 1),
            run(0x10_0000, 8, 1)
        ]
    );
}
