//! virtio-console with a single port (no MULTIPORT): the guest's
//! /dev/hvc0. Bytes the VMM pushes into a [`ConsoleInput`] go to the
//! receive queue; what the guest transmits goes to a [`ConsoleOutput`],
//! the buffer shared with the UART that never blocks the worker (a host
//! that stops reading costs output, counted there). Both directions are
//! counted in the device's [`IoStats`](super::IoStats):
//! input as `bytes_read`, output as `bytes_written`, one request per
//! buffer, refused buffers as errors.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use guest_memory::GuestMemoryMmap;
use log::debug;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_CONSOLE;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::worker::{QueuePosition, Worker, WorkerError, WorkerHandler};
use super::{
    check_queue_count, drain_queue, feature, pop_chain, read_config_bytes, ActivateContext,
    ActivateError, Chain, Interrupt, LogLimit, VirtioDevice,
};

/// Host input dropped because the guest was not reading.
static INPUT_DROPPED: LogLimit = LogLimit::new();

const QUEUE_SIZE: u16 = 64;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
/// Input kept while the guest has no receive buffers; more is dropped.
const MAX_PENDING_INPUT: usize = 64 * 1024;
/// Most bytes taken from one transmit chain.
const MAX_TX_BYTES: usize = 64 * 1024;

/// Where the VMM pushes host input (stdin) for the guest. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ConsoleInput {
    shared: Arc<InputShared>,
}

#[derive(Debug)]
struct InputShared {
    pending: Mutex<VecDeque<u8>>,
    ready: EventFd,
}

impl ConsoleInput {
    fn new() -> io::Result<Self> {
        let shared = InputShared {
            pending: Mutex::new(VecDeque::new()),
            ready: EventFd::new(EFD_NONBLOCK)?,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Queues `bytes` for the guest. Input beyond 64 KiB that the guest has
    /// not read yet is dropped.
    pub fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending();
        let room = MAX_PENDING_INPUT.saturating_sub(pending.len());
        if room < bytes.len() {
            INPUT_DROPPED.warn(format_args!(
                "virtio-console: guest not reading, {} input bytes dropped",
                bytes.len() - room
            ));
        }
        pending.extend(&bytes[..room.min(bytes.len())]);
        drop(pending);
        // A full counter still wakes the worker, so a write error is moot.
        let _ = self.shared.ready.write(1);
    }

    fn pending(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

pub use crate::legacy::ConsoleOutput;

/// A virtio-console device.
pub struct Console {
    input: ConsoleInput,
    output: ConsoleOutput,
    worker: Option<Worker>,
}

impl Console {
    /// A console writing guest output to `output`.
    pub fn new(output: ConsoleOutput) -> io::Result<Self> {
        Ok(Self {
            input: ConsoleInput::new()?,
            output,
            worker: None,
        })
    }

    /// The handle host input is pushed through.
    pub fn input_sink(&self) -> ConsoleInput {
        self.input.clone()
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols, rows (unused without VIRTIO_CONSOLE_F_SIZE), max_nr_ports.
        let config = [0, 0, 0, 0, 1, 0, 0, 0];
        read_config_bytes(&config, offset, data)
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        check_queue_count(&ctx, 2)?;
        let (queues, kicks) = ctx.queues.into_iter().map(|q| (q.queue, q.kick)).unzip();
        let handler = ConsoleHandler {
            input: self.input.clone(),
            output: self.output.clone(),
            mem: ctx.mem,
            queues,
            interrupt: ctx.interrupt.clone(),
        };
        let worker = Worker::spawn("virtio-console", ctx.start, kicks, ctx.interrupt, handler);
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

struct ConsoleHandler {
    input: ConsoleInput,
    output: ConsoleOutput,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

impl ConsoleHandler {
    /// Moves pending input into receive buffers while both exist.
    fn deliver_input(&mut self) -> Result<(), virtio_queue::Error> {
        let mem = &self.mem;
        let rx = &mut self.queues[RX_QUEUE];
        let mut pending = self.input.pending();
        let (mut used_any, mut rearmed) = (false, false);
        while !pending.is_empty() {
            let Some(chain) = pop_chain(rx, mem)? else {
                // Out of buffers: ask for a kick when the driver adds one,
                // and look once more in case it just did.
                if !rearmed && rx.enable_notification(mem)? {
                    rearmed = true;
                    continue;
                }
                break;
            };
            let written = receive(mem, &chain, &mut pending);
            match written {
                0 => self.interrupt.io_stats().record_error(),
                n => self.interrupt.io_stats().record(n as usize, 0),
            }
            rx.add_used(mem, chain.head, written)?;
            used_any = true;
        }
        if used_any {
            rx.enable_notification(mem)?;
            self.interrupt.notify_queue(RX_QUEUE, rx, mem)?;
        }
        Ok(())
    }

    fn transmit(&mut self) -> Result<(), virtio_queue::Error> {
        let (mem, output, io) = (&self.mem, &mut self.output, self.interrupt.io_stats());
        drain_queue(
            TX_QUEUE,
            &mut self.queues[TX_QUEUE],
            mem,
            &self.interrupt,
            |chain| {
                match transmit(mem, chain, output) {
                    Some(sent) => io.record(0, sent),
                    None => io.record_error(),
                }
                0
            },
        )
    }
}

/// Copies input into one receive chain; returns the bytes written.
fn receive(mem: &GuestMemoryMmap, chain: &Chain, pending: &mut VecDeque<u8>) -> u32 {
    if let Err(e) = chain.validate(mem) {
        debug!("virtio-console: receive buffer {} refused: {e}", chain.head);
        return 0;
    }
    let writable = chain.writable();
    let count = writable.len().min(pending.len());
    let bytes: Vec<u8> = pending.iter().take(count).copied().collect();
    match writable.write_from(mem, &bytes) {
        Ok(written) => {
            pending.drain(..written);
            written as u32
        }
        Err(e) => {
            debug!("virtio-console: receive buffer {}: {e}", chain.head);
            0
        }
    }
}

/// Hands one transmit chain's bytes to the host output (which never
/// blocks); returns how many, or `None` if the chain was refused.
fn transmit(mem: &GuestMemoryMmap, chain: &Chain, output: &mut ConsoleOutput) -> Option<usize> {
    if let Err(e) = chain.validate(mem) {
        debug!(
            "virtio-console: transmit buffer {} refused: {e}",
            chain.head
        );
        return None;
    }
    let readable = chain.readable();
    let mut bytes = vec![0u8; readable.len().min(MAX_TX_BYTES)];
    if let Err(e) = readable.read_into(mem, &mut bytes) {
        debug!("virtio-console: transmit buffer {}: {e}", chain.head);
        return None;
    }
    // Cannot fail: what the host has no room for is dropped and counted.
    let _ = output.write_all(&bytes);
    Some(bytes.len())
}

impl WorkerHandler for ConsoleHandler {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        self.queues.iter().map(QueuePosition::of).collect()
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        let result = match index {
            RX_QUEUE => self.deliver_input(),
            _ => self.transmit(),
        };
        result.map_err(|source| WorkerError::Queue { index, source })
    }

    fn backend_fds(&self) -> Vec<(RawFd, EventSet)> {
        vec![(self.input.shared.ready.as_raw_fd(), EventSet::IN)]
    }

    fn backend_event(&mut self, _index: usize, _events: EventSet) -> Result<(), WorkerError> {
        // WouldBlock: spurious wakeup; the pending buffer is what counts.
        let _ = self.input.shared.ready.read();
        self.deliver_input().map_err(|source| WorkerError::Queue {
            index: RX_QUEUE,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::console_output::tests::Parked;
    use crate::virtio::testing::{test_memory, TestRing};
    use crate::IrqTrigger;
    use std::time::Duration;
    use vm_memory::{Bytes, GuestAddress};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Fixture {
        mem: GuestMemoryMmap,
        rx: TestRing,
        tx: TestRing,
        out: SharedBuf,
        console: Console,
        handler: ConsoleHandler,
    }

    fn fixture() -> Fixture {
        let mem = test_memory();
        let (rx, tx) = (TestRing::new(&mem, 0, 16), TestRing::new(&mem, 0x4000, 16));
        let out = SharedBuf::default();
        let output = ConsoleOutput::new(Box::new(out.clone())).unwrap();
        let console = Console::new(output).unwrap();
        let handler = ConsoleHandler {
            input: console.input_sink(),
            output: console.output.clone(),
            mem: mem.clone(),
            queues: vec![rx.queue(true), tx.queue(true)],
            interrupt: Arc::new(Interrupt::new(IrqTrigger::new().unwrap())),
        };
        Fixture {
            mem,
            rx,
            tx,
            out,
            console,
            handler,
        }
    }

    #[test]
    fn transmitted_bytes_reach_the_writer() {
        let mut f = fixture();
        f.mem.write_slice(b"hello, ", GuestAddress(0x8000)).unwrap();
        f.mem.write_slice(b"world", GuestAddress(0x9000)).unwrap();
        f.tx.add_chain(&[(0x8000, 7, false), (0x9000, 5, false)]);
        f.tx.add_chain(&[(0x10_0000 - 2, 4, false)]);
        f.handler.queue_event(TX_QUEUE).unwrap();
        assert!(f.console.output.flush_within(Duration::from_secs(1)));
        assert_eq!(f.out.0.lock().unwrap().as_slice(), b"hello, world");
        assert_eq!(f.tx.used(), vec![(0, 0), (2, 0)]);
        let io = f.handler.interrupt.io_stats().snapshot();
        let counts = (io.requests, io.bytes_written, io.bytes_read, io.errors);
        assert_eq!(counts, (2, 12, 0, 1));
    }

    #[test]
    fn input_waits_for_receive_buffers() {
        let mut f = fixture();
        f.console.input_sink().push(b"abcdef");
        f.handler.backend_event(0, EventSet::IN).unwrap();
        assert!(f.rx.used().is_empty(), "no buffers yet");
        f.rx.add_chain(&[(0x8000, 4, true)]);
        f.rx.add_chain(&[(0x9000, 64, true)]);
        f.handler.queue_event(RX_QUEUE).unwrap();
        assert_eq!(f.rx.used(), vec![(0, 4), (1, 2)]);
        let mut got = [0u8; 6];
        f.mem
            .read_slice(&mut got[..4], GuestAddress(0x8000))
            .unwrap();
        f.mem
            .read_slice(&mut got[4..], GuestAddress(0x9000))
            .unwrap();
        assert_eq!(&got, b"abcdef");
        let io = f.handler.interrupt.io_stats().snapshot();
        assert_eq!((io.requests, io.bytes_read, io.errors), (2, 6, 0));
        // Idle buffers ask for a kick at the next one the driver adds.
        assert_eq!(f.rx.avail_event(), 2);
    }

    #[test]
    fn input_beyond_the_cap_is_dropped() {
        let f = fixture();
        let sink = f.console.input_sink();
        sink.push(&vec![1u8; MAX_PENDING_INPUT - 1]);
        sink.push(&[2, 3, 4]);
        let pending = sink.pending();
        assert_eq!(pending.len(), MAX_PENDING_INPUT);
        assert_eq!(pending.back(), Some(&2));
    }

    #[test]
    fn a_stuck_host_reader_never_blocks_the_worker() {
        let mut f = fixture();
        let output = ConsoleOutput::with_capacity(Box::new(Parked), 8192).unwrap();
        f.handler.output = output.clone();
        for i in 0..8 {
            let addr = 0x8000 + i * 0x1000;
            f.mem
                .write_slice(&[b'z'; 4096], GuestAddress(addr))
                .unwrap();
            f.tx.add_chain(&[(addr, 4096, false)]);
        }
        let (done, finished) = std::sync::mpsc::channel();
        let mut handler = f.handler;
        std::thread::spawn(move || {
            handler.queue_event(TX_QUEUE).unwrap();
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("transmit blocked on the host writer");
        assert_eq!(f.tx.used().len(), 8);
        assert!(output.dropped_bytes() >= 8 * 4096 - 2 * 8192);
    }
}
