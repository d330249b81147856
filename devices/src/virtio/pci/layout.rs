//! Where everything of a virtio-pci function is: its header identity
//! (vendor 0x1af4, device 0x1040 + virtio type, revision 1, class code per
//! type), the layout of BAR0 (common configuration, ISR, device
//! configuration, notify area, MSI-X table and PBA, 4 KiB apart) and the
//! vendor capabilities that point the driver at each (virtio 1.x §4.1.4).

use pci::{Bar, BarKind, ConfigSpace, Header};
use virtio_bindings::virtio_ids::{
    VIRTIO_ID_BALLOON, VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_NET, VIRTIO_ID_RNG,
    VIRTIO_ID_VSOCK,
};

/// The Red Hat / virtio vendor id.
pub const VENDOR_ID: u16 = 0x1af4;
/// Modern device ids are this plus the virtio device type.
const DEVICE_ID_BASE: u16 = 0x1040;
/// Revision 1: a modern-only (non-transitional) device.
const REVISION: u8 = 1;
/// The PCI capability id of vendor-specific capabilities.
const VENDOR_CAPABILITY: u8 = 0x09;

/// The BAR holding every region: 64-bit memory, not prefetchable (the ISR
/// clears on read).
pub const BAR_INDEX: u8 = 0;
/// Its size.
pub const BAR_SIZE: u64 = 0x8000;

/// Common configuration (§4.1.4.3).
pub const COMMON: u64 = 0x0000;
/// Bytes of the common configuration, up to `queue_device`.
pub const COMMON_LEN: u64 = 0x38;
/// ISR status, one byte.
pub const ISR: u64 = 0x1000;
/// Device-specific configuration.
pub const DEVICE: u64 = 0x2000;
/// Bytes of the device configuration window (reads past the device's
/// own configuration are zero).
pub const DEVICE_LEN: u64 = 0x1000;
/// The notify area: queue `i` at `NOTIFY + i * NOTIFY_MULTIPLIER`.
pub const NOTIFY: u64 = 0x3000;
/// `notify_off_multiplier`: one 4-byte-aligned address per queue, so the
/// VMM can put an ioeventfd on each without a datamatch.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// The MSI-X table (at most 256 vectors fit its 4 KiB).
pub const MSIX_TABLE: u64 = 0x4000;
/// The MSI-X pending-bit array.
pub const MSIX_PBA: u64 = 0x5000;
/// Queues a device may have: one vector each plus the configuration's
/// must fit the table.
pub const MAX_QUEUES: usize = 255;

/// Virtio capability types (`cfg_type`).
const COMMON_CFG: u8 = 1;
const NOTIFY_CFG: u8 = 2;
const ISR_CFG: u8 = 3;
const DEVICE_CFG: u8 = 4;
const PCI_CFG: u8 = 5;
/// PCI configuration access capability: its `bar` byte, from its start.
pub const PCI_CFG_BAR: u16 = 4;
/// Its `offset` in the BAR.
pub const PCI_CFG_OFFSET: u16 = 8;
/// Its `length` of the access (1, 2 or 4).
pub const PCI_CFG_LENGTH: u16 = 12;
/// Its data window, where an access becomes a BAR access.
pub const PCI_CFG_DATA: u16 = 16;

/// What a BAR0 offset falls in, and the offset inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Common configuration.
    Common(u64),
    /// ISR status.
    Isr(u64),
    /// Device configuration.
    Device(u64),
    /// The notify area.
    Notify(u64),
    /// MSI-X table.
    MsixTable(u64),
    /// MSI-X pending bits.
    MsixPba(u64),
}

impl Region {
    /// The region at `offset` of BAR0 (each spans 4 KiB), if any.
    pub fn at(offset: u64) -> Option<Self> {
        let inside = offset % 0x1000;
        Some(match offset - inside {
            COMMON => Self::Common(inside),
            ISR => Self::Isr(inside),
            DEVICE => Self::Device(inside),
            NOTIFY => Self::Notify(inside),
            MSIX_TABLE => Self::MsixTable(inside),
            MSIX_PBA => Self::MsixPba(inside),
            _ => return None,
        })
    }
}

/// The header of a function for virtio device type `device_type`.
pub fn header(device_type: u32) -> Header {
    Header {
        vendor_id: VENDOR_ID,
        device_id: DEVICE_ID_BASE + device_type as u16,
        revision: REVISION,
        class_code: class_code(device_type),
        subsystem_vendor_id: VENDOR_ID,
        subsystem_id: device_type as u16,
        interrupt_pin: 1, // INTA#
    }
}

/// The class code a guest sees for each device type (base class,
/// subclass, programming interface).
fn class_code(device_type: u32) -> u32 {
    match device_type {
        VIRTIO_ID_NET => 0x02_00_00,     // network: Ethernet
        VIRTIO_ID_BLOCK => 0x01_80_00,   // mass storage: other
        VIRTIO_ID_CONSOLE => 0x07_80_00, // communication: other
        VIRTIO_ID_VSOCK => 0x07_80_00,   // communication: other
        VIRTIO_ID_BALLOON => 0x05_80_00, // memory controller: other
        VIRTIO_ID_RNG => 0xff_00_00,     // unassigned
        _ => 0xff_00_00,
    }
}

/// Gives `space` BAR0 and the virtio capabilities for a device with
/// `queues` queues (MSI-X is added by its owner); returns the offset of
/// the PCI configuration access capability.
pub fn add_bar_and_capabilities(space: &mut ConfigSpace, queues: usize) -> u8 {
    let bar = Bar {
        kind: BarKind::Memory64 {
            prefetchable: false,
        },
        size: BAR_SIZE,
    };
    space.add_bar(usize::from(BAR_INDEX), bar);
    let notify_len = queues as u32 * NOTIFY_MULTIPLIER;
    add_virtio_capability(space, COMMON_CFG, COMMON, COMMON_LEN as u32, &[]);
    add_virtio_capability(
        space,
        NOTIFY_CFG,
        NOTIFY,
        notify_len,
        &NOTIFY_MULTIPLIER.to_le_bytes(),
    );
    add_virtio_capability(space, ISR_CFG, ISR, 1, &[]);
    add_virtio_capability(space, DEVICE_CFG, DEVICE, DEVICE_LEN as u32, &[]);
    add_pci_cfg_capability(space)
}

/// `virtio_pci_cfg_cap`: a window onto BAR0 through configuration space,
/// for firmware that cannot map the BAR. Its `bar`, `offset`, `length`
/// and data are writable; the owner turns data accesses into BAR ones.
fn add_pci_cfg_capability(space: &mut ConfigSpace) -> u8 {
    let mut body = vec![20, PCI_CFG];
    body.resize(18, 0);
    let mut writable = vec![0u8; 18];
    // From the body's start, two bytes into the capability.
    writable[usize::from(PCI_CFG_BAR) - 2] = 0xff;
    writable[usize::from(PCI_CFG_OFFSET) - 2..].fill(0xff);
    space.add_capability(VENDOR_CAPABILITY, &body, &writable)
}

/// A `virtio_pci_cap` (and `extra`, the notify capability's multiplier),
/// read-only.
fn add_virtio_capability(
    space: &mut ConfigSpace,
    cfg_type: u8,
    offset: u64,
    length: u32,
    extra: &[u8],
) {
    let cap_len = 16 + extra.len() as u8;
    let mut body = vec![cap_len, cfg_type, BAR_INDEX, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&length.to_le_bytes());
    body.extend_from_slice(extra);
    space.add_capability(VENDOR_CAPABILITY, &body, &[]);
}
