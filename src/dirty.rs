//! Which guest pages were written since the last snapshot, for diff
//! snapshots: KVM's dirty log covers the vCPUs' writes (memory slots
//! registered with `KVM_MEM_LOG_DIRTY_PAGES`), the regions' bitmaps
//! (crate guest-memory) cover tandem's own — devices filling buffers and
//! used rings, which KVM never sees. Taking the pages clears both logs, so
//! each snapshot, full or diff, is where the next diff starts.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use guest_memory::{dirty_bitmap, GuestMemoryMmap};
use kvm_ioctls::VmFd;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::seek_hole::SeekHole;

use crate::config::RebaseArgs;

/// Neighbouring dirty pages of one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirtyRun {
    /// Where the run starts in guest memory.
    pub addr: GuestAddress,
    /// Where it starts in a memory file (regions back to back).
    pub offset: u64,
    /// Its length in bytes.
    pub len: usize,
}

/// Pages written since the logs were last taken: per region (in `mem`'s
/// order), one bit per host page, in u64 words as KVM returns them.
#[derive(Debug, PartialEq, Eq)]
pub struct DirtyPages {
    regions: Vec<Vec<u64>>,
    page_size: u64,
}

impl DirtyPages {
    /// Whether page `page` of region `region` was written.
    fn is_dirty(&self, region: usize, page: u64) -> bool {
        self.regions[region]
            .get((page / 64) as usize)
            .is_some_and(|word| word & (1 << (page % 64)) != 0)
    }

    /// Puts these pages back into the regions' bitmaps, for a snapshot
    /// that failed after taking them: the next diff then has them too.
    pub fn keep_for_next(&self, mem: &GuestMemoryMmap) {
        for (index, region) in mem.iter().enumerate() {
            for page in 0..region.len() / self.page_size {
                if self.is_dirty(index, page) {
                    let offset = (page * self.page_size) as usize;
                    dirty_bitmap(region).set_addr_range(offset, self.page_size as usize);
                }
            }
        }
    }

    /// The dirty pages of `mem` as runs of neighbours, none longer than
    /// `max_len` bytes (a multiple of the page size).
    pub fn runs(&self, mem: &GuestMemoryMmap, max_len: usize) -> Vec<DirtyRun> {
        let page = self.page_size as usize;
        let mut runs: Vec<DirtyRun> = Vec::new();
        let mut file_offset = 0;
        for (index, region) in mem.iter().enumerate() {
            // Runs never cross regions: neighbours in the file need not be
            // in guest memory.
            let first = runs.len();
            for n in (0..region.len() / self.page_size).filter(|&n| self.is_dirty(index, n)) {
                let at = n * self.page_size;
                match runs[first..].last_mut() {
                    Some(run)
                        if run.offset + run.len as u64 == file_offset + at && run.len < max_len =>
                    {
                        run.len += page;
                    }
                    _ => runs.push(DirtyRun {
                        addr: region.start_addr().unchecked_add(at),
                        offset: file_offset + at,
                        len: page,
                    }),
                }
            }
            file_offset += region.len();
        }
        runs
    }

    /// How many pages were written.
    pub fn count(&self) -> u64 {
        let words = self.regions.iter().flatten();
        words.map(|word| u64::from(word.count_ones())).sum()
    }
}

/// Takes (and clears) both logs of `mem`, whose regions are KVM slots 0,
/// 1, … of `vm` registered with dirty logging. The VM must be paused, its
/// device workers parked: nothing may write while the logs are read.
pub fn take_dirty_pages(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<DirtyPages> {
    let page_size = arch::host_page_size()?;
    let regions = mem
        .iter()
        .enumerate()
        .map(|(slot, region)| {
            let mut words = vm
                .get_dirty_log(slot as u32, region.len() as usize)
                .with_context(|| format!("KVM_GET_DIRTY_LOG of memory slot {slot}"))?;
            let bitmap = dirty_bitmap(region);
            for (page, offset) in (0..region.len()).step_by(page_size as usize).enumerate() {
                if bitmap.is_addr_set(offset as usize) {
                    words[page / 64] |= 1 << (page % 64);
                }
            }
            bitmap.reset();
            Ok(words)
        })
        .collect::<Result<_>>()?;
    Ok(DirtyPages { regions, page_size })
}

/// Marks every page of `mem` written, in the regions' bitmaps.
pub fn mark_all(mem: &GuestMemoryMmap) {
    for region in mem.iter() {
        dirty_bitmap(region).set_addr_range(0, region.len() as usize);
    }
}

/// Writes the `dirty` pages of `mem` to `file` at their offsets in a full
/// memory file (regions back to back), leaving the rest as holes: a page
/// written since the last snapshot is data even if it is now all zeros,
/// and a hole means "as in the snapshot before" (see [`rebase`]).
pub fn save_dirty_memory(mem: &GuestMemoryMmap, file: &File, dirty: &DirtyPages) -> Result<()> {
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(total).context("sizing the memory file")?;
    let mut buf = Vec::new();
    for run in dirty.runs(mem, 1 << 20) {
        buf.resize(run.len, 0);
        mem.read_slice(&mut buf, run.addr)
            .context("reading guest memory")?;
        file.write_all_at(&buf, run.offset)
            .context("writing guest memory")?;
    }
    Ok(())
}

/// Copies the data of the diff memory file `diff` (everything but its
/// holes) onto the memory file `base` at the same offsets: `base` then
/// holds the memory of the later snapshot. Returns the bytes copied.
pub fn rebase(base: &File, diff: &mut File) -> Result<u64> {
    let (base_len, diff_len) = (base.metadata()?.len(), diff.metadata()?.len());
    if base_len != diff_len {
        anyhow::bail!(
            "the diff memory file holds {diff_len} bytes, the base {base_len}: not the same VM"
        );
    }
    let copied = for_each_data_chunk(diff, 0..diff_len, |offset, bytes| {
        base.write_all_at(bytes, offset)
            .context("writing the base memory file")
    })?;
    base.sync_all().context("syncing the base memory file")?;
    Ok(copied)
}

/// `tandem rebase-memory`: [`rebase`] on the files the arguments name.
pub fn rebase_files(args: &RebaseArgs) -> Result<u64> {
    let open = |path: &std::path::Path, write| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .with_context(|| format!("memory file {}", path.display()))
    };
    let base = open(&args.memory_path, true)?;
    let mut diff = open(&args.diff_path, false)?;
    rebase(&base, &mut diff)
}

/// Reads the data of `file` in `range` (its holes skipped) in chunks of at
/// most 1 MiB and hands each to `chunk` with its offset; returns the bytes
/// read.
pub fn for_each_data_chunk(
    file: &mut File,
    range: std::ops::Range<u64>,
    mut chunk: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let (mut at, mut read) = (range.start, 0);
    while let Some((start, stop)) = next_data(file, at, range.end)? {
        let mut offset = start;
        while offset < stop {
            let len = ((stop - offset) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..len], offset)
                .context("reading the memory file")?;
            chunk(offset, &buf[..len])?;
            offset += len as u64;
        }
        read += stop - start;
        at = stop;
    }
    Ok(read)
}

/// The next range of data (not a hole) of `file` at or after `from`,
/// ending at `len` at the latest.
fn next_data(file: &mut File, from: u64, len: u64) -> Result<Option<(u64, u64)>> {
    if from >= len {
        return Ok(None);
    }
    let holes = "finding the data in the memory file";
    let Some(start) = file.seek_data(from).context(holes)? else {
        return Ok(None);
    };
    if start >= len {
        return Ok(None);
    }
    let end = file
        .seek_hole(start)
        .context(holes)?
        .unwrap_or(len)
        .min(len);
    Ok(Some((start, end)))
}

#[cfg(test)]
#[path = "dirty_tests.rs"]
mod tests;
