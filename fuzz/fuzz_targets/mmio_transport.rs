//! Feeds the virtio-mmio transport's register file
//! (devices/src/virtio/mmio.rs) with a sequence of reads and writes of any
//! width at any offset (registers and config space), plus whole-queue
//! setups with fuzzed ring addresses and sizes, in any order, in front of
//! a virtio-rng, virtio-console or virtio-blk device. Guest memory holds
//! fuzzed bytes, so an activation (status DRIVER_OK) hands the device
//! rings wherever the input put them, and the device serves them on this
//! thread (`devices` feature `fuzzing`).
//!
//! Checks: identification registers never change; a status write of 0
//! always resets the device to status 0.
#![no_main]

use std::fs::File;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use devices::virtio::{
    Block, BlockConfig, Console, IoEngine, MmioTransport, Rng, VirtioDevice,
};
use devices::{BusDevice, IrqTrigger};
use libfuzzer_sys::fuzz_target;
use tandem_fuzz::*;
use virtio_bindings::virtio_mmio::*;

#[derive(Arbitrary, Debug)]
enum DeviceKind {
    Rng,
    Console,
    Block,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A read of `len % 9` bytes at `offset % 0x208`.
    Read { offset: u16, len: u8 },
    /// A write of `data` (up to 8 bytes) at `offset % 0x208`.
    Write { offset: u16, data: Vec<u8> },
    /// An aligned 32-bit write to register `index % 0x80`.
    Reg { index: u8, value: u32 },
    /// A status write.
    Status(u8),
    /// Selects a queue and programs it whole, then sets it ready.
    Queue {
        sel: u8,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    },
    /// A driver's whole bring-up on the standard layout.
    BringUp { features: u64, size_log2: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    device: DeviceKind,
    memory: Vec<Poke>,
    ops: Vec<Op>,
}

fn disk_path() -> &'static std::path::Path {
    static DISK: OnceLock<(File, std::path::PathBuf)> = OnceLock::new();
    let (_, path) = DISK.get_or_init(|| {
        let (file, path) = scratch_file("mmio");
        file.set_len(0x1_0000).expect("size");
        (file, path)
    });
    path
}

fn device(kind: &DeviceKind) -> Box<dyn VirtioDevice> {
    match kind {
        DeviceKind::Rng => Box::new(Rng::new().expect("/dev/urandom")),
        DeviceKind::Console => Box::new(Console::new(console_output()).expect("console")),
        DeviceKind::Block => {
            // Read-only: nothing the guest does changes the file.
            let config = BlockConfig {
                path: disk_path().into(),
                readonly: true,
                id: None,
                io_engine: IoEngine::Sync,
            };
            Box::new(Block::new(&config).expect("disk"))
        }
    }
}

fuzz_target!(|input: Input| {
    let mem = guest_memory();
    apply_pokes(&mem, &input.memory);
    let irq = IrqTrigger::new().expect("eventfd");
    let mut t = MmioTransport::new(mem, irq, device(&input.device)).expect("transport");
    let device_id = read_reg(&mut t, VIRTIO_MMIO_DEVICE_ID);
    for op in input.ops.iter().take(64) {
        match op {
            Op::Read { offset, len } => {
                let mut data = vec![0u8; usize::from(*len % 9)];
                t.read(u64::from(*offset % 0x208), &mut data);
            }
            Op::Write { offset, data } => {
                t.write(u64::from(*offset % 0x208), &data[..data.len().min(8)]);
            }
            Op::Reg { index, value } => write_reg(&mut t, u32::from(*index % 0x80) * 4, *value),
            Op::Status(value) => {
                write_reg(&mut t, VIRTIO_MMIO_STATUS, u32::from(*value));
                if *value == 0 {
                    assert_eq!(read_reg(&mut t, VIRTIO_MMIO_STATUS), 0, "reset");
                }
            }
            Op::Queue {
                sel,
                size,
                desc,
                avail,
                used,
            } => {
                write_reg(&mut t, VIRTIO_MMIO_QUEUE_SEL, u32::from(*sel % 4));
                write_reg(&mut t, VIRTIO_MMIO_QUEUE_NUM, u32::from(*size));
                for (reg, addr) in [
                    (VIRTIO_MMIO_QUEUE_DESC_LOW, desc),
                    (VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail),
                    (VIRTIO_MMIO_QUEUE_USED_LOW, used),
                ] {
                    // Mostly near RAM, so rings can land in it.
                    let addr = if addr >> 63 == 0 {
                        addr % 0x1_4000
                    } else {
                        *addr
                    };
                    write_reg(&mut t, reg, addr as u32);
                    write_reg(&mut t, reg + 4, (addr >> 32) as u32);
                }
                write_reg(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
            }
            Op::BringUp {
                features,
                size_log2,
            } => {
                let size = 1 << (size_log2 % 7);
                bring_up(
                    &mut t,
                    *features,
                    &[Layout::standard(0, size), Layout::standard(1, size)],
                );
            }
        }
        assert_eq!(read_reg(&mut t, VIRTIO_MMIO_MAGIC_VALUE), 0x7472_6976);
        assert_eq!(read_reg(&mut t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(read_reg(&mut t, VIRTIO_MMIO_DEVICE_ID), device_id);
    }
    write_reg(&mut t, VIRTIO_MMIO_STATUS, 0);
    assert_eq!(read_reg(&mut t, VIRTIO_MMIO_STATUS), 0, "final reset");
});
