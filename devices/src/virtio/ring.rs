//! Serving a virtqueue: popping chains, returning them through the used
//! ring, and the EVENT_IDX handshake both ways — `avail_event` keeps the
//! driver from kicking while the device is busy, `used_event` decides
//! whether the driver wants an interrupt.
//!
//! Chains are walked with the descriptor cap (the queue size, at most
//! [`MAX_CHAIN_DESCRIPTORS`]). On a worker thread, [`drain_queue`] returns
//! between chains when the worker is asked to pause or stop, and writes
//! nothing into the rings once it is told to stop.

use std::sync::atomic::{fence, Ordering};

use guest_memory::GuestMemoryMmap;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

use super::chain::MAX_CHAIN_DESCRIPTORS;
use super::worker::{come_back_later, publish, should_yield};
use super::{Chain, Interrupt};

const AVAIL_RING_HEADER: u64 = 4;
const USED_RING_HEADER: u64 = 4;
const USED_ELEM_LEN: u64 = 8;

/// Pops the next chain of `queue`, walking at most the queue size in
/// descriptors (a longer chain comes back refused, see [`Chain::new`]). An
/// error means the driver corrupted the available ring; `Ok(None)` means
/// it is empty.
///
/// A head past the descriptor table is such an error, returned here so
/// that it never reaches `Queue::add_used`, which would log it at `error`
/// for every such chain.
pub fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<Option<Chain>, virtio_queue::Error> {
    let (size, max) = (queue.size(), queue.size().min(MAX_CHAIN_DESCRIPTORS));
    match queue.iter(mem)?.next() {
        Some(chain) if chain.head_index() >= size => {
            Err(virtio_queue::Error::InvalidDescriptorIndex)
        }
        chain => Ok(chain.map(|chain| Chain::new(chain, max))),
    }
}

/// Runs a ring write through [`publish`]: `Ok(None)` when the worker was
/// told to stop and the write did not happen.
pub fn guarded<T>(
    write: impl FnOnce() -> Result<T, virtio_queue::Error>,
) -> Result<Option<T>, virtio_queue::Error> {
    publish(write).transpose()
}

/// Serves every available chain of `queue` (queue `index` of its device)
/// with `serve`, which returns the number of bytes it wrote into the
/// chain, then interrupts the driver if it asked for it. Chains added
/// while serving are picked up before returning.
///
/// On a worker asked to pause or stop it returns after the chain in hand
/// (the worker serves the rest after a pause); once told to stop it
/// returns nothing more through the used ring.
pub fn drain_queue(
    index: usize,
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    mut serve: impl FnMut(&Chain) -> u32,
) -> Result<(), virtio_queue::Error> {
    let used_any = take_available(queue, mem, |queue, chain| {
        let len = serve(&chain);
        Ok(guarded(|| queue.add_used(mem, chain.head, len))?.is_some())
    })?;
    if used_any {
        guarded(|| interrupt.notify_queue(index, queue, mem))?;
    }
    Ok(())
}

/// Pops every available chain of `queue` and hands it to `take`, which
/// returns whether to go on (false: the worker was told to stop). Returns
/// whether it took any. The loop under [`drain_queue`], for a device that
/// returns its chains itself (virtio-net's transmit batches).
///
/// Kicks stay off while it runs (without EVENT_IDX through
/// VRING_USED_F_NO_NOTIFY; with it, `avail_event` stays behind) and are
/// re-armed before it returns, with one more look for chains added
/// meanwhile. It returns early on a worker asked to pause or stop, and at
/// a budget of twice the queue size, asking the worker to come back
/// after its other events.
pub fn take_available(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut take: impl FnMut(&mut Queue, Chain) -> Result<bool, virtio_queue::Error>,
) -> Result<bool, virtio_queue::Error> {
    let mut took_any = false;
    let mut more_promised = false;
    // A driver has at most the queue size in flight; serving twice that in
    // one call means it refills as fast as we serve, or our own writes make
    // more (a ring laid over another, or over a buffer): come back after
    // the worker's other events instead of spinning here.
    let budget = usize::from(queue.size()).max(1) * 2;
    let mut served = 0;
    loop {
        if guarded(|| queue.disable_notification(mem))?.is_none() {
            return Ok(took_any);
        }
        let mut popped = false;
        let yielded = loop {
            if should_yield() {
                break true;
            }
            if served == budget {
                come_back_later();
                break true;
            }
            let Some(chain) = pop_chain(queue, mem)? else {
                break false;
            };
            took_any = true;
            if !take(queue, chain)? {
                return Ok(took_any);
            }
            popped = true;
            served += 1;
        };
        // The last pass promised more and there was none: a broken ring
        // (our own writes move the available index). Stop, not spin.
        if more_promised && !popped {
            break;
        }
        // Re-arms kicks (avail_event = next_avail); true if the driver
        // added more in the meantime.
        if yielded || !guarded(|| queue.enable_notification(mem))?.unwrap_or(false) {
            break;
        }
        more_promised = true;
    }
    Ok(took_any)
}

/// Returns several chains, `(head, length)` in order, through the used ring
/// with a single used-index update, so the driver never sees part of a
/// multi-buffer (mergeable) frame. Follow with [`notify_since`].
pub fn add_used_batch(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    elems: &[(u16, u32)],
) -> Result<(), virtio_queue::Error> {
    let (size, start) = (queue.size(), queue.next_used());
    let ring = GuestAddress(queue.used_ring());
    for (i, &(head, len)) in (0u16..).zip(elems) {
        if head >= size {
            return Err(virtio_queue::Error::InvalidDescriptorIndex);
        }
        let slot = u64::from(start.wrapping_add(i) % size);
        let elem = ring
            .checked_add(USED_RING_HEADER + USED_ELEM_LEN * slot)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        bytes[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&bytes, elem)
            .map_err(virtio_queue::Error::GuestMemory)?;
    }
    let next = start.wrapping_add(elems.len() as u16);
    let idx = ring
        .checked_add(2)
        .ok_or(virtio_queue::Error::AddressOverflow)?;
    mem.store(next.to_le(), idx, Ordering::Release)
        .map_err(virtio_queue::Error::GuestMemory)?;
    queue.set_next_used(next);
    Ok(())
}

/// Interrupts the driver for the used entries added to `queue` (queue
/// `index`) since the used index was `old_used` (by [`add_used_batch`]),
/// unless EVENT_IDX says it does
/// not want one yet (the spec's `vring_need_event`).
pub fn notify_since(
    index: usize,
    queue: &Queue,
    mem: &GuestMemoryMmap,
    interrupt: &Interrupt,
    old_used: u16,
) -> Result<(), virtio_queue::Error> {
    let new = queue.next_used();
    if new == old_used {
        return Ok(());
    }
    let needed = if queue.event_idx_enabled() {
        // Our used-index store must be visible before used_event is read.
        fence(Ordering::SeqCst);
        let offset = AVAIL_RING_HEADER + 2 * u64::from(queue.size());
        let used_event = GuestAddress(queue.avail_ring())
            .checked_add(offset)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let used_event = u16::from_le(
            mem.load(used_event, Ordering::Relaxed)
                .map_err(virtio_queue::Error::GuestMemory)?,
        );
        new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old_used)
    } else {
        true
    };
    interrupt.notify_if(index, needed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{test_memory, TestRing};
    use crate::IrqTrigger;

    /// Serves `chains` one-buffer chains with EVENT_IDX on and `used_event`
    /// as given; returns whether the interrupt fired.
    fn serve_with_used_event(chains: u16, used_event: u16) -> (bool, Interrupt, TestRing) {
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut queue = ring.queue(true);
        for i in 0..chains {
            ring.add_chain(&[(0x8000 + 0x100 * u64::from(i), 0x100, true)]);
        }
        ring.set_used_event(used_event);
        let irq = IrqTrigger::new().unwrap();
        let interrupt = Interrupt::new(irq.clone());
        drain_queue(0, &mut queue, &mem, &interrupt, |_| 7).unwrap();
        assert_eq!(ring.used().len(), usize::from(chains));
        let fired = irq.event_fd().read().is_ok();
        (fired, interrupt, ring)
    }

    #[test]
    fn event_idx_suppresses_an_interrupt_the_driver_does_not_want() {
        // The driver wants an interrupt only after used index 5.
        let (fired, interrupt, _) = serve_with_used_event(3, 5);
        assert!(!fired, "irq EventFd must stay at 0");
        assert_eq!(interrupt.status(), 0);
        let stats = interrupt.stats().snapshot();
        assert_eq!((stats.interrupts_sent, stats.interrupts_suppressed), (0, 1));
    }

    #[test]
    fn event_idx_interrupts_once_used_event_is_passed() {
        let (fired, interrupt, ring) = serve_with_used_event(3, 2);
        assert!(fired);
        assert_eq!(interrupt.status(), crate::virtio::INT_USED_BUFFER);
        assert_eq!(interrupt.stats().snapshot().interrupts_sent, 1);
        assert_eq!(ring.used(), vec![(0, 7), (1, 7), (2, 7)]);
        // avail_event asks for a kick at the next new buffer only.
        assert_eq!(ring.avail_event(), 3);
    }

    #[test]
    fn without_event_idx_every_batch_interrupts() {
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut queue = ring.queue(false);
        ring.set_used_event(100);
        ring.add_chain(&[(0x8000, 0x10, true)]);
        let irq = IrqTrigger::new().unwrap();
        let interrupt = Interrupt::new(irq.clone());
        drain_queue(0, &mut queue, &mem, &interrupt, |_| 0).unwrap();
        assert_eq!(irq.event_fd().read().unwrap(), 1);
        // An empty queue neither interrupts nor counts a suppression.
        drain_queue(0, &mut queue, &mem, &interrupt, |_| 0).unwrap();
        assert!(irq.event_fd().read().is_err());
        assert_eq!(interrupt.stats().snapshot().interrupts_suppressed, 0);
    }

    #[test]
    fn a_corrupt_avail_index_is_an_error() {
        let mem = test_memory();
        let ring = TestRing::new(&mem, 0, 16);
        let mut queue = ring.queue(false);
        // More entries than the queue holds.
        mem.write_obj(40u16, GuestAddress(0x1002)).unwrap();
        let interrupt = Interrupt::new(IrqTrigger::new().unwrap());
        assert!(drain_queue(0, &mut queue, &mem, &interrupt, |_| 0).is_err());
    }

    /// Found by fuzz/ (virtio_chain): a used ring placed right after the
    /// available ring's flags, so the used flags the device writes are the
    /// available index. Each disable/enable of notifications then moves
    /// the index back and forth and `enable_notification` keeps reporting
    /// buffers `pop_chain` never finds: the worker spun, burning a host
    /// CPU until a pause or stop made it yield (and forever off a worker
    /// thread, as here).
    #[test]
    fn overlapping_rings_cannot_keep_the_device_busy_forever() {
        let mem = test_memory();
        let mut queue = Queue::new(16).unwrap();
        queue.set_size(16);
        queue.set_desc_table_address(Some(0), Some(0));
        queue.set_avail_ring_address(Some(0x1002), Some(0));
        queue.set_used_ring_address(Some(0x1004), Some(0)); // flags = avail idx
        queue.set_ready(true);
        mem.write_obj(0x8000u64, GuestAddress(0)).unwrap();
        mem.write_obj(0x10u32, GuestAddress(8)).unwrap();
        let interrupt = Interrupt::new(IrqTrigger::new().unwrap());
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = drain_queue(0, &mut queue, &mem, &interrupt, |_| 0);
            let _ = done.send(result.is_ok());
        });
        let wait = std::time::Duration::from_secs(5);
        assert!(
            finished.recv_timeout(wait).is_ok(),
            "drain_queue never returned"
        );
    }

    #[test]
    fn rings_that_refill_themselves_cannot_keep_the_device_busy_forever() {
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut queue = ring.queue(false);
        ring.add_chain(&[(0x8000, 0x10, true)]);
        let avail_idx = GuestAddress(0x1000 + 2); // TestRing: avail ring at base + 0x1000
        let interrupt = Interrupt::new(IrqTrigger::new().unwrap());
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut served = 0;
            // What a device does whose buffer lies over the available
            // ring: every request it serves makes one more available.
            let result = drain_queue(0, &mut queue, &mem, &interrupt, |_| {
                served += 1;
                let idx: u16 = mem.read_obj(avail_idx).unwrap();
                mem.write_obj(idx.wrapping_add(1), avail_idx).unwrap();
                0
            });
            let _ = done.send((result.is_ok(), served));
        });
        let wait = std::time::Duration::from_secs(5);
        let (_, served) = finished
            .recv_timeout(wait)
            .expect("drain_queue never returned");
        assert!(served <= 32, "served {served} chains in one call");
    }

    #[test]
    fn a_batch_is_published_with_one_index_update() {
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 4);
        let mut queue = ring.queue(true);
        for _ in 0..3 {
            ring.add_chain(&[(0x8000, 0x10, true)]);
        }
        let heads: Vec<u16> = (0..3)
            .map(|_| pop_chain(&mut queue, &mem).unwrap().unwrap().head)
            .collect();
        let irq = IrqTrigger::new().unwrap();
        let interrupt = Interrupt::new(irq.clone());
        // The driver wants an interrupt after used index 2: not yet.
        ring.set_used_event(2);
        add_used_batch(&mut queue, &mem, &[(heads[0], 5), (heads[1], 6)]).unwrap();
        notify_since(0, &queue, &mem, &interrupt, 0).unwrap();
        assert!(irq.event_fd().read().is_err());
        assert_eq!(ring.used(), vec![(0, 5), (1, 6)]);
        add_used_batch(&mut queue, &mem, &[(heads[2], 7)]).unwrap();
        notify_since(0, &queue, &mem, &interrupt, 2).unwrap();
        assert_eq!(irq.event_fd().read().unwrap(), 1);
        assert_eq!(ring.used(), vec![(0, 5), (1, 6), (2, 7)]);
        let stats = interrupt.stats().snapshot();
        assert_eq!((stats.interrupts_sent, stats.interrupts_suppressed), (1, 1));
        // A head index past the queue size is refused, nothing published.
        assert!(add_used_batch(&mut queue, &mem, &[(9, 1)]).is_err());
        assert_eq!(queue.next_used(), 3);
    }
}
