//! Just enough of a virtio-mmio driver to attack with: the register
//! offsets, a transport that walks the status steps (or skips them), and
//! split virtqueues laid out in the DMA arena whose descriptors the
//! attacks write by hand. No interrupts: completion is polled.

use std::time::{Duration, Instant};

use crate::devmem::Window;
use crate::dma::{Arena, Buf};

// Register offsets (virtio 1.x §4.2.2).
pub mod reg {
    //! Offsets into the 0x200-byte window; config space starts at 0x100.
    #![allow(missing_docs)]
    pub const MAGIC: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_AVAIL_LOW: usize = 0x090;
    pub const QUEUE_AVAIL_HIGH: usize = 0x094;
    pub const QUEUE_USED_LOW: usize = 0x0a0;
    pub const QUEUE_USED_HIGH: usize = 0x0a4;
}

/// Device IDs.
pub const ID_NET: u32 = 1;
/// virtio-blk.
pub const ID_BLOCK: u32 = 2;
/// virtio-rng.
pub const ID_RNG: u32 = 4;

/// Status bits.
pub const ACK: u32 = 1;
/// DRIVER.
pub const DRIVER: u32 = 2;
/// DRIVER_OK.
pub const DRIVER_OK: u32 = 4;
/// FEATURES_OK.
pub const FEATURES_OK: u32 = 8;
/// NEEDS_RESET (read only).
pub const NEEDS_RESET: u32 = 0x40;

/// Feature bits.
pub const F_VERSION_1: u64 = 1 << 32;
/// Indirect descriptors.
pub const F_INDIRECT: u64 = 1 << 28;
/// virtio-net mergeable receive buffers.
pub const F_NET_MRG_RXBUF: u64 = 1 << 15;

/// Descriptor flags.
pub const D_NEXT: u16 = 1;
/// Device-writable.
pub const D_WRITE: u16 = 2;
/// Names an indirect table.
pub const D_INDIRECT: u16 = 4;

/// One virtio-mmio device.
pub struct Device {
    /// Its register window.
    pub regs: Window,
    /// Its device ID.
    pub id: u32,
}

impl Device {
    /// Maps the window at `phys`; `None` unless it holds a version-2
    /// virtio-mmio transport with a device behind it.
    pub fn open(phys: u64) -> std::io::Result<Option<Self>> {
        let regs = Window::map(phys, 0x200)?;
        let ok = regs.read32(reg::MAGIC) == 0x7472_6976 && regs.read32(reg::VERSION) == 2;
        let id = regs.read32(reg::DEVICE_ID);
        Ok((ok && id != 0).then_some(Self { regs, id }))
    }

    /// A short name for log lines.
    pub fn name(&self) -> &'static str {
        match self.id {
            ID_NET => "net",
            ID_BLOCK => "blk",
            ID_RNG => "rng",
            _ => "other",
        }
    }

    /// Writes the status register.
    pub fn set_status(&self, status: u32) {
        self.regs.write32(reg::STATUS, status);
    }

    /// Reads the status register.
    pub fn status(&self) -> u32 {
        self.regs.read32(reg::STATUS)
    }

    /// Resets, then ACK, DRIVER, the features `wanted` (with VERSION_1)
    /// that the device offers, FEATURES_OK. Returns whether it stuck.
    pub fn begin(&self, wanted: u64) -> bool {
        self.set_status(0);
        self.set_status(ACK);
        self.set_status(ACK | DRIVER);
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 0);
        let low = u64::from(self.regs.read32(reg::DEVICE_FEATURES));
        self.regs.write32(reg::DEVICE_FEATURES_SEL, 1);
        let high = u64::from(self.regs.read32(reg::DEVICE_FEATURES));
        let accept = (low | high << 32) & (wanted | F_VERSION_1);
        self.regs.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.regs.write32(reg::DRIVER_FEATURES, accept as u32);
        self.regs.write32(reg::DRIVER_FEATURES_SEL, 1);
        self.regs
            .write32(reg::DRIVER_FEATURES, (accept >> 32) as u32);
        self.set_status(ACK | DRIVER | FEATURES_OK);
        self.status() & FEATURES_OK != 0
    }

    /// Programs queue `index` with `size` and the three ring addresses
    /// (any values: the attacks pass bad ones too), then QueueReady = 1.
    pub fn setup_queue(&self, index: u32, size: u32, desc: u64, avail: u64, used: u64) {
        let r = &self.regs;
        r.write32(reg::QUEUE_SEL, index);
        r.write32(reg::QUEUE_NUM, size);
        r.write32(reg::QUEUE_DESC_LOW, desc as u32);
        r.write32(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        r.write32(reg::QUEUE_AVAIL_LOW, avail as u32);
        r.write32(reg::QUEUE_AVAIL_HIGH, (avail >> 32) as u32);
        r.write32(reg::QUEUE_USED_LOW, used as u32);
        r.write32(reg::QUEUE_USED_HIGH, (used >> 32) as u32);
        r.write32(reg::QUEUE_READY, 1);
    }

    /// QueueNumMax of queue `index`.
    pub fn queue_max(&self, index: u32) -> u32 {
        self.regs.write32(reg::QUEUE_SEL, index);
        self.regs.read32(reg::QUEUE_NUM_MAX)
    }

    /// DRIVER_OK; returns whether the device took it without NEEDS_RESET.
    pub fn go(&self) -> bool {
        self.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
        let status = self.status();
        status & DRIVER_OK != 0 && status & NEEDS_RESET == 0
    }

    /// Kicks queue `index`.
    pub fn notify(&self, index: u32) {
        self.regs.write32(reg::QUEUE_NOTIFY, index);
    }

    /// Acknowledges whatever interrupt is pending.
    pub fn ack_interrupts(&self) {
        let pending = self.regs.read32(reg::INTERRUPT_STATUS);
        self.regs.write32(reg::INTERRUPT_ACK, pending);
    }
}

/// A split virtqueue in the DMA arena.
pub struct Queue {
    /// Queue size.
    pub size: u16,
    /// The descriptor table.
    pub desc: Buf,
    /// The available ring (flags, idx, ring, used_event).
    pub avail: Buf,
    /// The used ring (flags, idx, ring of (id, len), avail_event).
    pub used: Buf,
    avail_idx: u16,
}

impl Queue {
    /// Allocates the three rings of a queue of `size`, each in its own
    /// page-aligned piece.
    pub fn new(arena: &mut Arena, size: u16) -> Self {
        let n = usize::from(size);
        let page = crate::page_size();
        Self {
            size,
            desc: arena.alloc(16 * n, page),
            avail: arena.alloc(6 + 2 * n, page),
            used: arena.alloc(6 + 8 * n, page),
            avail_idx: 0,
        }
    }

    /// Programs queue `index` of `dev` with these rings.
    pub fn attach(&self, dev: &Device, index: u32) {
        let size = u32::from(self.size);
        dev.setup_queue(index, size, self.desc.phys, self.avail.phys, self.used.phys);
    }

    /// Writes descriptor `i` of `table` (any table: the ring's or an
    /// indirect one).
    pub fn put_desc(table: &Buf, i: usize, addr: u64, len: u32, flags: u16, next: u16) {
        let at = 16 * i;
        table.put(at, addr.to_le_bytes());
        table.put(at + 8, len.to_le_bytes());
        table.put(at + 12, flags.to_le_bytes());
        table.put(at + 14, next.to_le_bytes());
    }

    /// Makes descriptor `head` available (no kick).
    pub fn push(&mut self, head: u16) {
        let slot = usize::from(self.avail_idx % self.size);
        self.avail.put(4 + 2 * slot, head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.avail.put(2, self.avail_idx.to_le_bytes());
    }

    /// Sets the available index to any value (a lie, for the attacks).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.avail.put(2, idx.to_le_bytes());
    }

    /// The available index written so far.
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// The used index the device published.
    pub fn used_idx(&self) -> u16 {
        self.used.get16(2)
    }

    /// Polls until the used index reaches `target` or `limit` passes;
    /// returns whether it did.
    pub fn wait_used(&self, target: u16, limit: Duration) -> bool {
        let start = Instant::now();
        while self.used_idx() != target {
            if start.elapsed() > limit {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }
}
