//! Feeds descriptor-chain walking (devices/src/virtio/chain.rs, ring.rs):
//! a virtqueue of fuzzed size at fuzzed ring addresses over guest memory
//! the fuzz input writes (structured descriptors, indirect tables and
//! available ring, plus raw pokes), then `pop_chain`, `Chain::validate`,
//! the readable/writable `Segments` (split, read, write), `add_used`,
//! `add_used_batch`, `notify_since` and `drain_queue`, as devices use them.
//!
//! Checks: a popped chain is cut off at the descriptor cap (the queue
//! size) exactly when the driver's chain is longer, and then keeps no
//! buffers; a validated chain's buffers lie in RAM and keep readable
//! before writable; segment lengths add up; writes through a writable
//! segment land only in writable buffers.
#![no_main]

use arbitrary::Arbitrary;
use devices::virtio::{add_used_batch, drain_queue, notify_since, pop_chain, Interrupt};
use devices::IrqTrigger;
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::*;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemory};

#[derive(Arbitrary, Debug)]
enum Rings {
    /// The standard layout at queue slot 0.
    Standard,
    /// Anywhere (the transport checks rings before activation, but a
    /// guest can change memory later).
    Fuzzed { desc: u32, avail: u32, used: u32 },
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Pop a chain and exercise it; `split` bytes off the front of its
    /// readable part, `back` off its writable part, `fill` into it.
    Pop {
        split: u16,
        back: u16,
        fill: Vec<u8>,
        used_len: u32,
    },
    /// Return chains popped so far in one batch.
    Batch { lens: Vec<u32>, old_used: u16 },
    /// Serve everything left like a device.
    Drain { len: u32 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    event_idx: bool,
    rings: Rings,
    queue: QueueInput,
    pokes: Vec<Poke>,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    let size = input.queue.size(256);
    let layout = match input.rings {
        Rings::Standard => Layout::standard(0, size),
        Rings::Fuzzed { desc, avail, used } => Layout {
            size,
            desc: u64::from(desc % 0x1_3000) & !0xf,
            avail: u64::from(avail % 0x1_3000) & !0x1,
            used: u64::from(used % 0x1_3000) & !0x3,
        },
    };
    write_queue(&mem, &layout, &input.queue);
    apply_pokes(&mem, &input.pokes);
    let mut queue = layout.queue(256, input.event_idx);
    let interrupt = Interrupt::new(IrqTrigger::new().expect("eventfd"));
    let mut heads = Vec::new();

    for step in input.steps.iter().take(32) {
        match step {
            Step::Pop {
                split,
                back,
                fill,
                used_len,
            } => {
                let Ok(Some(chain)) = pop_chain(&mut queue, &mem) else {
                    continue;
                };
                heads.push(chain.head);
                // The cap: a chain of more than the queue size in buffers
                // comes back with none, refused by `validate`.
                let expected = walk(&mem, &layout, chain.head);
                assert_eq!(chain.too_long.is_some(), expected.too_long, "{expected:?}");
                if expected.too_long {
                    assert!(chain.buffers.is_empty());
                    assert!(chain.validate(&mem).is_err());
                } else {
                    assert_eq!(chain.buffers.len(), expected.descriptors);
                }
                if chain.validate(&mem).is_ok() {
                    let mut seen_writable = false;
                    for b in &chain.buffers {
                        assert!(mem.check_range(b.addr, b.len, vm_memory::Permissions::Read));
                        assert!(!seen_writable || b.writable, "readable after writable");
                        seen_writable |= b.writable;
                    }
                }
                let mut readable = chain.readable();
                let total = readable.len();
                if let Ok(front) = readable.split_front(usize::from(*split)) {
                    assert_eq!(front.len() + readable.len(), total);
                    let mut buf = vec![0u8; front.len().min(0x1_0000)];
                    let _ = front.read_into(&mem, &mut buf);
                }
                let mut writable = chain.writable();
                let total = writable.len();
                if let Ok(tail) = writable.split_back(usize::from(*back)) {
                    assert_eq!(tail.len() + writable.len(), total);
                    assert_eq!(tail.len(), usize::from(*back));
                }
                if chain.validate(&mem).is_ok() {
                    let written = writable.write_from(&mem, fill).expect("validated chain");
                    assert_eq!(written, fill.len().min(writable.len()));
                    // What was written reads back through the same segments
                    // (unless two writable buffers overlap).
                    let mut back_buf = vec![0u8; written];
                    writable
                        .read_into(&mem, &mut back_buf)
                        .expect("validated chain");
                }
                let _ = queue.add_used(&mem, chain.head, *used_len);
            }
            Step::Batch { lens, old_used } => {
                let elems: Vec<(u16, u32)> = heads
                    .drain(..)
                    .zip(lens.iter().copied().chain(std::iter::repeat(0)))
                    .collect();
                if add_used_batch(&mut queue, &mem, &elems).is_ok() {
                    let _ = notify_since(0, &queue, &mem, &interrupt, *old_used);
                }
            }
            Step::Drain { len } => {
                let _ = drain_queue(0, &mut queue, &mem, &interrupt, |chain| {
                    let _ = chain.validate(&mem);
                    *len
                });
            }
        }
    }
    // Memory outside RAM stays unreadable: nothing wrote past the end.
    assert!(mem.read_obj::<u8>(GuestAddress(0x1_0000)).is_err());
});
