//! tandem-hostile: a guest program that attacks the VMM it runs under.
//! It runs as root in the nested test guest (`tandem.mode=hostile`, where
//! no virtio driver is loaded), finds the virtio-mmio windows in
//! /proc/iomem, and drives the devices itself through /dev/mem with
//! rings in its own locked memory (src/dma.rs). Each attack family is one
//! file under src/attacks/; each attack prints `HOSTILE <name> done
//! <detail>` (or `FAILED <why>`), a round ends with `HOSTILE-ROUND <n>
//! done`, and rounds repeat until the VM is killed. The host side
//! (ci/hostile-host.sh) judges tandem meanwhile: SIGTERM, memory, log
//! lines, and a neighbour VM's throughput.

mod attacks;
mod devmem;
mod dma;
mod iomem;
mod port_io;
mod virtio;

use std::time::{Duration, Instant};

use dma::{Arena, Buf};
use iomem::Region;
use virtio::Device;

/// The DMA arena: rings and tables (reused by each attack) above the
/// data buffers (kept for the whole run, as a stopped device may still
/// be finishing a request into them).
const ARENA_BYTES: usize = 8 << 20;

/// The host's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A small xorshift generator, seeded from the kernel.
pub struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let mut seed = [0u8; 8];
        // SAFETY: getrandom writes at most 8 bytes into `seed`.
        unsafe { libc::getrandom(seed.as_mut_ptr().cast(), 8, 0) };
        Self(u64::from_le_bytes(seed) | 1)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }
}

/// Data buffers, allocated once (see [`ARENA_BYTES`]).
pub struct Data {
    /// 64 KiB that block requests read into and write from.
    pub blk: Buf,
    /// 4 KiB for small buffers (headers, status bytes, frames).
    pub small: Buf,
    /// 64 KiB the garbage chains name as buffers (never as tables).
    pub pool: Buf,
}

/// What every attack gets.
pub struct Ctx {
    /// The devices, in window order.
    pub devices: Vec<Device>,
    /// /proc/iomem.
    pub regions: Vec<Region>,
    /// Rings and tables.
    pub arena: Arena,
    /// Data buffers.
    pub data: Data,
    /// Randomness.
    pub rng: Rng,
    /// First guest-physical address past the end of RAM.
    pub ram_end: u64,
}

impl Ctx {
    /// The first device with ID `id`.
    pub fn device(&self, id: u32) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// Resets every device (each attack ends so: a reset device's worker
    /// publishes nothing more into rings the next attack may reuse).
    pub fn reset_all(&self) {
        for d in &self.devices {
            d.set_status(0);
        }
    }
}

/// Runs `step` repeatedly until `limit` has passed; returns how often.
pub fn for_a_while(limit: Duration, mut step: impl FnMut(u64)) -> u64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < limit {
        step(n);
        n += 1;
    }
    n
}

fn setup() -> Result<Ctx, String> {
    let text = std::fs::read_to_string("/proc/iomem").map_err(|e| format!("/proc/iomem: {e}"))?;
    let regions = iomem::parse(&text);
    let ram_end = regions
        .iter()
        .filter(|r| r.name == "System RAM")
        .map(|r| r.end + 1)
        .max()
        .ok_or("no System RAM in /proc/iomem")?;
    let mut windows: Vec<u64> = iomem::virtio_windows(&regions)
        .iter()
        .map(|r| r.start)
        .collect();
    let names: Vec<String> = std::fs::read_dir("/sys/bus/platform/devices")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    windows.extend(iomem::platform_windows(names.iter().map(String::as_str)));
    windows.sort_unstable();
    windows.dedup();
    let mut devices = Vec::new();
    for window in windows {
        match Device::open(window) {
            Ok(Some(d)) => devices.push(d),
            Ok(None) => println!("HOSTILE-NOTE {window:#x}: no virtio device"),
            Err(e) => println!("HOSTILE-NOTE {window:#x}: {e}"),
        }
    }
    if devices.is_empty() {
        return Err(format!("no virtio-mmio device found; /proc/iomem:\n{text}"));
    }
    let mut arena = Arena::new(ARENA_BYTES).map_err(|e| format!("DMA arena: {e}"))?;
    let data = Data {
        blk: arena.alloc(64 << 10, page_size()),
        small: arena.alloc(4096, page_size()),
        pool: arena.alloc(64 << 10, page_size()),
    };
    arena.set_floor();
    let names: Vec<String> = devices
        .iter()
        .map(|d| format!("{}@{:#x}", d.name(), d.regs.phys))
        .collect();
    println!(
        "HOSTILE-START devices={} ram_end={ram_end:#x} arena_contiguous={} longest_run={}KiB",
        names.join(","),
        arena.contiguous(),
        arena.longest_run() >> 10
    );
    Ok(Ctx {
        devices,
        regions,
        arena,
        data,
        rng: Rng::new(),
        ram_end,
    })
}

fn main() {
    let mut ctx = match setup() {
        Ok(ctx) => ctx,
        Err(e) => {
            println!("HOSTILE-ERROR {e}");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    };
    for round in 1.. {
        for (name, attack) in attacks::ALL {
            ctx.arena.reset();
            let result = attack(&mut ctx);
            ctx.reset_all();
            match result {
                Ok(detail) => println!("HOSTILE {name} done {detail}"),
                Err(why) => println!("HOSTILE {name} FAILED {why}"),
            }
        }
        println!("HOSTILE-ROUND {round} done");
    }
}
