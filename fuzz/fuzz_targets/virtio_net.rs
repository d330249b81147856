//! Feeds virtio-net's receive and transmit paths (devices/src/virtio/net.rs)
//! through its queue handler (`net::fuzz_handler`, `devices` feature
//! `fuzzing`; activation itself needs a real TAP for TUNSETOFFLOAD). A
//! datagram socket pair stands in for the TAP: fuzzed frames are queued on
//! the host end, the fuzz input lays out the receive and transmit queues in
//! guest memory, then a fuzzed sequence of kicks and TAP-readable events
//! runs the handler on this thread, with or without mergeable buffers.
//!
//! Checks: the device writes guest memory only inside device-writable
//! buffers and the used rings; used lengths fit their chains.
#![no_main]

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use arbitrary::Arbitrary;
use devices::virtio::worker::WorkerHandler;
use devices::virtio::{net, Interrupt};
use devices::IrqTrigger;
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::*;
use vmm_sys_util::epoll::EventSet;

#[derive(Arbitrary, Debug)]
enum Event {
    KickRx,
    KickTx,
    TapReadable,
    /// More frames from the network.
    Frame(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    mergeable: bool,
    event_idx: bool,
    frames: Vec<Vec<u8>>,
    rx: QueueInput,
    tx: QueueInput,
    pokes: Vec<Poke>,
    events: Vec<Event>,
}

/// Discards what the device sent (a datagram longer than the buffer is
/// dropped whole: no need for a 64 KiB buffer per call).
fn drain(host: &UnixDatagram) {
    let mut buf = [0u8; 64];
    while host.recv(&mut buf).is_ok() {}
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    let rx = Layout::standard(0, input.rx.size(256));
    let tx = Layout::standard(1, input.tx.size(256));
    write_queue(&mem, &rx, &input.rx);
    write_queue(&mem, &tx, &input.tx);
    apply_pokes(&mem, &input.pokes);
    let before = Image::of(&mem);
    let allowed = Allowed::new(&before, &[rx, tx]);

    let (guest_end, host) = UnixDatagram::pair().expect("socket pair");
    guest_end.set_nonblocking(true).expect("nonblocking");
    host.set_nonblocking(true).expect("nonblocking");
    for frame in &input.frames {
        let _ = host.send(frame);
    }
    let tap = File::from(OwnedFd::from(guest_end));
    let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().expect("eventfd")));
    let queues = vec![
        rx.queue(256, input.event_idx),
        tx.queue(256, input.event_idx),
    ];
    let mut handler = net::fuzz_handler(tap, mem.clone(), queues, interrupt, input.mergeable)
        .expect("timerfd");

    // As the worker does at start: every queue once.
    let mut result = handler.queue_event(0).and_then(|()| handler.queue_event(1));
    for event in input.events.iter().take(16) {
        if result.is_err() {
            break; // the device now needs a reset
        }
        result = match event {
            Event::KickRx => handler.queue_event(0),
            Event::KickTx => handler.queue_event(1),
            Event::TapReadable => handler.backend_event(0, EventSet::IN),
            Event::Frame(frame) => {
                let _ = host.send(frame);
                Ok(())
            }
        };
        drain(&host);
    }
    // Transmit completions are held for a batch: return them, as a worker
    // does before it parks.
    if result.is_ok() {
        let _ = handler.flush();
    }
    drain(&host);

    let after = Image::of(&mem);
    allowed.check(&before, &after);
    if !allowed.self_modifying() {
        check_used(&before, &after, &rx);
    }
    if !allowed.self_modifying() {
        check_used(&before, &after, &tx);
    }
});
