//! A driver's virtio-mmio bring-up and register access, and the host-side
//! resources the targets share for a whole run (scratch files, console
//! output).

use std::sync::OnceLock;

use devices::virtio::{ConsoleOutput, MmioTransport};
use devices::BusDevice;
use virtio_bindings::virtio_mmio::*;

use crate::driver::Layout;

/// Writes a 32-bit transport register.
pub fn write_reg(t: &mut MmioTransport, offset: u32, value: u32) {
    t.write(u64::from(offset), &value.to_le_bytes());
}

/// Reads a 32-bit transport register.
pub fn read_reg(t: &mut MmioTransport, offset: u32) -> u32 {
    let mut data = [0u8; 4];
    t.read(u64::from(offset), &mut data);
    u32::from_le_bytes(data)
}

/// What a well-behaved driver does: status ACK, DRIVER, features (the
/// offered ones `mask` keeps, VERSION_1 always), FEATURES_OK, each queue
/// of `layouts`, DRIVER_OK. With the `fuzzing` feature of `devices`, the
/// device serves its queues before this returns. Returns the features
/// negotiated.
pub fn bring_up(t: &mut MmioTransport, mask: u64, layouts: &[Layout]) -> u64 {
    write_reg(t, VIRTIO_MMIO_STATUS, 1);
    write_reg(t, VIRTIO_MMIO_STATUS, 3);
    write_reg(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    let low = read_reg(t, VIRTIO_MMIO_DEVICE_FEATURES);
    write_reg(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    let high = read_reg(t, VIRTIO_MMIO_DEVICE_FEATURES);
    let version_1 = 1u64 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    let features = ((u64::from(high) << 32 | u64::from(low)) & mask) | version_1;
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    write_reg(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
    write_reg(t, VIRTIO_MMIO_STATUS, 0xb);
    for (i, l) in (0u32..).zip(layouts) {
        write_reg(t, VIRTIO_MMIO_QUEUE_SEL, i);
        write_reg(t, VIRTIO_MMIO_QUEUE_NUM, u32::from(l.size));
        write_reg(t, VIRTIO_MMIO_QUEUE_DESC_LOW, l.desc as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (l.desc >> 32) as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, l.avail as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (l.avail >> 32) as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_USED_LOW, l.used as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_USED_HIGH, (l.used >> 32) as u32);
        write_reg(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    write_reg(t, VIRTIO_MMIO_STATUS, 0xf);
    features
}

/// A scratch file for a target's whole run: created in /dev/shm (tmpfs:
/// truncating and rewriting it per input costs little) or else the temp
/// directory, unlinked at once (nothing is left behind), and reachable by
/// the returned `/proc/self/fd/N` path for code that opens files by name.
pub fn scratch_file(tag: &str) -> (std::fs::File, std::path::PathBuf) {
    use std::os::fd::AsRawFd;
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("tandem-fuzz-{tag}-{}", std::process::id()));
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("scratch file");
    std::fs::remove_file(&path).expect("unlink scratch file");
    let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd()).into();
    (file, by_fd)
}

/// Console output into a sink, one for the whole run and cloned for each
/// device: every [`ConsoleOutput`] has a drain thread of its own.
pub fn console_output() -> ConsoleOutput {
    static OUTPUT: OnceLock<ConsoleOutput> = OnceLock::new();
    OUTPUT
        .get_or_init(|| ConsoleOutput::new(Box::new(std::io::sink())).expect("console output"))
        .clone()
}
