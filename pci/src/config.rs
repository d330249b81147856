//! One PCI function's configuration space: the type-0 header, its six BAR
//! slots with the sizing protocol (a write of all-ones reads back the size
//! mask), the command register, the capability list, and per-bit write
//! masks so read-only bits stay read-only. A write reports what it changed
//! ([`ConfigWrite`]) for the owner to act on: map a moved BAR, start or stop
//! decoding, react to a capability's control bits.

/// Conventional configuration space (what ECAM maps beyond reads as 0:
/// no extended capabilities).
pub const CONFIG_SIZE: usize = 256;

const VENDOR_ID: usize = 0x00;
const DEVICE_ID: usize = 0x02;
const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const REVISION: usize = 0x08;
const CACHE_LINE_SIZE: usize = 0x0c;
const BAR0: usize = 0x10;
const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
const SUBSYSTEM_ID: usize = 0x2e;
const CAPABILITIES_POINTER: usize = 0x34;
const INTERRUPT_LINE: usize = 0x3c;
const INTERRUPT_PIN: usize = 0x3d;
/// Capabilities start after the header.
const FIRST_CAPABILITY: usize = 0x40;

/// Command register: I/O space decoding.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: the function may master the bus (DMA, MSI writes).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Command bits a guest may set: I/O, memory, bus master, parity error
/// response, SERR#, INTx disable.
const COMMAND_WRITABLE: u16 =
    COMMAND_IO | COMMAND_MEMORY | COMMAND_BUS_MASTER | 0x0140 | COMMAND_INTX_DISABLE;
/// Status register: a capability list exists.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Status register: the function's INTx is pending (disabled or not).
const STATUS_INTERRUPT: u8 = 1 << 3;

/// Sets the status register's Interrupt Status bit in `data`, what a
/// configuration read at `register` returned, if the read covers it: the
/// owner knows whether its interrupt is pending, the header does not.
pub fn show_interrupt_pending(register: u16, data: &mut [u8]) {
    if let Some(byte) = (STATUS as u16)
        .checked_sub(register)
        .and_then(|at| data.get_mut(usize::from(at)))
    {
        *byte |= STATUS_INTERRUPT;
    }
}

/// What a function is, for its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// PCI-SIG vendor id.
    pub vendor_id: u16,
    /// The vendor's device id.
    pub device_id: u16,
    /// Revision id.
    pub revision: u8,
    /// Class code: base class << 16 | subclass << 8 | programming interface.
    pub class_code: u32,
    /// Subsystem vendor id.
    pub subsystem_vendor_id: u16,
    /// Subsystem id.
    pub subsystem_id: u16,
    /// INTx pin: 0 none, 1..=4 INTA#..INTD#.
    pub interrupt_pin: u8,
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Memory below 4 GiB (one slot).
    Memory32,
    /// Memory anywhere in 64 bits (two slots, the high half in the next).
    Memory64 {
        /// Reads have no side effects, so the guest may map it cached.
        prefetchable: bool,
    },
    /// I/O ports (x86).
    Io,
}

/// A base address register: its kind and size (a power of two, at least
/// 16 bytes of memory or 4 ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// What it decodes.
    pub kind: BarKind,
    /// How many bytes or ports.
    pub size: u64,
}

impl Bar {
    /// The read-only low bits that tell the guest the BAR's kind.
    fn flags(self) -> u32 {
        match self.kind {
            BarKind::Memory32 => 0,
            BarKind::Memory64 { prefetchable } => 0b100 | if prefetchable { 0b1000 } else { 0 },
            BarKind::Io => 1,
        }
    }

    /// The address bits a guest may write: all above the size.
    fn address_mask(self) -> u64 {
        !(self.size - 1)
    }
}

/// What a configuration write changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigWrite {
    /// Nothing the owner must act on.
    Nothing,
    /// The command register changed (decoding, bus mastering, INTx).
    Command {
        /// Before the write.
        old: u16,
        /// After it.
        new: u16,
    },
    /// A BAR's address changed.
    Bar {
        /// The BAR (for a 64-bit BAR, its low slot).
        index: usize,
        /// Its address before the write.
        old: u64,
        /// After it.
        new: u64,
    },
    /// Bytes of the capability at this offset were written.
    Capability {
        /// The capability's offset in configuration space.
        offset: u8,
    },
}

/// A function's configuration space.
#[derive(Clone, Debug)]
pub struct ConfigSpace {
    bytes: [u8; CONFIG_SIZE],
    /// Per bit: may the guest write it.
    writable: [u8; CONFIG_SIZE],
    bars: [Option<Bar>; 6],
    /// Offsets of the capabilities, in list order.
    capabilities: Vec<u8>,
    /// First byte no capability uses yet.
    next_free: usize,
}

impl ConfigSpace {
    /// A type-0 header with no BARs and no capabilities.
    pub fn new(header: Header) -> Self {
        let mut space = Self {
            bytes: [0; CONFIG_SIZE],
            writable: [0; CONFIG_SIZE],
            bars: [None; 6],
            capabilities: Vec::new(),
            next_free: FIRST_CAPABILITY,
        };
        space.put(VENDOR_ID, &header.vendor_id.to_le_bytes());
        space.put(DEVICE_ID, &header.device_id.to_le_bytes());
        let class = header.class_code.to_le_bytes();
        space.put(REVISION, &[header.revision, class[0], class[1], class[2]]);
        space.put(
            SUBSYSTEM_VENDOR_ID,
            &header.subsystem_vendor_id.to_le_bytes(),
        );
        space.put(SUBSYSTEM_ID, &header.subsystem_id.to_le_bytes());
        space.put(INTERRUPT_PIN, &[header.interrupt_pin]);
        space.allow(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        space.allow(CACHE_LINE_SIZE, &[0xff]);
        space.allow(INTERRUPT_LINE, &[0xff]);
        space
    }

    /// Gives BAR slot `index` to `bar` (and, for a 64-bit one, the next
    /// slot to its high half). Panics on a slot taken or out of range, or
    /// a size that is not a power of two of at least 16 bytes (4 ports):
    /// those are mistakes in tandem, not guest input.
    pub fn add_bar(&mut self, index: usize, bar: Bar) {
        let minimum = if bar.kind == BarKind::Io { 4 } else { 16 };
        assert!(
            bar.size.is_power_of_two() && bar.size >= minimum,
            "BAR size {:#x}",
            bar.size
        );
        let wide = matches!(bar.kind, BarKind::Memory64 { .. });
        assert!(index + usize::from(wide) < 6, "BAR {index} out of range");
        assert!(self.bars[index].is_none() && !(wide && self.bars[index + 1].is_some()));
        assert!(
            wide || bar.size <= 1 << 31,
            "a 32-bit BAR of {:#x} bytes",
            bar.size
        );
        self.bars[index] = Some(bar);
        let mask = bar.address_mask();
        // The size (at least 16 bytes, 4 ports) keeps the flag bits out.
        self.put(BAR0 + 4 * index, &bar.flags().to_le_bytes());
        self.allow(BAR0 + 4 * index, &(mask as u32).to_le_bytes());
        if wide {
            self.allow(BAR0 + 4 * (index + 1), &((mask >> 32) as u32).to_le_bytes());
        }
    }

    /// Appends a capability with id `id`; `body` follows its id and next
    /// pointer, `writable` (as long as `body`, or empty for all read-only)
    /// says which of its bits the guest may write. Returns its offset.
    /// Panics when configuration space is full (a mistake in tandem).
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> u8 {
        assert!(writable.is_empty() || writable.len() == body.len());
        let offset = self.next_free;
        assert!(
            offset + 2 + body.len() <= CONFIG_SIZE,
            "configuration space full"
        );
        self.put(offset, &[id, 0]);
        self.put(offset + 2, body);
        self.allow(offset + 2, writable);
        let offset = offset as u8;
        match self.capabilities.last() {
            Some(&last) => self.bytes[usize::from(last) + 1] = offset,
            None => {
                self.bytes[CAPABILITIES_POINTER] = offset;
                let status = self.read_u16(STATUS) | STATUS_CAPABILITIES;
                self.put(STATUS, &status.to_le_bytes());
            }
        }
        self.capabilities.push(offset);
        self.next_free = (usize::from(offset) + 2 + body.len()).next_multiple_of(4);
        offset
    }

    /// A guest read of `data.len()` bytes (1, 2 or 4, within one dword) at
    /// `offset`; anything else reads as all-ones, as on a real bus.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        let start = usize::from(offset);
        match access_range(start, data.len()) {
            Some(range) if range.end <= CONFIG_SIZE => data.copy_from_slice(&self.bytes[range]),
            Some(_) => data.fill(0),
            None => data.fill(0xff),
        }
    }

    /// A guest write: only writable bits change. Says what changed.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> ConfigWrite {
        let start = usize::from(offset);
        let Some(range) = access_range(start, data.len()).filter(|r| r.end <= CONFIG_SIZE) else {
            return ConfigWrite::Nothing;
        };
        let command = self.command();
        let bar = self.bar_slot(start);
        let bar_before = bar.and_then(|index| self.bar_address(index));
        for (at, &value) in range.clone().zip(data) {
            let mask = self.writable[at];
            self.bytes[at] = (self.bytes[at] & !mask) | (value & mask);
        }
        if range.start < COMMAND + 2 && range.end > COMMAND && self.command() != command {
            return ConfigWrite::Command {
                old: command,
                new: self.command(),
            };
        }
        if let (Some(index), Some(old)) = (bar, bar_before) {
            let new = self.bar_address(index).unwrap_or(old);
            return if new == old {
                ConfigWrite::Nothing
            } else {
                ConfigWrite::Bar { index, old, new }
            };
        }
        match self.capability_at(start) {
            Some(offset) => ConfigWrite::Capability { offset },
            None => ConfigWrite::Nothing,
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND)
    }

    /// The BAR in slot `index`, if one was added there (the high slot of a
    /// 64-bit BAR has none).
    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// The address BAR `index` holds now (what the guest programmed,
    /// flags left out), or None for a slot with no BAR.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bar(index)?;
        let flags = if bar.kind == BarKind::Io {
            0b11
        } else {
            0b1111
        };
        let low = u64::from(self.read_u32(BAR0 + 4 * index) & !flags);
        Some(match bar.kind {
            BarKind::Memory64 { .. } => {
                u64::from(self.read_u32(BAR0 + 4 * (index + 1))) << 32 | low
            }
            _ => low,
        })
    }

    /// Whether BAR `index` decodes now: its space is enabled in the command
    /// register. (Whether its address is a sane place is the owner's
    /// question.)
    pub fn bar_enabled(&self, index: usize) -> bool {
        let needed = match self.bar(index).map(|b| b.kind) {
            Some(BarKind::Io) => COMMAND_IO,
            Some(_) => COMMAND_MEMORY,
            None => return false,
        };
        self.command() & needed != 0
    }

    /// Bytes of the capability at `offset` (after its id and next pointer).
    pub fn capability_body(&self, offset: u8, len: usize) -> &[u8] {
        let start = usize::from(offset) + 2;
        &self.bytes[start..(start + len).min(CONFIG_SIZE)]
    }

    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.bytes[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn allow(&mut self, at: usize, mask: &[u8]) {
        self.writable[at..at + mask.len()].copy_from_slice(mask);
    }

    fn read_u16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn read_u32(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    /// The BAR whose register (either half, for 64 bits) holds `offset`.
    fn bar_slot(&self, offset: usize) -> Option<usize> {
        let slot = offset.checked_sub(BAR0)? / 4;
        if slot >= 6 {
            return None;
        }
        if self.bars[slot].is_some() {
            return Some(slot);
        }
        let low = slot.checked_sub(1)?;
        matches!(
            self.bars[low],
            Some(Bar {
                kind: BarKind::Memory64 { .. },
                ..
            })
        )
        .then_some(low)
    }

    /// The capability whose bytes hold `offset`.
    fn capability_at(&self, offset: usize) -> Option<u8> {
        self.capabilities
            .iter()
            .rev()
            .find(|&&start| usize::from(start) <= offset)
            .copied()
            .filter(|_| offset < self.next_free)
    }
}

/// The byte range of a configuration access, if it is one the bus carries:
/// 1, 2 or 4 bytes that do not cross a dword.
fn access_range(start: usize, len: usize) -> Option<std::ops::Range<usize>> {
    (matches!(len, 1 | 2 | 4) && start % 4 + len <= 4 && start.is_multiple_of(len))
        .then(|| start..start + len)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
