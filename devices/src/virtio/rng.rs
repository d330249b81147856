//! virtio-rng (entropy device): fills the driver's device-writable
//! buffers from the host's /dev/urandom. Bytes given to the guest are
//! counted as `bytes_read` in the device's [`IoStats`](super::IoStats), a
//! chain that got nothing as an error.

use std::fs::File;
use std::io;
use std::sync::Arc;

use guest_memory::GuestMemoryMmap;
use log::debug;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::Queue;
use vm_memory::Bytes;

use super::worker::{QueuePosition, Worker, WorkerError, WorkerHandler};
use super::{
    check_queue_count, drain_queue, feature, ActivateContext, ActivateError, Chain, Interrupt,
    VirtioDevice,
};

const QUEUE_SIZE: u16 = 256;
/// Most bytes given for one request, so a huge buffer cannot stall the
/// worker; the driver asks again for more.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A virtio-rng device.
pub struct Rng {
    source: Arc<File>,
    worker: Option<Worker>,
}

impl Rng {
    /// An entropy device reading /dev/urandom.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            source: Arc::new(File::open("/dev/urandom")?),
            worker: None,
        })
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        feature(VIRTIO_F_VERSION_1) | feature(VIRTIO_RING_F_EVENT_IDX)
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        check_queue_count(&ctx, 1)?;
        let active = ctx.queues.remove(0);
        let handler = RngHandler {
            source: self.source.clone(),
            mem: ctx.mem,
            queue: active.queue,
            interrupt: ctx.interrupt.clone(),
        };
        let worker = Worker::spawn(
            "virtio-rng",
            ctx.start,
            vec![active.kick],
            ctx.interrupt,
            handler,
        );
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }

    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

struct RngHandler {
    source: Arc<File>,
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

impl WorkerHandler for RngHandler {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        vec![QueuePosition::of(&self.queue)]
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        let (source, mem, io) = (&*self.source, &self.mem, self.interrupt.io_stats());
        drain_queue(index, &mut self.queue, mem, &self.interrupt, |chain| {
            let written = fill(source, mem, chain);
            match written {
                0 => io.record_error(),
                n => io.record(n as usize, 0),
            }
            written
        })
        .map_err(|source| WorkerError::Queue { index, source })
    }
}

/// Fills the chain's writable buffers; returns the bytes written (0 for a
/// chain that is malformed or outside guest memory).
fn fill(mut source: &File, mem: &GuestMemoryMmap, chain: &Chain) -> u32 {
    if let Err(e) = chain.validate(mem) {
        debug!("virtio-rng: request {} refused: {e}", chain.head);
        return 0;
    }
    let mut written = 0;
    for (addr, len) in chain.writable().parts() {
        let len = len.min(MAX_REQUEST_BYTES - written);
        if let Err(e) = mem.read_exact_volatile_from(addr, &mut source, len) {
            debug!("virtio-rng: request {}: {e}", chain.head);
            break;
        }
        written += len;
        if written == MAX_REQUEST_BYTES {
            break;
        }
    }
    written as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{test_memory, TestRing};
    use crate::IrqTrigger;
    use vm_memory::GuestAddress;

    fn handler(mem: &GuestMemoryMmap, ring: &TestRing) -> RngHandler {
        RngHandler {
            source: Rng::new().unwrap().source,
            mem: mem.clone(),
            queue: ring.queue(true),
            interrupt: Arc::new(Interrupt::new(IrqTrigger::new().unwrap())),
        }
    }

    #[test]
    fn fills_writable_buffers() {
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut rng = handler(&mem, &ring);
        ring.add_chain(&[(0x8000, 64, true), (0x9000, 192, true)]);
        ring.add_chain(&[(0xa000, 128 * 1024, true)]);
        rng.queue_event(0).unwrap();
        assert_eq!(ring.used(), vec![(0, 256), (2, MAX_REQUEST_BYTES as u32)]);
        let mut data = [0u8; 192];
        mem.read_slice(&mut data, GuestAddress(0x9000)).unwrap();
        assert!(data.iter().any(|&b| b != 0), "buffer was filled");
        let mut past = [0u8; 16];
        let end = 0xa000 + MAX_REQUEST_BYTES as u64;
        mem.read_slice(&mut past, GuestAddress(end)).unwrap();
        assert_eq!(past, [0; 16], "nothing past the cap");
        let io = rng.interrupt.io_stats().snapshot();
        assert_eq!((io.requests, io.errors), (2, 0));
        assert_eq!(io.bytes_read, 256 + MAX_REQUEST_BYTES as u64);
    }

    #[test]
    fn bad_chains_come_back_empty() {
        let mem = test_memory();
        let mut ring = TestRing::new(&mem, 0, 16);
        let mut rng = handler(&mem, &ring);
        ring.add_chain(&[(0x8000, 64, false)]);
        ring.add_chain(&[(0x10_0000 - 8, 64, true)]);
        rng.queue_event(0).unwrap();
        assert_eq!(ring.used(), vec![(0, 0), (1, 0)]);
        let mut edge = [0u8; 8];
        mem.read_slice(&mut edge, GuestAddress(0x10_0000 - 8))
            .unwrap();
        assert_eq!(edge, [0; 8], "partly outside: untouched");
    }
}
