//! Feeds virtio-blk's request path (devices/src/virtio/block.rs,
//! block_disk.rs): the fuzz input lays out one virtqueue in guest memory
//! (descriptors, indirect tables, available ring, request headers and data
//! via raw pokes), a driver brings the device up through the virtio-mmio
//! transport, and at DRIVER_OK the queue handler serves every request on
//! this thread (`devices` feature `fuzzing`). The disk is a 64 KiB
//! unlinked temporary file, zeroed before each run.
//!
//! Checks: the device writes guest memory only inside device-writable
//! buffers and the used ring; used lengths fit their chains; a chain over
//! the descriptor cap is dropped (used length 0) and a request over
//! `MAX_REQUEST_BYTES` gets at most its status byte.
#![no_main]

use std::fs::File;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use devices::virtio::block::MAX_REQUEST_BYTES;
use devices::virtio::{Block, BlockConfig, IoEngine, MmioTransport};
use devices::IrqTrigger;
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::*;

const DISK_BYTES: u64 = 0x1_0000;

#[derive(Arbitrary, Debug)]
struct Input {
    readonly: bool,
    id: Option<String>,
    features: u64,
    queue: QueueInput,
    pokes: Vec<Poke>,
    disk: Vec<u8>,
}

/// The backing file: created once, unlinked, reopened by the device
/// through /proc/self/fd.
fn disk() -> &'static (File, std::path::PathBuf) {
    static DISK: OnceLock<(File, std::path::PathBuf)> = OnceLock::new();
    DISK.get_or_init(|| scratch_file("blk"))
}

fuzz_target!(|input: Input| {
    let (file, path) = disk();
    file.set_len(0).expect("truncate");
    file.set_len(DISK_BYTES).expect("size");
    let head = &input.disk[..input.disk.len().min(4096)];
    std::os::unix::fs::FileExt::write_all_at(file, head, 0).expect("disk contents");
    let config = BlockConfig {
        path: path.clone(),
        readonly: input.readonly,
        id: input.id.filter(|id| id.len() <= 20),
        io_engine: IoEngine::Sync,
    };
    let device = Block::new(&config).expect("open the disk");
    let mem = guest_memory();
    let layout = Layout::standard(0, input.queue.size(256));
    write_queue(&mem, &layout, &input.queue);
    apply_pokes(&mem, &input.pokes);
    let before = Image::of(&mem);
    let allowed = Allowed::new(&before, &[layout]);

    let irq = IrqTrigger::new().expect("eventfd");
    let mut transport = MmioTransport::new(mem.clone(), irq, Box::new(device)).expect("transport");
    bring_up(&mut transport, input.features, &[layout]);

    let after = Image::of(&mem);
    allowed.check(&before, &after);
    if !allowed.self_modifying() {
        for used in check_used(&before, &after, &layout) {
            // More data than seg_max × size_max (plus header and status):
            // refused before the disk is touched, with at most the status
            // byte written (IOERR).
            if !used.chain.too_long && used.chain.bytes > MAX_REQUEST_BYTES + 17 {
                assert!(
                    used.len <= 1,
                    "oversized request {} reported {} bytes",
                    used.id,
                    used.len
                );
            }
        }
    }
    // A reset stops the (inline) worker and leaves the device reusable.
    write_reg(
        &mut transport,
        virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS,
        0,
    );
    assert_eq!(
        read_reg(
            &mut transport,
            virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS
        ),
        0
    );
});
