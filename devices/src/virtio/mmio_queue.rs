//! Queue register checks of the virtio-mmio transport, done here rather
//! than by `virtio-queue`, whose setters and `Queue::is_valid` log an
//! error for every invalid value a driver writes (see the log rates in
//! docs/devices.md).

use guest_memory::GuestMemoryMmap;
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_USED_HIGH,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemory, Permissions};

/// `addr` with the half that queue register `offset` names (`*_LOW` or
/// `*_HIGH`) replaced by `value`.
pub(super) fn half(addr: u64, offset: u32, value: u32) -> GuestAddress {
    let high = matches!(
        offset,
        VIRTIO_MMIO_QUEUE_DESC_HIGH | VIRTIO_MMIO_QUEUE_AVAIL_HIGH | VIRTIO_MMIO_QUEUE_USED_HIGH
    );
    let value = u64::from(value);
    GuestAddress(match high {
        false => (addr & !0xffff_ffff) | value,
        true => (addr & 0xffff_ffff) | (value << 32),
    })
}

/// Whether `queue` is ready and its rings lie in `mem`: what
/// `Queue::is_valid` checks, without logging an error for the guest's
/// every failed attempt.
pub(super) fn check_queue(queue: &Queue, mem: &GuestMemoryMmap) -> Result<(), &'static str> {
    if !queue.ready() {
        return Err("not ready");
    }
    let size = usize::from(queue.size());
    let rings = [
        (queue.desc_table(), 16 * size, Permissions::Read),
        (queue.avail_ring(), 6 + 2 * size, Permissions::Read),
        (queue.used_ring(), 6 + 8 * size, Permissions::Write),
    ];
    match rings
        .into_iter()
        .all(|(addr, len, access)| mem.check_range(GuestAddress(addr), len, access))
    {
        true => Ok(()),
        false => Err("not in guest memory"),
    }
}

#[cfg(test)]
mod tests {
    use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_USED_LOW;

    use super::*;

    #[test]
    fn each_register_replaces_its_half() {
        let addr = 0x1111_2222_3333_4444;
        let low = half(addr, VIRTIO_MMIO_QUEUE_USED_LOW, 0xaaaa_bbbb);
        assert_eq!(low, GuestAddress(0x1111_2222_aaaa_bbbb));
        let high = half(addr, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0xaaaa_bbbb);
        assert_eq!(high, GuestAddress(0xaaaa_bbbb_3333_4444));
    }
}
