//! Giving guest pages back to the host: turns the 4 KiB page frame numbers
//! a balloon driver hands over into runs of whole host pages inside guest
//! RAM, and drops them from the host mapping with MADV_DONTNEED. Anything
//! outside guest RAM (past its end, in an MMIO hole) is refused, never
//! touched.

use std::io;

use guest_memory::GuestMemoryMmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// The balloon's page size: the spec's 4 KiB, whatever the host uses.
pub const BALLOON_PAGE: u64 = 4096;

/// A guest-physical byte range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Runs of consecutive PFNs inside one RAM region each, and how many PFNs
/// were refused for lying (partly) outside guest RAM. Duplicates count
/// once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Coalesced {
    /// Byte ranges, sorted, each inside one region.
    pub ranges: Vec<Range>,
    /// Distinct PFNs inside guest RAM.
    pub pages: u64,
    /// PFNs outside guest RAM.
    pub refused: u64,
}

/// Sorts and merges `pfns` into ranges that never cross a region edge.
pub fn coalesce(mem: &GuestMemoryMmap, pfns: &mut [u32]) -> Coalesced {
    pfns.sort_unstable();
    let mut out = Coalesced::default();
    let mut last: Option<u32> = None;
    for &pfn in pfns.iter() {
        if last == Some(pfn) {
            continue;
        }
        last = Some(pfn);
        let start = u64::from(pfn) * BALLOON_PAGE;
        let Some(region_end) = region_end_of(mem, start) else {
            out.refused += 1;
            continue;
        };
        if start + BALLOON_PAGE > region_end {
            out.refused += 1;
            continue;
        }
        out.pages += 1;
        match out.ranges.last_mut() {
            // Merging is safe only within the same region: a region that
            // ends exactly here would otherwise be merged across.
            Some(run) if run.end == start && region_end_of(mem, run.start) == Some(region_end) => {
                run.end += BALLOON_PAGE;
            }
            _ => out.ranges.push(Range {
                start,
                end: start + BALLOON_PAGE,
            }),
        }
    }
    out
}

/// The end of the RAM region holding `addr`, if any.
fn region_end_of(mem: &GuestMemoryMmap, addr: u64) -> Option<u64> {
    let region = mem.find_region(GuestAddress(addr))?;
    Some(region.start_addr().0 + region.len())
}

/// `range` shrunk to whole host pages of `host_page` bytes; `None` if no
/// whole host page is left (a 4 KiB balloon page on a 64 KiB host).
pub fn align_to_host(range: Range, host_page: u64) -> Option<Range> {
    let start = range.start.checked_next_multiple_of(host_page)?;
    let end = range.end / host_page * host_page;
    (start < end).then_some(Range { start, end })
}

/// Drops `range` (whole host pages inside one RAM region, as made by
/// [`coalesce`] and [`align_to_host`]) from the host: the memory goes
/// back to the host, and the guest reads zeros there next time. Returns
/// the bytes dropped. Checks again that the range is guest RAM.
pub fn discard(mem: &GuestMemoryMmap, range: Range) -> io::Result<u64> {
    let len = range.end.saturating_sub(range.start);
    let outside = || io::Error::new(io::ErrorKind::InvalidInput, "range outside guest RAM");
    if len == 0 || region_end_of(mem, range.start).is_none_or(|end| range.end > end) {
        return Err(outside());
    }
    let host = mem
        .get_host_address(GuestAddress(range.start))
        .map_err(|_| outside())?;
    let len_bytes = usize::try_from(len).map_err(|_| outside())?;
    // SAFETY: [host, host + len) lies inside one region's live mapping
    // (checked above) that guest memory keeps mapped while `mem` lives; the
    // guest gave these pages up, and dropping them only makes later reads
    // return zeros (anonymous RAM) or the file's contents (file-backed).
    unsafe { rustix::mm::madvise(host.cast(), len_bytes, rustix::mm::Advice::LinuxDontNeed) }?;
    Ok(len)
}
