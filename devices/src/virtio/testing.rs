//! Test helpers: the driver side of a split virtqueue, written straight
//! into guest memory, so device tests can queue chains and read back what
//! the device returned.

use guest_memory::GuestMemoryMmap;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// Guest memory for device tests: 1 MiB at address 0.
pub fn test_memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

/// A driver's view of one split virtqueue at `base`: descriptor table at
/// `base`, available ring at `base + 0x1000`, used ring at `base + 0x2000`.
pub struct TestRing {
    mem: GuestMemoryMmap,
    size: u16,
    base: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl TestRing {
    /// An empty ring of `size` entries.
    pub fn new(mem: &GuestMemoryMmap, base: u64, size: u16) -> Self {
        let ring = Self {
            mem: mem.clone(),
            size,
            base,
            next_desc: 0,
            avail_idx: 0,
        };
        for offset in [0x1000, 0x2000] {
            let zeroes = vec![0u8; 0x1000];
            mem.write_slice(&zeroes, GuestAddress(base + offset))
                .unwrap();
        }
        ring
    }

    fn avail(&self) -> u64 {
        self.base + 0x1000
    }

    fn used_ring(&self) -> u64 {
        self.base + 0x2000
    }

    fn put_u16(&self, addr: u64, value: u16) {
        self.mem
            .write_obj(value.to_le(), GuestAddress(addr))
            .unwrap();
    }

    fn get_u16(&self, addr: u64) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(addr)).unwrap())
    }

    /// The device side of this ring, as a transport would hand it over.
    pub fn queue(&self, event_idx: bool) -> Queue {
        let mut queue = Queue::new(self.size).unwrap();
        queue.set_size(self.size);
        queue.set_desc_table_address(Some(self.base as u32), Some((self.base >> 32) as u32));
        queue.set_avail_ring_address(Some(self.avail() as u32), Some(0));
        queue.set_used_ring_address(Some(self.used_ring() as u32), Some(0));
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        queue
    }

    /// Queues a chain of `(address, length, device-writable)` buffers and
    /// returns its head index.
    pub fn add_chain(&mut self, buffers: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == buffers.len();
            let at = self.base + 16 * u64::from(index);
            self.write_desc(at, (addr, len, writable), (!last).then_some(self.next_desc));
        }
        self.add_head(head);
        head
    }

    /// Makes descriptor `head` available, whatever it is: a driver may
    /// name one past the end of the table.
    pub fn add_head(&mut self, head: u16) {
        let slot = self.avail() + 4 + 2 * u64::from(self.avail_idx % self.size);
        self.put_u16(slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.put_u16(self.avail() + 2, self.avail_idx);
    }

    /// Queues a one-descriptor chain naming an indirect table, written at
    /// `table`, that holds `buffers`.
    pub fn add_indirect_chain(&mut self, table: u64, buffers: &[(u64, u32, bool)]) -> u16 {
        self.write_indirect_table(table, buffers);
        self.add_indirect_head(table, buffers.len())
    }

    /// Writes an indirect table of `buffers`, chained in order, at `table`.
    pub fn write_indirect_table(&self, table: u64, buffers: &[(u64, u32, bool)]) {
        for (i, &buffer) in (0u32..).zip(buffers) {
            let next = (i as usize + 1 < buffers.len()).then_some((i + 1) as u16);
            self.write_desc(table + 16 * u64::from(i), buffer, next);
        }
    }

    /// Queues a one-descriptor chain naming the `entries`-long indirect
    /// table at `table` (several heads may name the same table).
    pub fn add_indirect_head(&mut self, table: u64, entries: usize) -> u16 {
        let head = self.add_chain(&[(table, 16 * entries as u32, false)]);
        let flags = self.base + 16 * u64::from(head) + 12;
        self.put_u16(flags, VRING_DESC_F_INDIRECT as u16);
        head
    }

    fn write_desc(&self, at: u64, (addr, len, writable): (u64, u32, bool), next: Option<u16>) {
        let mut flags = if writable { VRING_DESC_F_WRITE } else { 0 } as u16;
        if next.is_some() {
            flags |= VRING_DESC_F_NEXT as u16;
        }
        self.mem.write_obj(addr.to_le(), GuestAddress(at)).unwrap();
        self.mem
            .write_obj(len.to_le(), GuestAddress(at + 8))
            .unwrap();
        self.put_u16(at + 12, flags);
        self.put_u16(at + 14, next.unwrap_or(0));
    }

    /// `(head, length)` of every used element so far.
    pub fn used(&self) -> Vec<(u32, u32)> {
        let count = self.get_u16(self.used_ring() + 2);
        (0..count)
            .map(|i| {
                let elem = self.used_ring() + 4 + 8 * u64::from(i % self.size);
                let id: u32 = self.mem.read_obj(GuestAddress(elem)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(elem + 4)).unwrap();
                (u32::from_le(id), u32::from_le(len))
            })
            .collect()
    }

    /// Sets `used_event`: the driver wants an interrupt once the used index
    /// passes `value`.
    pub fn set_used_event(&self, value: u16) {
        self.put_u16(self.avail() + 4 + 2 * u64::from(self.size), value);
    }

    /// The device's `avail_event`: the available index it wants a kick at.
    pub fn avail_event(&self) -> u16 {
        self.get_u16(self.used_ring() + 4 + 8 * u64::from(self.size))
    }
}
