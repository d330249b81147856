//! Feeds virtio-rng's request path (devices/src/virtio/rng.rs): the fuzz
//! input lays out one virtqueue in guest memory (descriptors, indirect
//! tables, available ring, raw pokes), a driver brings the device up
//! through the virtio-mmio transport, and at DRIVER_OK the queue handler
//! fills the buffers on this thread (`devices` feature `fuzzing`).
//!
//! Checks: the device writes guest memory only inside device-writable
//! buffers and the used ring; used lengths fit their chains. (The bytes
//! come from /dev/urandom, but no control flow depends on them.)
#![no_main]

use arbitrary::Arbitrary;
use devices::virtio::{MmioTransport, Rng};
use devices::IrqTrigger;
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::*;

#[derive(Arbitrary, Debug)]
struct Input {
    features: u64,
    queue: QueueInput,
    pokes: Vec<Poke>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    let layout = Layout::standard(0, input.queue.size(256));
    write_queue(&mem, &layout, &input.queue);
    apply_pokes(&mem, &input.pokes);
    let before = Image::of(&mem);
    let allowed = Allowed::new(&before, &[layout]);

    let device = Rng::new().expect("/dev/urandom");
    let irq = IrqTrigger::new().expect("eventfd");
    let mut transport = MmioTransport::new(mem.clone(), irq, Box::new(device)).expect("transport");
    bring_up(&mut transport, input.features, &[layout]);

    let after = Image::of(&mem);
    allowed.check(&before, &after);
    if !allowed.self_modifying() {
        check_used(&before, &after, &layout);
    }
});
