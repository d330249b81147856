//! Descriptor chains as devices consume them: flattened once into the
//! buffers they name, checked against the layout rule (device-readable
//! buffers before device-writable ones) and against guest memory, then read
//! and written as byte streams that may span descriptors.
//!
//! Devices only ever access guest memory through a chain's own buffers.
//!
//! The walk is bounded: a chain may name at most the queue size in
//! descriptors, indirect tables included, and never more than
//! [`MAX_CHAIN_DESCRIPTORS`] (the spec forbids a driver longer chains). A
//! longer one is cut off after one descriptor more, keeps no buffers and
//! fails [`Chain::validate`], so no device serves it.

use std::collections::VecDeque;

use guest_memory::GuestMemoryMmap;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// The most descriptors any chain may name, whatever the queue size; a
/// chain may name no more than its queue's size either.
pub const MAX_CHAIN_DESCRIPTORS: u16 = 1024;

/// Why a chain cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// The chain names more descriptors than the queue allows.
    #[error("chain longer than {max} descriptors")]
    TooLong {
        /// The cap it broke.
        max: u16,
    },
    /// A device-readable buffer follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
    /// A buffer is not entirely inside guest memory.
    #[error("buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Guest address of the buffer.
        addr: u64,
        /// Its length.
        len: usize,
    },
    /// Fewer bytes than needed in one direction.
    #[error("chain too short: {needed} bytes needed, {available} available")]
    TooShort {
        /// Bytes required.
        needed: usize,
        /// Bytes the chain has.
        available: usize,
    },
}

/// One descriptor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: usize,
    /// Whether the device may write it (VRING_DESC_F_WRITE).
    pub writable: bool,
}

/// A popped descriptor chain: its head index and its buffers in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// Head descriptor index, for the used ring.
    pub head: u16,
    /// The buffers, indirect tables already followed; none if the chain
    /// is too long.
    pub buffers: Vec<Buffer>,
    /// The chain named more than the cap it was walked with (it was not
    /// walked to its end); [`Chain::validate`] refuses it.
    pub too_long: Option<u16>,
}

impl Chain {
    /// Flattens `chain`, reading at most `max` descriptors (and one more to
    /// tell that it is too long). A chain the driver broke (bad `next`, a
    /// loop, a table outside memory) ends where it stops making sense.
    pub fn new(chain: DescriptorChain<&GuestMemoryMmap>, max: u16) -> Self {
        let head = chain.head_index();
        let mut buffers: Vec<Buffer> = chain
            .take(usize::from(max) + 1)
            .map(|desc| Buffer {
                addr: desc.addr(),
                len: desc.len() as usize,
                writable: desc.is_write_only(),
            })
            .collect();
        let too_long = (buffers.len() > usize::from(max)).then_some(max);
        if too_long.is_some() {
            buffers = Vec::new();
        }
        Self {
            head,
            buffers,
            too_long,
        }
    }

    /// A chain of `buffers`, as a walk of at most the cap would give.
    pub fn from_buffers(head: u16, buffers: Vec<Buffer>) -> Self {
        Self {
            head,
            buffers,
            too_long: None,
        }
    }

    /// Checks the descriptor cap, the layout rule and that every buffer is
    /// in guest memory.
    pub fn validate(&self, mem: &GuestMemoryMmap) -> Result<(), ChainError> {
        if let Some(max) = self.too_long {
            return Err(ChainError::TooLong { max });
        }
        let mut seen_writable = false;
        for buffer in &self.buffers {
            if seen_writable && !buffer.writable {
                return Err(ChainError::ReadableAfterWritable);
            }
            seen_writable |= buffer.writable;
            let access = if buffer.writable {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(buffer.addr, buffer.len, access) {
                return Err(ChainError::OutsideMemory {
                    addr: buffer.addr.0,
                    len: buffer.len,
                });
            }
        }
        Ok(())
    }

    /// The device-readable bytes, in order.
    pub fn readable(&self) -> Segments {
        self.segments(false)
    }

    /// The device-writable bytes, in order.
    pub fn writable(&self) -> Segments {
        self.segments(true)
    }

    fn segments(&self, writable: bool) -> Segments {
        let parts = self
            .buffers
            .iter()
            .filter(|b| b.writable == writable && b.len > 0);
        Segments {
            parts: parts.map(|b| (b.addr, b.len)).collect(),
        }
    }
}

/// A run of guest bytes spread over buffers. Addresses are only those of
/// a chain's buffers; reads and writes fail rather than go past them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    parts: VecDeque<(GuestAddress, usize)>,
}

impl Segments {
    /// Total bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|&(_, len)| len).sum()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// How many pieces the bytes are in: what holding them costs.
    pub fn count(&self) -> usize {
        self.parts.len()
    }

    /// The `(address, length)` pieces, in order.
    pub fn parts(&self) -> impl Iterator<Item = (GuestAddress, usize)> + '_ {
        self.parts.iter().copied()
    }

    /// Removes and returns the first `n` bytes.
    pub fn split_front(&mut self, n: usize) -> Result<Segments, ChainError> {
        self.check_len(n)?;
        let mut front = Segments::default();
        let mut rest = n;
        while rest > 0 {
            let Some((addr, len)) = self.parts.pop_front() else {
                break;
            };
            if len > rest {
                // Saturating: an address past the end stays outside guest memory.
                let next = GuestAddress(addr.0.saturating_add(rest as u64));
                self.parts.push_front((next, len - rest));
                front.parts.push_back((addr, rest));
                break;
            }
            front.parts.push_back((addr, len));
            rest -= len;
        }
        Ok(front)
    }

    /// Removes and returns the last `n` bytes.
    pub fn split_back(&mut self, n: usize) -> Result<Segments, ChainError> {
        let keep = self.check_len(n)?;
        let front = self.split_front(keep)?;
        Ok(std::mem::replace(self, front))
    }

    fn check_len(&self, needed: usize) -> Result<usize, ChainError> {
        let available = self.len();
        available
            .checked_sub(needed)
            .ok_or(ChainError::TooShort { needed, available })
    }

    /// Fills `buf` from the first `buf.len()` bytes.
    pub fn read_into(&self, mem: &GuestMemoryMmap, buf: &mut [u8]) -> Result<(), ChainError> {
        self.check_len(buf.len())?;
        let mut done = 0;
        for (addr, len) in self.parts() {
            let n = len.min(buf.len() - done);
            mem.read_slice(&mut buf[done..done + n], addr)
                .map_err(|_| ChainError::OutsideMemory { addr: addr.0, len })?;
            done += n;
            if done == buf.len() {
                break;
            }
        }
        Ok(())
    }

    /// Writes as much of `data` as fits; returns the bytes written.
    pub fn write_from(&self, mem: &GuestMemoryMmap, data: &[u8]) -> Result<usize, ChainError> {
        let mut done = 0;
        for (addr, len) in self.parts() {
            if done == data.len() {
                break;
            }
            let n = len.min(data.len() - done);
            mem.write_slice(&data[done..done + n], addr)
                .map_err(|_| ChainError::OutsideMemory { addr: addr.0, len })?;
            done += n;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn buffer(addr: u64, len: usize, writable: bool) -> Buffer {
        Buffer {
            addr: GuestAddress(addr),
            len,
            writable,
        }
    }

    #[test]
    fn validate_enforces_order_and_memory() {
        let mem = mem();
        let ok = Chain::from_buffers(0, vec![buffer(0x100, 16, false), buffer(0x200, 1, true)]);
        assert_eq!(ok.validate(&mem), Ok(()));
        let mut swapped = ok.clone();
        swapped.buffers.reverse();
        assert_eq!(
            swapped.validate(&mem),
            Err(ChainError::ReadableAfterWritable)
        );
        let outside = Chain::from_buffers(0, vec![buffer(0xfff0, 0x20, true)]);
        let err = ChainError::OutsideMemory {
            addr: 0xfff0,
            len: 0x20,
        };
        assert_eq!(outside.validate(&mem), Err(err));
    }

    #[test]
    fn segments_split_and_copy_across_buffers() {
        let mem = mem();
        let chain = Chain::from_buffers(
            3,
            vec![
                buffer(0x100, 4, true),
                buffer(0x0, 0, true),
                buffer(0x200, 6, true),
            ],
        );
        let mut w = chain.writable();
        assert_eq!(w.len(), 10);
        let tail = w.split_back(1).unwrap();
        assert_eq!(
            tail.parts().collect::<Vec<_>>(),
            vec![(GuestAddress(0x205), 1)]
        );
        assert_eq!(w.write_from(&mem, b"abcdefghijkl").unwrap(), 9);
        let mut out = [0u8; 9];
        w.read_into(&mem, &mut out).unwrap();
        assert_eq!(&out, b"abcdefghi");
        assert_eq!(
            mem.read_obj::<u8>(GuestAddress(0x205)).unwrap(),
            0,
            "tail untouched"
        );
        let front = w.split_front(5).unwrap();
        assert_eq!(
            front.parts().collect::<Vec<_>>(),
            vec![(GuestAddress(0x100), 4), (GuestAddress(0x200), 1)]
        );
        assert_eq!(w.len(), 4);
        assert!(matches!(w.split_front(5), Err(ChainError::TooShort { .. })));
        let mut big = [0u8; 5];
        assert!(w.read_into(&mem, &mut big).is_err());
    }

    #[test]
    fn a_hostile_indirect_chain_is_capped_at_the_queue_size() {
        use crate::virtio::pop_chain;
        use crate::virtio::testing::{test_memory, TestRing};
        // The attack: one head naming an indirect table of 4000 descriptors
        // that all point at the same buffer.
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut queue = ring.queue(false);
        ring.add_indirect_chain(0x10000, &[(0x8000, 0x1000, true); 4000]);
        // A chain of exactly the queue size is still served.
        ring.add_indirect_chain(0x30000, &[(0x8000, 0x1000, true); 16]);
        let hostile = pop_chain(&mut queue, &mem).unwrap().unwrap();
        assert!(
            hostile.buffers.len() <= 16,
            "the walker kept {} descriptors",
            hostile.buffers.len()
        );
        assert!(hostile.buffers.is_empty());
        assert_eq!(hostile.validate(&mem), Err(ChainError::TooLong { max: 16 }));
        let fine = pop_chain(&mut queue, &mem).unwrap().unwrap();
        assert_eq!(fine.buffers.len(), 16);
        assert_eq!(fine.validate(&mem), Ok(()));
    }

    #[test]
    fn indirect_tables_are_followed() {
        use crate::virtio::pop_chain;
        use crate::virtio::testing::TestRing;
        let mem = mem();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut queue = ring.queue(false);
        let buffers = [(0x8000, 16, false), (0x9000, 512, true), (0xa000, 1, true)];
        let head = ring.add_indirect_chain(0x7000, &buffers);
        let chain = pop_chain(&mut queue, &mem).unwrap().unwrap();
        assert_eq!(chain.head, head);
        let expected: Vec<Buffer> = buffers
            .iter()
            .map(|&(a, l, w)| buffer(a, l as usize, w))
            .collect();
        assert_eq!(chain.buffers, expected);
        assert_eq!(chain.validate(&mem), Ok(()));
    }
}
