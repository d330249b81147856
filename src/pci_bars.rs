//! Where PCI BARs are mapped while the guest runs. The MMIO bus is fixed
//! once the vCPUs start, so the host bridge's BAR windows (32-bit and
//! 64-bit, from the back end's `PciLayout`) each sit on it as one
//! [`BarWindow`], and the BARs the guest enables move inside a shared
//! [`BarMap`]. An access inside a window but outside every BAR reads
//! all-ones (a master abort) and writes nothing.
//!
//! Locking: a window access looks its BAR up under the map's lock and
//! calls the BAR's target after releasing it, so the host bridge may
//! move BARs (map lock only) while holding no function lock.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use devices::BusDevice;

/// What answers a mapped BAR's accesses (offsets from the BAR's base).
pub trait BarTarget: Send + Sync {
    /// A guest read.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// A guest write.
    fn write(&self, offset: u64, data: &[u8]);
}

/// Mapped BARs by base: their length and target.
type Bars = BTreeMap<u64, (u64, Arc<dyn BarTarget>)>;

/// The BARs mapped now, by guest address.
#[derive(Default)]
pub struct BarMap {
    windows: Vec<Range<u64>>,
    bars: Mutex<Bars>,
}

impl BarMap {
    /// An empty map for BARs inside `windows`.
    pub fn new(windows: Vec<Range<u64>>) -> Self {
        Self {
            windows,
            bars: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bars> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `[base, base + len)` lies inside one window: the BARs
    /// tandem maps (elsewhere the guest would shadow RAM or devices).
    pub fn fits(&self, base: u64, len: u64) -> bool {
        base.checked_add(len)
            .is_some_and(|end| self.windows.iter().any(|w| w.start <= base && end <= w.end))
    }

    /// Maps `target` at `[base, base + len)`; refused outside the windows
    /// or over another BAR.
    pub fn insert(&self, base: u64, len: u64, target: Arc<dyn BarTarget>) -> Result<()> {
        if !self.fits(base, len) {
            bail!("BAR at {base:#x}+{len:#x} is outside the host bridge's windows");
        }
        let mut bars = self.lock();
        let end = base + len;
        let overlaps = bars
            .range(..end)
            .next_back()
            .is_some_and(|(&b, &(l, _))| b + l > base);
        if overlaps {
            bail!("BAR at {base:#x}+{len:#x} overlaps another");
        }
        bars.insert(base, (len, target));
        Ok(())
    }

    /// Unmaps the BAR at `base`.
    pub fn remove(&self, base: u64) {
        self.lock().remove(&base);
    }

    /// The BARs mapped now, (base, length).
    pub fn mapped(&self) -> Vec<(u64, u64)> {
        self.lock().iter().map(|(&b, &(l, _))| (b, l)).collect()
    }

    /// The target covering the whole access at `addr` and its offset.
    fn resolve(&self, addr: u64, len: usize) -> Option<(Arc<dyn BarTarget>, u64)> {
        let bars = self.lock();
        let (&base, (size, target)) = bars.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset + len as u64 <= *size).then(|| (target.clone(), offset))
    }
}

/// One BAR window on the MMIO bus.
pub struct BarWindow {
    base: u64,
    map: Arc<BarMap>,
}

impl BarWindow {
    /// The window starting at `base`, dispatching into `map`.
    pub fn new(base: u64, map: Arc<BarMap>) -> Self {
        Self { base, map }
    }
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.map.resolve(self.base + offset, data.len()) {
            Some((target, offset)) => target.read(offset, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((target, offset)) = self.map.resolve(self.base + offset, data.len()) {
            target.write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers reads with the low byte of the offset; records writes.
    #[derive(Default)]
    struct Probe(Mutex<Vec<(u64, Vec<u8>)>>);

    impl BarTarget for Probe {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_reach_the_bar_at_its_offset_and_gaps_read_all_ones() {
        let map = Arc::new(BarMap::new(vec![0x1000..0x9000, 0x10_0000..0x20_0000]));
        let probe = Arc::new(Probe::default());
        map.insert(0x2000, 0x1000, probe.clone()).unwrap();
        let mut window = BarWindow::new(0x1000, map.clone());
        let mut data = [0; 4];
        window.read(0x1010, &mut data);
        assert_eq!(data, [0x10; 4]);
        window.write(0x1ffe, &[1, 2]);
        assert_eq!(*probe.0.lock().unwrap(), vec![(0xffe, vec![1, 2])]);
        window.read(0x0ffe, &mut data);
        assert_eq!(data, [0xff; 4], "below the BAR");
        window.read(0x1ffe, &mut data);
        assert_eq!(data, [0xff; 4], "straddles the BAR's end");
        map.remove(0x2000);
        window.read(0x1010, &mut data);
        assert_eq!(data, [0xff; 4], "unmapped");
    }

    #[test]
    fn bars_outside_the_windows_or_over_another_are_refused() {
        let map = BarMap::new(vec![0x1000..0x9000, 0x10_0000..0x20_0000]);
        let probe: Arc<dyn BarTarget> = Arc::new(Probe::default());
        assert!(map.insert(0x8000, 0x2000, probe.clone()).is_err());
        assert!(map.insert(0x9000, 0x1000, probe.clone()).is_err());
        assert!(map.insert(u64::MAX - 0xfff, 0x1000, probe.clone()).is_err());
        map.insert(0x10_0000, 0x8000, probe.clone()).unwrap();
        assert!(map.insert(0x10_4000, 0x8000, probe.clone()).is_err());
        map.insert(0x10_8000, 0x8000, probe).unwrap();
        assert_eq!(map.mapped(), vec![(0x10_0000, 0x8000), (0x10_8000, 0x8000)]);
    }
}
