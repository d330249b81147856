//! A test driver for virtio-pci that does what a guest's does, only
//! through configuration-space and BAR0 accesses: finds the capabilities
//! by walking the list, negotiates, sets up queues, programs MSI-X and
//! kicks through the notify addresses. Messages land in a [`FakeSink`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pci::{MsiMessage, PciFunction};

use super::{MsiSink, VirtioPci};
use crate::virtio::testing::test_memory;
use crate::virtio::VirtioDevice;
use crate::{BusDevice, IrqTrigger};
use guest_memory::GuestMemoryMmap;

/// Common configuration offsets (virtio 1.x §4.1.4.3), as a driver knows them.
pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
pub const DEVICE_FEATURE: u64 = 0x04;
pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
pub const DRIVER_FEATURE: u64 = 0x0c;
pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
pub const NUM_QUEUES: u64 = 0x12;
pub const DEVICE_STATUS: u64 = 0x14;
pub const CONFIG_GENERATION: u64 = 0x15;
pub const QUEUE_SELECT: u64 = 0x16;
pub const QUEUE_SIZE: u64 = 0x18;
pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
pub const QUEUE_ENABLE: u64 = 0x1c;
pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
pub const QUEUE_DESC: u64 = 0x20;
pub const QUEUE_DRIVER: u64 = 0x28;
pub const QUEUE_DEVICE: u64 = 0x30;

/// Device status bits.
pub const ACKNOWLEDGE: u64 = 1;
pub const DRIVER: u64 = 2;
pub const DRIVER_OK: u64 = 4;
pub const FEATURES_OK: u64 = 8;

/// MSI-X message control bits.
pub const MSIX_ENABLE: u16 = 1 << 15;
pub const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// Records every message sent.
#[derive(Debug, Default)]
pub struct FakeSink {
    sent: Mutex<Vec<(u16, MsiMessage)>>,
}

impl MsiSink for FakeSink {
    fn send(&self, vector: u16, message: MsiMessage) {
        self.sent.lock().unwrap().push((vector, message));
    }
}

impl FakeSink {
    /// Takes what was sent so far.
    pub fn take(&self) -> Vec<(u16, MsiMessage)> {
        std::mem::take(&mut self.sent.lock().unwrap())
    }
}

/// Where the capabilities said each structure is.
#[derive(Debug, Default)]
pub struct Found {
    /// BAR0 offsets of common, notify, ISR and device configuration.
    pub common: u64,
    pub notify: u64,
    pub isr: u64,
    pub device: u64,
    /// The PCI configuration access capability's offset.
    pub pci_cfg: u16,
    /// Lengths by cfg_type (1..=4).
    pub lengths: [u32; 5],
    pub notify_multiplier: u32,
    /// The MSI-X capability's offset, its table size, table and PBA.
    pub msix: u16,
    pub msix_vectors: u16,
    pub msix_table: u64,
    pub msix_pba: u64,
}

/// The device under test and the driver's view of it.
pub struct Driver {
    pub pci: VirtioPci,
    pub mem: GuestMemoryMmap,
    pub intx: IrqTrigger,
    pub sink: Arc<FakeSink>,
    pub found: Found,
}

impl Driver {
    /// Puts `device` behind virtio-pci and finds its capabilities.
    pub fn new(device: Box<dyn VirtioDevice>) -> Self {
        let mem = test_memory();
        let intx = IrqTrigger::new().unwrap();
        let sink = Arc::new(FakeSink::default());
        let pci = VirtioPci::new(mem.clone(), intx.clone(), sink.clone(), device).unwrap();
        let mut driver = Self {
            pci,
            mem,
            intx,
            sink,
            found: Found::default(),
        };
        driver.found = driver.walk_capabilities();
        driver
    }

    pub fn cfg_read(&self, register: u16, len: usize) -> u32 {
        let mut data = [0u8; 4];
        self.pci.read_config(register, &mut data[..len]);
        u32::from_le_bytes(data)
    }

    pub fn cfg_write(&mut self, register: u16, len: usize, value: u32) {
        self.pci.write_config(register, &value.to_le_bytes()[..len]);
    }

    /// Walks the capability list from 0x34, as Linux's virtio_pci does.
    fn walk_capabilities(&self) -> Found {
        let mut found = Found::default();
        let mut at = self.cfg_read(0x34, 1) as u16;
        while at != 0 {
            let id = self.cfg_read(at, 1);
            if id == 0x09 {
                let cfg_type = self.cfg_read(at + 3, 1) as usize;
                assert_eq!(self.cfg_read(at + 4, 1), 0, "every structure in BAR0");
                let offset = u64::from(self.cfg_read(at + 8, 4));
                if cfg_type < 5 {
                    found.lengths[cfg_type] = self.cfg_read(at + 12, 4);
                }
                match cfg_type {
                    1 => found.common = offset,
                    2 => {
                        found.notify = offset;
                        found.notify_multiplier = self.cfg_read(at + 16, 4);
                    }
                    3 => found.isr = offset,
                    4 => found.device = offset,
                    5 => found.pci_cfg = at,
                    _ => {}
                }
            } else if id == 0x11 {
                found.msix = at;
                found.msix_vectors = (self.cfg_read(at + 2, 2) as u16 & 0x7ff) + 1;
                let table = self.cfg_read(at + 4, 4);
                let pba = self.cfg_read(at + 8, 4);
                assert_eq!((table & 7, pba & 7), (0, 0), "table and PBA in BAR0");
                found.msix_table = u64::from(table & !7);
                found.msix_pba = u64::from(pba & !7);
            }
            at = self.cfg_read(at + 1, 1) as u16;
        }
        found
    }

    pub fn bar_read(&mut self, offset: u64, len: usize) -> u64 {
        let mut data = [0u8; 8];
        self.pci.read(offset, &mut data[..len]);
        u64::from_le_bytes(data)
    }

    pub fn bar_write(&mut self, offset: u64, len: usize, value: u64) {
        self.pci.write(offset, &value.to_le_bytes()[..len]);
    }

    pub fn common(&mut self, field: u64, len: usize) -> u64 {
        self.bar_read(self.found.common + field, len)
    }

    pub fn set_common(&mut self, field: u64, len: usize, value: u64) {
        self.bar_write(self.found.common + field, len, value);
    }

    /// The 64 offered feature bits.
    pub fn device_features(&mut self) -> u64 {
        self.set_common(DEVICE_FEATURE_SELECT, 4, 0);
        let low = self.common(DEVICE_FEATURE, 4);
        self.set_common(DEVICE_FEATURE_SELECT, 4, 1);
        low | self.common(DEVICE_FEATURE, 4) << 32
    }

    /// Reset, ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK; returns
    /// whether FEATURES_OK stuck.
    pub fn negotiate(&mut self, features: u64) -> bool {
        self.set_common(DEVICE_STATUS, 1, 0);
        self.set_common(DEVICE_STATUS, 1, ACKNOWLEDGE);
        self.set_common(DEVICE_STATUS, 1, ACKNOWLEDGE | DRIVER);
        for page in 0..2 {
            self.set_common(DRIVER_FEATURE_SELECT, 4, page);
            self.set_common(DRIVER_FEATURE, 4, (features >> (32 * page)) & 0xffff_ffff);
        }
        self.set_common(DEVICE_STATUS, 1, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.common(DEVICE_STATUS, 1) & FEATURES_OK != 0
    }

    /// Sets up queue `index` with `size` entries at the rings `TestRing`
    /// lays out from `base`, assigned MSI-X `vector`, and enables it.
    pub fn setup_queue(&mut self, index: u16, size: u16, base: u64, vector: u16) {
        self.set_common(QUEUE_SELECT, 2, index.into());
        self.set_common(QUEUE_SIZE, 2, size.into());
        // Linux writes each address as two 32-bit halves.
        for (field, addr) in [
            (QUEUE_DESC, base),
            (QUEUE_DRIVER, base + 0x1000),
            (QUEUE_DEVICE, base + 0x2000),
        ] {
            self.set_common(field, 4, addr & 0xffff_ffff);
            self.set_common(field + 4, 4, addr >> 32);
        }
        self.set_common(QUEUE_MSIX_VECTOR, 2, vector.into());
        self.set_common(QUEUE_ENABLE, 2, 1);
    }

    pub fn driver_ok(&mut self) {
        let status = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
        self.set_common(DEVICE_STATUS, 1, status);
    }

    /// Writes the MSI-X message control word.
    pub fn msix_control(&mut self, control: u16) {
        let register = self.found.msix + 2;
        self.cfg_write(register, 2, control.into());
    }

    /// Programs vector `vector`'s entry, masked or not.
    pub fn program_vector(&mut self, vector: u16, message: MsiMessage, masked: bool) {
        let entry = self.found.msix_table + 16 * u64::from(vector);
        self.bar_write(entry, 4, message.address & 0xffff_ffff);
        self.bar_write(entry + 4, 4, message.address >> 32);
        self.bar_write(entry + 8, 4, message.data.into());
        self.mask_vector(vector, masked);
    }

    pub fn mask_vector(&mut self, vector: u16, masked: bool) {
        let control = self.found.msix_table + 16 * u64::from(vector) + 12;
        self.bar_write(control, 4, masked.into());
    }

    pub fn pending(&mut self, vector: u16) -> bool {
        let word = self.bar_read(self.found.msix_pba + 8 * u64::from(vector / 64), 8);
        word & 1 << (vector % 64) != 0
    }

    /// Notifies queue `index` at the address its queue_notify_off names.
    pub fn kick(&mut self, index: u16) {
        self.set_common(QUEUE_SELECT, 2, index.into());
        let off = self.common(QUEUE_NOTIFY_OFF, 2);
        let at = self.found.notify + off * u64::from(self.found.notify_multiplier);
        self.bar_write(at, 2, index.into());
    }

    /// Reads `len` bytes at `offset` of BAR0 through the PCI
    /// configuration access capability.
    pub fn pci_cfg_read(&mut self, offset: u64, len: usize) -> u32 {
        self.point_pci_cfg(offset, len);
        self.cfg_read(self.found.pci_cfg + 16, len)
    }

    /// Writes through the PCI configuration access capability.
    pub fn pci_cfg_write(&mut self, offset: u64, len: usize, value: u32) {
        self.point_pci_cfg(offset, len);
        self.cfg_write(self.found.pci_cfg + 16, len, value);
    }

    fn point_pci_cfg(&mut self, offset: u64, len: usize) {
        let cap = self.found.pci_cfg;
        self.cfg_write(cap + 4, 1, 0);
        self.cfg_write(cap + 8, 4, offset as u32);
        self.cfg_write(cap + 12, 4, len as u32);
    }

    pub fn isr(&mut self) -> u8 {
        self.bar_read(self.found.isr, 1) as u8
    }
}

/// A message for vector `vector` (x86-like: LAPIC address, distinct data).
pub fn message(vector: u16) -> MsiMessage {
    MsiMessage {
        address: 0xfee0_0000,
        data: 0x40 + u32::from(vector),
    }
}

/// Waits up to 5 s for `done`.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
