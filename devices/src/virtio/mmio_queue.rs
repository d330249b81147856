//! virtio-mmio's ring addresses, each written as two 32-bit registers.

use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_USED_HIGH,
};
use vm_memory::GuestAddress;

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
