//! MSI-X: a function's table of message vectors (address, data, mask) and
//! its pending-bit array, both in a BAR, and the capability whose control
//! word enables MSI-X and masks the whole function. A device's interrupt
//! becomes a message to send, or a pending bit while its vector (or the
//! function) is masked, sent when unmasked; the VMM turns a message into a
//! KVM MSI (x86 routing, the ITS on GICv3, a GICv2m frame on GICv2).

use crate::config::ConfigSpace;

/// The MSI-X capability's id.
pub const CAPABILITY_ID: u8 = 0x11;
/// Bytes of one table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Message control: MSI-X enabled.
const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: every vector masked.
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Vector control: this vector masked.
const VECTOR_MASKED: u32 = 1;

/// A message a vector sends: a write of `data` to `address`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// The doorbell address (x86 LAPIC range, ITS translater, v2m frame).
    pub address: u64,
    /// The payload (x86: vector and delivery mode; ITS: event id; v2m: SPI).
    pub data: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    message: MsiMessage,
    vector_control: u32,
}

impl Default for Entry {
    /// Every vector comes up masked (PCI spec).
    fn default() -> Self {
        Self {
            message: MsiMessage::default(),
            vector_control: VECTOR_MASKED,
        }
    }
}

/// A function's MSI-X state.
#[derive(Clone, Debug)]
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    control: u16,
}

impl MsixTable {
    /// A table of `vectors` entries (1..=2048), all masked, MSI-X off.
    pub fn new(vectors: u16) -> Self {
        assert!((1..=2048).contains(&vectors), "{vectors} MSI-X vectors");
        Self {
            entries: vec![Entry::default(); usize::from(vectors)],
            pending: vec![false; usize::from(vectors)],
            control: 0,
        }
    }

    /// Bytes of the table (for sizing its BAR).
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the pending-bit array: 64 vectors a quadword.
    pub fn pba_size(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(64) * 8
    }

    /// The capability's body after its id and next pointer, and its
    /// writable bits: message control (table size read-only; enable and
    /// function mask writable), then the table's and the PBA's BAR and
    /// offset (offsets 8-byte aligned, read-only).
    pub fn capability(&self, table: (u8, u32), pba: (u8, u32)) -> ([u8; 10], [u8; 10]) {
        assert!(table.0 < 6 && pba.0 < 6 && table.1.is_multiple_of(8) && pba.1.is_multiple_of(8));
        let mut body = [0u8; 10];
        body[..2].copy_from_slice(&(self.entries.len() as u16 - 1).to_le_bytes());
        body[2..6].copy_from_slice(&(table.1 | u32::from(table.0)).to_le_bytes());
        body[6..].copy_from_slice(&(pba.1 | u32::from(pba.0)).to_le_bytes());
        let mut writable = [0u8; 10];
        writable[1] = ((CONTROL_ENABLE | CONTROL_FUNCTION_MASK) >> 8) as u8;
        (body, writable)
    }

    /// Adds this table's capability to `space` (table and PBA at the given
    /// BAR and offset); returns its offset, for [`Self::control_written`].
    pub fn add_capability(&self, space: &mut ConfigSpace, table: (u8, u32), pba: (u8, u32)) -> u8 {
        let (body, writable) = self.capability(table, pba);
        space.add_capability(CAPABILITY_ID, &body, &writable)
    }

    /// The guest wrote the capability at `offset` of `space`
    /// ([`crate::ConfigWrite::Capability`]): takes its message control
    /// word; returns the vectors an unmask released, with their messages.
    pub fn control_written(&mut self, space: &ConfigSpace, offset: u8) -> Vec<(u16, MsiMessage)> {
        let control = space.capability_body(offset, 2);
        self.set_control(u16::from_le_bytes([control[0], control[1]]))
    }

    /// Whether the guest turned MSI-X on (else the function uses INTx).
    pub fn enabled(&self) -> bool {
        self.control & CONTROL_ENABLE != 0
    }

    /// Takes the capability's message control word as the guest left it;
    /// returns the pending vectors an unmask released, with their
    /// messages (the sender may route each vector on its own).
    pub fn set_control(&mut self, control: u16) -> Vec<(u16, MsiMessage)> {
        self.control = control & (CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        (0..self.entries.len())
            .filter_map(|v| Some((v as u16, self.release(v)?)))
            .collect()
    }

    /// The number of vectors.
    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// A guest read of the table at `offset` (4 or 8 bytes, aligned);
    /// other accesses read as zero.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((index, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let entry = &self.entries[index];
        let words = [
            entry.message.address as u32,
            (entry.message.address >> 32) as u32,
            entry.message.data,
            entry.vector_control,
        ];
        for (chunk, word) in data.chunks_mut(4).zip(&words[field..]) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
    }

    /// A guest write to the table; returns the message an unmask released.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Option<MsiMessage> {
        let (index, field) = self.locate(offset, data.len())?;
        let entry = &mut self.entries[index];
        for (i, chunk) in data.chunks(4).enumerate() {
            let word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            match field + i {
                0 => {
                    entry.message.address = (entry.message.address & !0xffff_ffff) | u64::from(word)
                }
                1 => {
                    entry.message.address =
                        (entry.message.address & 0xffff_ffff) | u64::from(word) << 32
                }
                2 => entry.message.data = word,
                _ => entry.vector_control = word & VECTOR_MASKED,
            }
        }
        self.release(index)
    }

    /// A guest read of the pending-bit array (writes to it are ignored).
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let first = (offset + i as u64) * 8;
            *byte = (0..8)
                .filter(|bit| self.pending.get((first + bit) as usize) == Some(&true))
                .fold(0, |acc, bit| acc | 1 << bit);
        }
    }

    /// The device raises `vector`: its message, or None when MSI-X is off
    /// (the caller uses INTx), the vector does not exist, or it is masked
    /// (it is then pending, and sent on unmask).
    pub fn trigger(&mut self, vector: u16) -> Option<MsiMessage> {
        let index = usize::from(vector);
        if !self.enabled() || index >= self.entries.len() {
            return None;
        }
        if self.masked(index) {
            self.pending[index] = true;
            return None;
        }
        Some(self.entries[index].message)
    }

    /// Whether `vector` is pending.
    pub fn is_pending(&self, vector: u16) -> bool {
        self.pending.get(usize::from(vector)) == Some(&true)
    }

    /// Back to reset: all vectors masked and cleared, MSI-X off.
    pub fn reset(&mut self) {
        self.entries.fill(Entry::default());
        self.pending.fill(false);
        self.control = 0;
    }

    fn masked(&self, index: usize) -> bool {
        self.control & CONTROL_FUNCTION_MASK != 0
            || self.entries[index].vector_control & VECTOR_MASKED != 0
    }

    /// Sends vector `index`'s pending message if nothing masks it now.
    fn release(&mut self, index: usize) -> Option<MsiMessage> {
        if !self.pending[index] || !self.enabled() || self.masked(index) {
            return None;
        }
        self.pending[index] = false;
        Some(self.entries[index].message)
    }

    /// The entry and first dword an access names: 4 or 8 bytes, aligned to
    /// its size, inside the table.
    fn locate(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let aligned = matches!(len, 4 | 8) && offset.is_multiple_of(len as u64);
        let index = usize::try_from(offset / ENTRY_SIZE).ok()?;
        (aligned && index < self.entries.len())
            .then_some((index, (offset % ENTRY_SIZE / 4) as usize))
    }
}

#[cfg(test)]
#[path = "msix_tests.rs"]
mod tests;
