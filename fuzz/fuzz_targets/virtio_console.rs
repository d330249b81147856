//! Feeds virtio-console's two paths (devices/src/virtio/console.rs): host
//! input (fuzzed bytes pushed into `Console::input_sink()`) delivered into
//! the receive queue, and the transmit queue's chains copied to the host
//! writer (a sink behind one `ConsoleOutput` shared by every run). The
//! fuzz input lays out both virtqueues in guest memory (descriptors,
//! indirect tables, available rings, raw pokes); a driver brings the
//! device up through the virtio-mmio transport and at DRIVER_OK the
//! handler serves both queues on this thread (`devices` feature
//! `fuzzing`).
//!
//! Checks: the device writes guest memory only inside device-writable
//! buffers and the used rings; used lengths fit their chains; no more
//! input is delivered than was pushed.
#![no_main]

use arbitrary::Arbitrary;
use devices::virtio::{Console, MmioTransport};
use devices::IrqTrigger;
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::*;

#[derive(Arbitrary, Debug)]
struct Input {
    features: u64,
    host_input: Vec<Vec<u8>>,
    rx: QueueInput,
    tx: QueueInput,
    pokes: Vec<Poke>,
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    let rx = Layout::standard(0, input.rx.size(64));
    let tx = Layout::standard(1, input.tx.size(64));
    write_queue(&mem, &rx, &input.rx);
    write_queue(&mem, &tx, &input.tx);
    apply_pokes(&mem, &input.pokes);
    let before = Image::of(&mem);
    let allowed = Allowed::new(&before, &[rx, tx]);

    let device = Console::new(console_output()).expect("console");
    let sink = device.input_sink();
    let mut pushed = 0u64;
    for bytes in &input.host_input {
        sink.push(bytes);
        pushed += bytes.len() as u64;
    }
    let irq = IrqTrigger::new().expect("eventfd");
    let mut transport = MmioTransport::new(mem.clone(), irq, Box::new(device)).expect("transport");
    bring_up(&mut transport, input.features, &[rx, tx]);

    let after = Image::of(&mem);
    allowed.check(&before, &after);
    if !allowed.self_modifying() {
        check_used(&before, &after, &rx);
    }
    if !allowed.self_modifying() {
        check_used(&before, &after, &tx);
    }
    let io = transport.interrupt().io_stats().snapshot();
    assert!(
        io.bytes_read <= pushed,
        "delivered {} of {pushed} input bytes",
        io.bytes_read
    );
});
