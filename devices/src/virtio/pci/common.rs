//! The common configuration structure of virtio-pci (virtio 1.x
//! §4.1.4.3), decoded onto the [`TransportCore`] and the MSI-X vector
//! assignment. Each field is accessed at its own width; the 64-bit ring
//! addresses also as two 32-bit halves (as Linux writes them). Any other
//! access reads zero and writes nothing.

use log::debug;
use virtio_queue::QueueT;
use vm_memory::GuestAddress;

use super::msix::MsixVectors;
use crate::virtio::transport::{QueueField, TransportCore};

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

/// The field holding `offset`: its start and width.
fn field(offset: u64) -> Option<(u64, usize)> {
    Some(match offset {
        0x00..=0x0f => (offset & !3, 4),
        0x10..=0x13 | 0x16..=0x1f => (offset & !1, 2),
        0x14 | 0x15 => (offset, 1),
        0x20..=0x37 => (offset & !7, 8),
        _ => return None,
    })
}

/// The field an access of `len` bytes at `offset` names, with the byte
/// shift into it: the whole field, or half of a 64-bit one.
fn access(offset: u64, len: usize) -> Option<(u64, u32)> {
    let (start, width) = field(offset)?;
    let whole = offset == start && len == width;
    let half = width == 8 && len == 4 && offset.is_multiple_of(4);
    (whole || half).then_some((start, 8 * (offset - start) as u32))
}

/// A driver read of the common configuration.
pub(super) fn read(core: &TransportCore, msix: &MsixVectors, offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Some((start, shift)) = access(offset, data.len()) else {
        return debug!("virtio-pci: {}-byte common read at {offset:#x}", data.len());
    };
    let queue = core.selected_queue();
    let value: u64 = match start {
        DEVICE_FEATURE_SELECT => core.device_features_sel.into(),
        DEVICE_FEATURE => core.device_features_page().into(),
        DRIVER_FEATURE_SELECT => core.driver_features_sel.into(),
        DRIVER_FEATURE => core.driver_features_page().into(),
        CONFIG_MSIX_VECTOR => msix.config_vector().into(),
        NUM_QUEUES => core.queues.len() as u64,
        DEVICE_STATUS => (core.status() & 0xff).into(),
        CONFIG_GENERATION => (core.interrupt.config_generation() & 0xff).into(),
        QUEUE_SELECT => core.queue_sel.into(),
        QUEUE_SIZE => queue.map_or(0, |q| q.size().into()),
        QUEUE_MSIX_VECTOR => msix.queue_vector(core.queue_sel as usize).into(),
        QUEUE_ENABLE => queue.map_or(0, |q| q.ready().into()),
        // Each queue notifies at its index times the multiplier.
        QUEUE_NOTIFY_OFF => queue.map_or(0, |_| core.queue_sel.into()),
        QUEUE_DESC => queue.map_or(0, |q| q.desc_table()),
        QUEUE_DRIVER => queue.map_or(0, |q| q.avail_ring()),
        QUEUE_DEVICE => queue.map_or(0, |q| q.used_ring()),
        _ => 0,
    };
    let bytes = (value >> shift).to_le_bytes();
    data.copy_from_slice(&bytes[..data.len()]);
}

/// A driver write to the common configuration.
pub(super) fn write(core: &mut TransportCore, msix: &MsixVectors, offset: u64, data: &[u8]) {
    let Some((start, shift)) = access(offset, data.len()) else {
        return debug!(
            "virtio-pci: {}-byte common write at {offset:#x}",
            data.len()
        );
    };
    let mut bytes = [0u8; 8];
    bytes[..data.len()].copy_from_slice(data);
    let value = u64::from_le_bytes(bytes);
    let (value32, value16) = (value as u32, value as u16);
    match start {
        DEVICE_FEATURE_SELECT => core.device_features_sel = value32,
        DRIVER_FEATURE_SELECT => core.driver_features_sel = value32,
        DRIVER_FEATURE => core.write_driver_features(value32),
        CONFIG_MSIX_VECTOR => msix.set_config_vector(value16),
        DEVICE_STATUS => {
            core.write_status(value32);
            if value32 == 0 {
                msix.unassign_all();
            }
        }
        QUEUE_SELECT => core.queue_sel = value32,
        QUEUE_SIZE => core.setup_queue(QueueField::Size, |q| q.try_set_size(value16)),
        QUEUE_MSIX_VECTOR if core.selected_queue().is_some() => {
            msix.set_queue_vector(core.queue_sel as usize, value16)
        }
        // The driver may only enable a queue (§4.1.4.3.2).
        QUEUE_ENABLE if value16 == 1 => core.setup_queue(QueueField::Ready, |q| {
            q.set_ready(true);
            Ok(())
        }),
        QUEUE_DESC => core.setup_queue(QueueField::Address, |q| {
            q.try_set_desc_table_address(merge(q.desc_table(), shift, data.len(), value))
        }),
        QUEUE_DRIVER => core.setup_queue(QueueField::Address, |q| {
            q.try_set_avail_ring_address(merge(q.avail_ring(), shift, data.len(), value))
        }),
        QUEUE_DEVICE => core.setup_queue(QueueField::Address, |q| {
            q.try_set_used_ring_address(merge(q.used_ring(), shift, data.len(), value))
        }),
        _ => debug!("virtio-pci: common write at {offset:#x} ignored"),
    }
}

/// `old` with `len` bytes at bit `shift` replaced by `value`.
fn merge(old: u64, shift: u32, len: usize, value: u64) -> GuestAddress {
    let mask = match len {
        8 => u64::MAX,
        _ => (1u64 << (8 * len)) - 1,
    } << shift;
    GuestAddress((old & !mask) | ((value << shift) & mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_name_whole_fields_or_address_halves() {
        assert_eq!(access(DEVICE_FEATURE, 4), Some((DEVICE_FEATURE, 0)));
        assert_eq!(access(DEVICE_FEATURE + 2, 2), None, "part of a dword");
        assert_eq!(access(DEVICE_STATUS, 1), Some((DEVICE_STATUS, 0)));
        assert_eq!(
            access(DEVICE_STATUS, 2),
            None,
            "status and generation at once"
        );
        assert_eq!(access(QUEUE_DRIVER + 4, 4), Some((QUEUE_DRIVER, 32)));
        assert_eq!(access(QUEUE_DEVICE, 8), Some((QUEUE_DEVICE, 0)));
        assert_eq!(access(QUEUE_DEVICE + 2, 4), None, "misaligned half");
        assert_eq!(access(0x38, 2), None, "past the structure");
    }

    #[test]
    fn halves_replace_only_their_bits() {
        let old = 0x1111_2222_3333_4444;
        let merged = |shift, len, value| merge(old, shift, len, value).0;
        assert_eq!(merged(0, 4, 0xaaaa_bbbb), 0x1111_2222_aaaa_bbbb);
        assert_eq!(merged(32, 4, 0xaaaa_bbbb), 0xaaaa_bbbb_3333_4444);
        assert_eq!(merged(0, 8, 5), 5);
    }
}
