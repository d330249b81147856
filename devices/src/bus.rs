//! A bus: address ranges mapped to devices, used once for port I/O and once
//! for MMIO. Lookup finds the range with the greatest base at or below the
//! address.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::LogLimit;

/// A device reachable through a [`Bus`]. Offsets are relative to the base
/// the device was inserted at.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Why a device could not be inserted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap {
        /// Base of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// A zero-length range, or one that wraps around the address space.
    #[error("invalid range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Base of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

/// A shared device on a bus.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Address ranges and the devices behind them.
#[derive(Default, Clone)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, SharedDevice)>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `[base, base + len)` to `device`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::InvalidRange { base, len })?;
        let overlaps_prev = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(&b, &(l, _))| b + l > base);
        if overlaps_prev {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    /// The device covering `addr` and the offset of `addr` into it, if the
    /// whole access of `size` bytes fits in its range.
    fn resolve(&self, addr: u64, size: usize) -> Option<(&SharedDevice, u64)> {
        let (&base, (len, device)) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(size as u64)? <= *len).then_some((device, offset))
    }

    /// Dispatches a read; returns false when no device claims the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((device, offset)) = self.resolve(addr, data.len()) else {
            return false;
        };
        if !contained(addr, || lock(device).read(offset, data)) {
            data.fill(0xff);
        }
        true
    }

    /// Dispatches a write; returns false when no device claims the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((device, offset)) = self.resolve(addr, data.len()) else {
            return false;
        };
        contained(addr, || lock(device).write(offset, data));
        true
    }
}

/// Runs a device access so that a bug in the device model fails that one
/// access (logged) instead of taking the vCPU thread, and the VMM, down.
/// Returns whether the access completed.
fn contained(addr: u64, access: impl FnOnce()) -> bool {
    let completed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(access)).is_ok();
    if !completed {
        static FAILED: LogLimit = LogLimit::new();
        FAILED.error(format_args!(
            "the device at {addr:#x} failed on a guest access; the access was dropped"
        ));
    }
    completed
}

/// Locks a device, carrying on past a poisoned lock: a device that panicked
/// once must not take the whole VMM down with it.
fn lock(device: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the last access and answers reads with its offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0x100, 0x10).unwrap();
        assert_eq!(
            bus.insert(probe(), 0x108, 0x10),
            Err(BusError::Overlap {
                base: 0x108,
                len: 0x10
            })
        );
        assert_eq!(
            bus.insert(probe(), 0xf8, 0x10),
            Err(BusError::Overlap {
                base: 0xf8,
                len: 0x10
            })
        );
        assert!(bus.insert(probe(), 0xf0, 0x10).is_ok(), "adjacent below");
        assert!(bus.insert(probe(), 0x110, 0x10).is_ok(), "adjacent above");
        assert!(matches!(
            bus.insert(probe(), 0x200, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(probe(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
    }

    #[test]
    fn dispatches_to_the_right_device_with_offsets() {
        let mut bus = Bus::new();
        let (a, b) = (probe(), probe());
        bus.insert(a.clone(), 0x1000, 0x100).unwrap();
        bus.insert(b.clone(), 0x2000, 0x100).unwrap();
        assert!(bus.write(0x2004, &[7, 8]));
        assert_eq!(b.lock().unwrap().last_write, Some((4, vec![7, 8])));
        assert!(a.lock().unwrap().last_write.is_none());
        let mut data = [0u8; 4];
        assert!(bus.read(0x1010, &mut data));
        assert_eq!(data, [0x10; 4]);
    }

    /// A device with a bug: panics on every access.
    struct Broken;

    impl BusDevice for Broken {
        fn read(&mut self, _offset: u64, _data: &mut [u8]) {
            panic!("read bug");
        }
        fn write(&mut self, _offset: u64, _data: &[u8]) {
            panic!("write bug");
        }
    }

    #[test]
    fn a_panicking_device_fails_the_access_not_the_vmm() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Broken)), 0x1000, 0x10)
            .unwrap();
        let mut data = [0u8; 2];
        assert!(bus.read(0x1000, &mut data));
        assert_eq!(data, [0xff, 0xff]);
        assert!(bus.write(0x1000, &[1]));
        // The poisoned lock does not stop later accesses either.
        assert!(bus.read(0x1004, &mut data));
    }

    #[test]
    fn a_device_panicking_again_and_again_leaves_few_lines() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Broken)), 0x1000, 0x10)
            .unwrap();
        let log = crate::test_log::Capture::start();
        for _ in 0..1000 {
            assert!(bus.write(0x1000, &[1]));
        }
        crate::test_log::assert_few(&log.warnings_here(), "device panics");
    }

    #[test]
    fn unclaimed_and_straddling_accesses_are_refused() {
        let mut bus = Bus::new();
        bus.insert(probe(), 0x1000, 0x10).unwrap();
        let mut data = [0u8; 4];
        assert!(!bus.read(0xfff, &mut data));
        assert!(!bus.read(0x1010, &mut data));
        assert!(!bus.read(0x100e, &mut data), "access running past the end");
        assert!(!bus.write(0x5000, &[1]));
    }
}
