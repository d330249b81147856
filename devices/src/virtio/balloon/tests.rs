//! Balloon tests: PFN coalescing and refusal, pages really dropped, config
//! space, the target's config-change interrupt.

use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::handler::{BalloonHandler, QueueRoles, DEFLATE, INFLATE};
use super::pages::{align_to_host, coalesce, discard, Range, BALLOON_PAGE};
use super::*;
use crate::virtio::testing::TestRing;
use crate::virtio::worker::WorkerHandler;
use crate::virtio::Interrupt;
use crate::virtio::{INT_CONFIG_CHANGE, INT_USED_BUFFER};
use crate::IrqTrigger;

const MIB: u64 = 1 << 20;

/// RAM at [0, 1 MiB) and [2 MiB, 4 MiB), an MMIO hole between.
fn holed_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MIB as usize),
        (GuestAddress(2 * MIB), 2 * MIB as usize),
    ])
    .unwrap()
}

fn pfn(addr: u64) -> u32 {
    (addr / BALLOON_PAGE) as u32
}

#[test]
fn pfns_coalesce_into_sorted_runs_within_regions() {
    let mem = holed_memory();
    // Unsorted, a duplicate, and a run that touches the end of region 0.
    let mut pfns = vec![
        pfn(0x5000),
        pfn(0x3000),
        pfn(0x4000),
        pfn(0x4000),
        pfn(0x9000),
        pfn(MIB - 0x1000),
    ];
    let runs = coalesce(&mem, &mut pfns);
    assert_eq!(runs.pages, 5);
    assert_eq!(runs.refused, 0);
    assert_eq!(
        runs.ranges,
        vec![
            Range {
                start: 0x3000,
                end: 0x6000
            },
            Range {
                start: 0x9000,
                end: 0xa000
            },
            Range {
                start: MIB - 0x1000,
                end: MIB
            },
        ]
    );
}

#[test]
fn garbage_pfns_are_refused() {
    let mem = holed_memory();
    // In the hole, past the end of RAM, the largest PFN, and one good one.
    let mut pfns = vec![
        pfn(MIB),
        pfn(MIB + 0x8000),
        pfn(4 * MIB),
        u32::MAX,
        pfn(2 * MIB),
    ];
    let runs = coalesce(&mem, &mut pfns);
    assert_eq!((runs.pages, runs.refused), (1, 4));
    assert_eq!(
        runs.ranges,
        vec![Range {
            start: 2 * MIB,
            end: 2 * MIB + 0x1000
        }]
    );
}

#[test]
fn runs_never_cross_a_region_edge() {
    // Two regions that touch: [0, 1 MiB) and [1 MiB, 2 MiB).
    let mem = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), MIB as usize),
        (GuestAddress(MIB), MIB as usize),
    ])
    .unwrap();
    let mut pfns = vec![pfn(MIB - 0x1000), pfn(MIB)];
    let runs = coalesce(&mem, &mut pfns);
    assert_eq!(
        runs.ranges.len(),
        2,
        "one range per region: {:?}",
        runs.ranges
    );
}

#[test]
fn ranges_shrink_to_whole_host_pages() {
    let range = Range {
        start: 0x1000,
        end: 0x2_3000,
    };
    assert_eq!(align_to_host(range, 0x1000), Some(range));
    assert_eq!(
        align_to_host(range, 0x1_0000),
        Some(Range {
            start: 0x1_0000,
            end: 0x2_0000
        })
    );
    assert_eq!(
        align_to_host(
            Range {
                start: 0x1000,
                end: 0x2000
            },
            0x1_0000
        ),
        None
    );
}

/// Resident bytes of the mapping holding `addr`, from /proc/self/smaps.
fn resident_bytes(addr: u64) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = head.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside {
            if let Some(kb) = line.strip_prefix("Rss:") {
                return kb
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
                    * 1024;
            }
        }
    }
    panic!("no mapping holds {addr:#x}");
}

#[test]
fn discard_really_gives_pages_back() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 * MIB as usize)]).unwrap();
    mem.write_slice(&vec![0xa5; 16 * MIB as usize], GuestAddress(0))
        .unwrap();
    let host = mem.get_host_address(GuestAddress(0)).unwrap() as u64;
    let before = resident_bytes(host);
    // qemu-user (the aarch64 test runner) fakes smaps with Rss 0 for every
    // mapping; a real kernel cannot show a touched mapping without pages.
    let kernel_view = before != 0;
    assert!(!kernel_view || before >= 16 * MIB, "all touched: {before}");
    let dropped = discard(
        &mem,
        Range {
            start: 4 * MIB,
            end: 12 * MIB,
        },
    )
    .unwrap();
    assert_eq!(dropped, 8 * MIB);
    let after = resident_bytes(host);
    assert!(
        // The VMA may be merged with neighbours other test threads grow.
        !kernel_view || before.saturating_sub(after) >= 7 * MIB,
        "RSS {before} -> {after}"
    );
    let mut byte = [0u8; 1];
    mem.read_slice(&mut byte, GuestAddress(4 * MIB)).unwrap();
    assert_eq!(byte, [0], "dropped pages read as zeros");
    mem.read_slice(&mut byte, GuestAddress(12 * MIB)).unwrap();
    assert_eq!(byte, [0xa5], "the next page is kept");
    assert!(
        discard(
            &mem,
            Range {
                start: 15 * MIB,
                end: 17 * MIB
            }
        )
        .is_err(),
        "past RAM"
    );
}

/// The state a balloon made with `config` shares with its handler.
pub(super) fn new_shared(config: BalloonConfig) -> Arc<Shared> {
    Balloon::new(config, BALLOON_PAGE).unwrap().shared
}

/// A handler over `rings` (in queue order) with the queue roles the
/// driver's `features` give.
pub(super) fn handler_for(
    mem: &GuestMemoryMmap,
    rings: &[&TestRing],
    shared: &Arc<Shared>,
    features: u64,
) -> BalloonHandler {
    BalloonHandler {
        shared: shared.clone(),
        mem: mem.clone(),
        queues: rings.iter().map(|r| r.queue(false)).collect(),
        roles: QueueRoles::of(features),
        interrupt: Arc::new(Interrupt::new(IrqTrigger::new().unwrap())),
        host_page: BALLOON_PAGE,
        stats_timer: Arc::new(Mutex::new(nonblocking_timer().unwrap())),
        stats: StatsProtocol::default(),
    }
}

fn handler(mem: &GuestMemoryMmap, rings: &[&TestRing], shared: &Arc<Shared>) -> BalloonHandler {
    handler_for(mem, rings, shared, feature(VIRTIO_BALLOON_F_REPORTING))
}

/// Writes `pfns` as le32 at `addr`.
fn write_pfns(mem: &GuestMemoryMmap, addr: u64, pfns: &[u32]) -> u32 {
    let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
    mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
    bytes.len() as u32
}

#[test]
fn inflate_drops_pages_and_deflate_accounts() {
    let mem = holed_memory();
    let inflate_ring = TestRing::new(&mem, 0, 16);
    let deflate_ring = TestRing::new(&mem, 0x4000, 16);
    let (mut inflate_ring, mut deflate_ring) = (inflate_ring, deflate_ring);
    let shared = new_shared(BalloonConfig::default());
    let mut balloon = handler(&mem, &[&inflate_ring, &deflate_ring], &shared);
    mem.write_slice(&[0x5a; 0x4000], GuestAddress(2 * MIB))
        .unwrap();
    // Three good pages, one in the hole.
    let pfns = [
        pfn(2 * MIB),
        pfn(2 * MIB + 0x1000),
        pfn(2 * MIB + 0x3000),
        pfn(MIB + 0x1000),
    ];
    let len = write_pfns(&mem, 0x8000, &pfns);
    inflate_ring.add_chain(&[(0x8000, len, false)]);
    balloon.queue_event(INFLATE).unwrap();
    assert_eq!(inflate_ring.used(), vec![(0, 0)]);
    let control = BalloonControl(shared.clone());
    let stats = control.stats();
    assert_eq!((stats.inflated_pages, stats.refused), (3, 1));
    assert_eq!(stats.discarded_bytes, 3 * BALLOON_PAGE);
    let mut page = [0u8; 4];
    mem.read_slice(&mut page, GuestAddress(2 * MIB + 0x1000))
        .unwrap();
    assert_eq!(page, [0; 4], "inflated page dropped");
    mem.read_slice(&mut page, GuestAddress(2 * MIB + 0x2000))
        .unwrap();
    assert_eq!(page, [0x5a; 4], "the page between kept");

    let len = write_pfns(&mem, 0x9000, &pfns[..2]);
    deflate_ring.add_chain(&[(0x9000, len, false)]);
    balloon.queue_event(DEFLATE).unwrap();
    assert_eq!(deflate_ring.used(), vec![(0, 0)]);
    assert_eq!(control.stats().deflated_pages, 2);
    assert!(balloon.interrupt.status() & INT_USED_BUFFER != 0);
}

#[test]
fn a_chain_outside_memory_is_returned_untouched() {
    let mem = holed_memory();
    let mut ring = TestRing::new(&mem, 0, 16);
    let shared = new_shared(BalloonConfig::default());
    let mut balloon = handler(&mem, &[&ring], &shared);
    ring.add_chain(&[(MIB + 0x10, 64, false)]);
    balloon.queue_event(INFLATE).unwrap();
    assert_eq!(ring.used(), vec![(0, 0)]);
    assert_eq!(BalloonControl(shared).stats().inflated_pages, 0);
}

#[test]
fn free_page_reports_are_dropped() {
    let mem = holed_memory();
    let mut ring = TestRing::new(&mem, 0, 16);
    let shared = new_shared(BalloonConfig::default());
    let rings = [&ring, &ring, &ring];
    let mut balloon = handler(&mem, &rings, &shared);
    mem.write_slice(&[7; 0x2000], GuestAddress(3 * MIB))
        .unwrap();
    ring.add_chain(&[(3 * MIB, 0x2000, true)]);
    balloon.queue_event(2).unwrap();
    assert_eq!(ring.used(), vec![(0, 0)]);
    let mut byte = [1u8];
    mem.read_slice(&mut byte, GuestAddress(3 * MIB + 0x1fff))
        .unwrap();
    assert_eq!(byte, [0]);
    assert_eq!(BalloonControl(shared).stats().discarded_bytes, 0x2000);
}

#[test]
fn config_space_holds_target_and_takes_actual() {
    let mut balloon = Balloon::new(
        BalloonConfig {
            target_pages: 0x1234,
            deflate_on_oom: true,
            free_page_reporting: false,
            stats_interval_s: 0,
        },
        BALLOON_PAGE,
    )
    .unwrap();
    assert_eq!(balloon.queue_max_sizes().len(), 2);
    assert_ne!(
        balloon.features() & feature(VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
        0
    );
    assert_eq!(balloon.features() & feature(VIRTIO_BALLOON_F_REPORTING), 0);
    let mut config = [0u8; 8];
    balloon.read_config(0, &mut config);
    assert_eq!(config, [0x34, 0x12, 0, 0, 0, 0, 0, 0]);
    balloon.write_config(4, &99u32.to_le_bytes());
    balloon.write_config(0, &5u32.to_le_bytes());
    balloon.write_config(4, &[1, 2]);
    let mut actual = [0u8; 4];
    balloon.read_config(4, &mut actual);
    assert_eq!(
        u32::from_le_bytes(actual),
        99,
        "only a whole actual write counts"
    );
    balloon.read_config(0, &mut actual);
    assert_eq!(
        u32::from_le_bytes(actual),
        0x1234,
        "the driver cannot set the target"
    );
    assert_eq!(
        balloon.control().state(),
        BalloonState {
            target_pages: 0x1234,
            actual_pages: 99
        }
    );
}

#[test]
fn a_new_target_raises_a_config_interrupt_once_active() {
    let balloon = Balloon::new(
        BalloonConfig {
            free_page_reporting: true,
            ..Default::default()
        },
        BALLOON_PAGE,
    )
    .unwrap();
    assert_eq!(balloon.queue_max_sizes().len(), 3);
    let control = balloon.control();
    control.set_target(10); // not active: nobody to tell
    let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().unwrap()));
    *balloon.shared.interrupt.lock().unwrap() = Some(interrupt.clone());
    assert_eq!(interrupt.status() & INT_CONFIG_CHANGE, 0);
    control.set_target(256 * 64);
    assert_ne!(interrupt.status() & INT_CONFIG_CHANGE, 0);
    let mut config = [0u8; 4];
    balloon.read_config(0, &mut config);
    assert_eq!(u32::from_le_bytes(config), 256 * 64);
    let restored = Balloon::new(BalloonConfig::default(), BALLOON_PAGE).unwrap();
    restored.control().restore(&control.state());
    assert_eq!(restored.control().state().target_pages, 256 * 64);
}
