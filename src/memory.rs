//! Guest RAM: mmaps the regions the back end chose and registers each one
//! with KVM as a memory slot. The two steps are separate because the second
//! is slow (milliseconds per 128 MiB in KVM) and needs nothing but the
//! mapping, so the boot path overlaps it with the rest of the build.
//! Snapshots write RAM to a file region after region (all-zero chunks as
//! holes), and restore maps that file privately, so pages are read only
//! when the guest touches them and the guest's writes never reach the file.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use guest_memory::{GuestMemoryMmap, GuestRegionMmap};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Maps `regions` (start, size) and hands them to KVM.
pub fn create_guest_memory(vm: &VmFd, regions: &[(GuestAddress, u64)]) -> Result<GuestMemoryMmap> {
    let mem = map_guest_memory(regions)?;
    register_guest_memory(vm, &mem, false)?;
    Ok(mem)
}

/// Maps `regions` (start, size) in this process, each where KVM can give
/// the guest 2 MiB pages ([`guest_memory::map_anonymous`]).
pub fn map_guest_memory(regions: &[(GuestAddress, u64)]) -> Result<GuestMemoryMmap> {
    let mapped = regions
        .iter()
        .map(|&(start, size)| {
            guest_memory::map_anonymous(start, usize::try_from(size)?)
                .with_context(|| format!("cannot map {} MiB of guest memory", size >> 20))
        })
        .collect::<Result<Vec<_>>>()?;
    GuestMemoryMmap::from_regions(mapped).context("guest memory regions overlap")
}

/// Anonymous RAM for `regions` (start, size) holding what `file` holds
/// (back to back, as [`save_guest_memory`] wrote them), read at once: its
/// data only, holes skipped and left untouched. For a restored VM whose
/// writes must all show in the dirty-page logs, which miss pages of a
/// RAM mapped from a file (docs/snapshots.md, "Dirty pages"). The logs
/// start clean: the loading writes are not the guest's.
pub fn load_guest_memory_from_file(
    regions: &[(GuestAddress, u64)],
    file: &mut File,
) -> Result<GuestMemoryMmap> {
    let total: u64 = regions.iter().map(|r| r.1).sum();
    check_memory_file(file, total)?;
    let mem = map_guest_memory(regions)?;
    let mut base = 0;
    for region in mem.iter() {
        let end = base + region.len();
        crate::dirty::for_each_data_chunk(file, base..end, |offset, bytes| {
            let addr = region.start_addr().unchecked_add(offset - base);
            mem.write_slice(bytes, addr).context("loading guest memory")
        })?;
        guest_memory::dirty_bitmap(region).reset();
        base = end;
    }
    Ok(mem)
}

/// Refuses a memory file that is not `total` bytes long.
fn check_memory_file(file: &File, total: u64) -> Result<()> {
    let len = file.metadata().context("memory file")?.len();
    if len != total {
        bail!(
            "the memory file holds {len} bytes, the VM has {total} bytes of RAM (not this snapshot's memory?)"
        );
    }
    Ok(())
}

/// Maps `regions` (start, size) from `file`, which holds them back to
/// back as [`save_guest_memory`] wrote them: privately (a snapshot's file
/// stays as it is), or `shared` (a migration's memory file, which no one
/// else needs: no page is held twice).
pub fn map_guest_memory_from_file(
    regions: &[(GuestAddress, u64)],
    file: &File,
    shared: bool,
) -> Result<GuestMemoryMmap> {
    let total: u64 = regions.iter().map(|r| r.1).sum();
    check_memory_file(file, total)?;
    let mut offset = 0;
    let mut mapped = Vec::with_capacity(regions.len());
    for &(start, size) in regions {
        let file_offset = FileOffset::new(file.try_clone().context("memory file")?, offset);
        let mapping = MmapRegionBuilder::new(usize::try_from(size)?)
            .with_file_offset(file_offset)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(match shared {
                true => libc::MAP_SHARED,
                false => libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            })
            .build()
            .with_context(|| format!("cannot map {} MiB of the memory file", size >> 20))?;
        let region = GuestRegionMmap::new(mapping, start)
            .context("a guest memory region wraps around the address space")?;
        mapped.push(region);
        offset += size;
    }
    GuestMemoryMmap::from_regions(mapped).context("guest memory regions overlap")
}

/// Granule of [`save_guest_memory`]'s zero check: large enough for few
/// system calls, small enough that a guest's scattered pages stay sparse.
const SAVE_CHUNK: usize = 64 << 10;

/// Writes every region of `mem`, in order, to `file`, leaving all-zero
/// chunks as holes: the file reads back the same, but RAM the guest never
/// wrote costs neither disk space nor write time. With `anonymous` (RAM
/// from [`map_guest_memory`], not a file) chunks whose pages were never
/// given memory are skipped without reading them.
pub fn save_guest_memory(mem: &GuestMemoryMmap, file: &File, anonymous: bool) -> Result<()> {
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(total).context("sizing the memory file")?;
    let untouched = match anonymous {
        true => Untouched::open().ok(),
        false => None,
    };
    let mut buf = vec![0u8; SAVE_CHUNK];
    let mut offset = 0;
    for region in mem.iter() {
        let mut done = 0;
        while done < region.len() {
            let len = (region.len() - done).min(SAVE_CHUNK as u64) as usize;
            let host = region.as_ptr() as u64 + done;
            if !untouched.as_ref().is_some_and(|u| u.all(host, len)) {
                let chunk = &mut buf[..len];
                mem.read_slice(chunk, region.start_addr().unchecked_add(done))
                    .context("reading guest memory")?;
                if chunk.iter().any(|&b| b != 0) {
                    file.write_all_at(chunk, offset + done)
                        .context("writing guest memory")?;
                }
            }
            done += len as u64;
        }
        offset += region.len();
    }
    Ok(())
}

/// Which pages of this process's anonymous mappings were never given
/// memory (/proc/self/pagemap: neither present nor swapped), so read as
/// zero without being read.
struct Untouched {
    pagemap: File,
    page_size: u64,
}

impl Untouched {
    fn open() -> Result<Untouched> {
        Ok(Untouched {
            pagemap: File::open("/proc/self/pagemap")?,
            page_size: arch::host_page_size()?,
        })
    }

    /// Whether no page of `len` bytes at host address `addr` has memory;
    /// false if pagemap cannot tell.
    fn all(&self, addr: u64, len: usize) -> bool {
        const PRESENT_OR_SWAPPED: u64 = 3 << 62;
        let first = addr / self.page_size;
        let pages = (addr + len as u64).div_ceil(self.page_size) - first;
        let mut entries = vec![0u8; pages as usize * 8];
        self.pagemap.read_exact_at(&mut entries, first * 8).is_ok()
            && entries.chunks_exact(8).all(|entry| {
                u64::from_le_bytes(entry.try_into().unwrap()) & PRESENT_OR_SWAPPED == 0
            })
    }
}

/// Hands every region of `mem` to KVM as a memory slot, with KVM's dirty
/// log on if `log_dirty` (src/dirty.rs).
pub fn register_guest_memory(vm: &VmFd, mem: &GuestMemoryMmap, log_dirty: bool) -> Result<()> {
    let flags = match log_dirty {
        true => KVM_MEM_LOG_DIRTY_PAGES,
        false => 0,
    };
    for (slot, region) in mem.iter().enumerate() {
        let kvm_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping owned by `mem` of exactly
        // `memory_size` bytes, and `mem` outlives the VM: the VMM keeps it
        // until after every vCPU thread has been joined.
        unsafe { vm.set_user_memory_region(kvm_region) }
            .with_context(|| format!("KVM refused memory slot {slot}"))?;
    }
    Ok(())
}

/// Resident memory of this process, split into guest RAM and the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssReport {
    /// Guest RAM pages that are resident, KiB.
    pub guest_kib: u64,
    /// Everything else resident now (the VMM's own cost), KiB.
    pub vmm_kib: u64,
    /// Peak resident set of the whole process (VmHWM), KiB.
    pub peak_kib: u64,
}

impl RssReport {
    /// Peak resident memory beyond guest RAM: guest RAM never shrinks
    /// while the VM lives, so the peak minus what the guest holds now
    /// bounds the VMM's own peak from above.
    pub fn vmm_peak_kib(&self) -> u64 {
        self.peak_kib.saturating_sub(self.guest_kib)
    }
}

/// Reads /proc/self/smaps and /proc/self/status to split resident memory
/// between the mappings of `mem` and everything else.
pub fn rss_report(mem: &GuestMemoryMmap) -> std::io::Result<RssReport> {
    let guest: Vec<(u64, u64)> = mem
        .iter()
        .map(|r| (r.as_ptr() as u64, r.as_ptr() as u64 + r.len()))
        .collect();
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(split_rss(&smaps, &status, &guest))
}

/// Sums `Rss:` of the smaps entries overlapping `guest` (host address
/// ranges) apart from the rest, and takes the peak from `VmHWM:`.
fn split_rss(smaps: &str, status: &str, guest: &[(u64, u64)]) -> RssReport {
    let mut report = RssReport::default();
    let mut in_guest = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
            {
                // Overlap, not containment: the kernel may merge a guest
                // mapping with a neighbouring one into a single entry.
                in_guest = guest.iter().any(|&(s, e)| start < e && end > s);
                continue;
            }
        }
        if let Some(kib) = kib_field(line, "Rss:") {
            if in_guest {
                report.guest_kib += kib;
            } else {
                report.vmm_kib += kib;
            }
        }
    }
    report.peak_kib = status
        .lines()
        .find_map(|l| kib_field(l, "VmHWM:"))
        .unwrap_or(0);
    report
}

/// The number of `name:   123 kB` lines.
fn kib_field(line: &str, name: &str) -> Option<u64> {
    line.strip_prefix(name)?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn pages_never_written_are_told_from_written_ones() {
        let mem = map_guest_memory(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let base = mem.iter().next().unwrap().as_ptr() as u64;
        let untouched = Untouched::open().unwrap();
        assert!(untouched.all(base, SAVE_CHUNK));
        mem.write_slice(&[1], GuestAddress(SAVE_CHUNK as u64 + 5))
            .unwrap();
        assert!(untouched.all(base, SAVE_CHUNK));
        assert!(!untouched.all(base + SAVE_CHUNK as u64, SAVE_CHUNK));
    }

    /// Two regions, 1 and 2 MiB, 3 MiB apart in guest memory.
    const SAMPLE_REGIONS: [(GuestAddress, u64); 2] =
        [(GuestAddress(0), 1 << 20), (GuestAddress(4 << 20), 4 << 20)];

    /// [`SAMPLE_REGIONS`] holding "first" at 0x1234 and "second" at the
    /// very end, saved to a memory file; its folder and path.
    fn saved_sample() -> (vmm_sys_util::tempdir::TempDir, std::path::PathBuf) {
        let mem = map_guest_memory(&SAMPLE_REGIONS).unwrap();
        mem.write_slice(b"first", GuestAddress(0x1234)).unwrap();
        mem.write_slice(b"second", GuestAddress((8 << 20) - 6))
            .unwrap();
        let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
        let path = dir.as_path().join("mem");
        save_guest_memory(&mem, &File::create(&path).unwrap(), true).unwrap();
        (dir, path)
    }

    #[test]
    fn saved_memory_loads_into_anonymous_ram_with_clean_bitmaps() {
        let (_dir, path) = saved_sample();
        let regions = SAMPLE_REGIONS;

        let mut file = File::open(&path).unwrap();
        let loaded = load_guest_memory_from_file(&regions, &mut file).unwrap();
        let mut buf = [0u8; 6];
        loaded
            .read_slice(&mut buf[..5], GuestAddress(0x1234))
            .unwrap();
        assert_eq!(&buf[..5], b"first");
        loaded
            .read_slice(&mut buf, GuestAddress((8 << 20) - 6))
            .unwrap();
        assert_eq!(&buf, b"second");
        // Loading is not the guest writing: no page is dirty yet.
        for region in loaded.iter() {
            let bitmap = guest_memory::dirty_bitmap(region);
            assert!((0..region.len() as usize)
                .step_by(4096)
                .all(|at| !bitmap.is_addr_set(at)));
        }
        // Holes are left untouched: only the two data chunks have pages
        // (with transparent huge pages, the 2 MiB pages around them:
        // region 2's first half stays empty).
        let untouched = Untouched::open().unwrap();
        let second_region = loaded.iter().nth(1).unwrap().as_ptr() as u64;
        assert!(untouched.all(second_region, SAVE_CHUNK));
        // Anonymous: the guest's writes stay in this process.
        loaded.write_slice(b"THIRD", GuestAddress(0x1234)).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[0x1234..0x1239], b"first");
    }

    #[test]
    fn saved_memory_maps_back_the_same_sparse_and_private() {
        let (dir, path) = saved_sample();
        let regions = SAMPLE_REGIONS;
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 5 << 20);
        // Two written 64 KiB chunks; the rest are holes.
        assert!(
            meta.blocks() * 512 <= 4 * SAVE_CHUNK as u64,
            "{} blocks",
            meta.blocks()
        );

        let file = File::open(&path).unwrap();
        let restored = map_guest_memory_from_file(&regions, &file, false).unwrap();
        let mut buf = [0u8; 6];
        restored
            .read_slice(&mut buf[..5], GuestAddress(0x1234))
            .unwrap();
        assert_eq!(&buf[..5], b"first");
        restored
            .read_slice(&mut buf, GuestAddress((8 << 20) - 6))
            .unwrap();
        assert_eq!(&buf, b"second");
        // The guest's writes stay in this process.
        restored
            .write_slice(b"THIRD", GuestAddress(0x1234))
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[0x1234..0x1239], b"first");
        // Saved again from the file mapping (pages not read yet are the
        // file's, not zero): the guest's write and the old data are there.
        let again = dir.as_path().join("again");
        save_guest_memory(&restored, &File::create(&again).unwrap(), false).unwrap();
        let bytes = std::fs::read(&again).unwrap();
        assert_eq!(&bytes[0x1234..0x1239], b"THIRD");
        assert_eq!(&bytes[(5 << 20) - 6..], b"second");
        // A file of another size is not this VM's memory.
        let wrong = [(GuestAddress(0), 1 << 20)];
        let err = map_guest_memory_from_file(&wrong, &file, false).unwrap_err();
        assert!(err.to_string().contains("memory file holds"), "{err}");
    }

    #[test]
    fn guest_mappings_are_split_from_the_vmms_own() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 fe:01 123  /usr/bin/tandem
Size:               1024 kB
Rss:                 700 kB
7f0000000000-7f0020000000 rw-p 00000000 00:00 0
Size:             524288 kB
Rss:              100000 kB
7f0020000000-7f0020200000 rw-p 00000000 00:00 0
Rss:                 300 kB
";
        let status = "Name:\ttandem\nVmHWM:\t  101500 kB\nVmRSS:\t  101000 kB\n";
        let report = split_rss(smaps, status, &[(0x7f00_0000_0000, 0x7f00_2000_0000)]);
        assert_eq!(
            report,
            RssReport {
                guest_kib: 100_000,
                vmm_kib: 1000,
                peak_kib: 101_500
            }
        );
        assert_eq!(report.vmm_peak_kib(), 1500);
    }
}
