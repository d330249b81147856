//! KVM's binary statistics (`KVM_GET_STATS_FD`, Linux 5.14+, capability
//! `KVM_CAP_BINARY_STATS_FD`): a read-only fd per VM and per vCPU whose
//! contents are a header, one descriptor per statistic and a block of
//! `u64` values the kernel keeps current.
//!
//! The header and descriptors are read once, when the fd is opened; the
//! values are read afresh with `pread` on every [`KvmStats::read`]. The fd is
//! the stats file's own, so it stays valid when the `VcpuFd` it came from
//! moves to its thread (and after that `VcpuFd` is closed).
//!
//! File layout (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"), all
//! little-endian on the hosts tandem runs on:
//!
//! ```text
//! header (24 bytes): flags u32, name_size u32, num_desc u32,
//!                    id_offset u32, desc_offset u32, data_offset u32
//! descriptor (16 + name_size bytes each, from desc_offset):
//!                    flags u32 (type | unit | base), exponent i16, size u16,
//!                    offset u32 (into the data block), bucket_size u32,
//!                    name [u8; name_size] (NUL-terminated)
//! data (from data_offset): size u64s per statistic, at its offset
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{
    KVM_CAP_BINARY_STATS_FD, KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_INSTANT,
    KVM_STATS_TYPE_MASK, KVM_STATS_TYPE_PEAK, KVM_STATS_UNIT_MASK,
};
use kvm_ioctls::{VcpuFd, VmFd};

/// The ioctl number, declared here because kvm-ioctls 0.25 does not wrap
/// `KVM_GET_STATS_FD`. (A private module keeps the generated function out
/// of the public API.)
mod ioctls {
    use kvm_bindings::KVMIO;
    use vmm_sys_util::ioctl_io_nr;

    ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}

const HEADER_LEN: usize = 24;
const DESC_FIXED_LEN: usize = 16;
/// Bounds on what a sane kernel reports, so a corrupt header cannot make
/// us allocate gigabytes.
const MAX_NAME_SIZE: usize = 4096;
const MAX_DESCRIPTORS: usize = 4096;
const MAX_DATA_LEN: usize = 16 << 20;

/// What kind of value a statistic is (the descriptor's type bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    /// A counter that only grows (`KVM_STATS_TYPE_CUMULATIVE`).
    Cumulative,
    /// A value that goes up and down (`KVM_STATS_TYPE_INSTANT`).
    Instant,
    /// The highest value seen (`KVM_STATS_TYPE_PEAK`).
    Peak,
    /// A histogram, linear or logarithmic, or a type this code does not
    /// know; [`KvmStats::read`] skips these.
    Other,
}

/// One statistic as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatDesc {
    /// The name, e.g. `exits` or `halt_wait_ns`.
    pub name: String,
    /// Type, unit and base bits (`KVM_STATS_{TYPE,UNIT,BASE}_*`).
    pub flags: u32,
    /// The value is `raw * base^exponent` in the unit (e.g. -9 with unit
    /// seconds: nanoseconds).
    pub exponent: i16,
    /// Number of `u64`s (1 for a plain counter, the bucket count for a
    /// histogram).
    pub size: u16,
    /// Byte offset of the values in the data block.
    pub offset: u32,
    /// Bucket width of a linear histogram.
    pub bucket_size: u32,
}

impl StatDesc {
    /// The type bits, decoded.
    pub fn kind(&self) -> StatKind {
        match self.flags & KVM_STATS_TYPE_MASK {
            KVM_STATS_TYPE_CUMULATIVE => StatKind::Cumulative,
            KVM_STATS_TYPE_INSTANT => StatKind::Instant,
            KVM_STATS_TYPE_PEAK => StatKind::Peak,
            _ => StatKind::Other,
        }
    }

    /// The unit bits (`KVM_STATS_UNIT_NONE`, `_BYTES`, `_SECONDS`,
    /// `_CYCLES`, `_BOOLEAN`).
    pub fn unit(&self) -> u32 {
        self.flags & KVM_STATS_UNIT_MASK
    }

    /// Whether [`KvmStats::read`] reports it: a single-value counter,
    /// instant or peak value.
    fn is_scalar(&self) -> bool {
        self.size == 1 && self.kind() != StatKind::Other
    }
}

/// The binary statistics of one VM or one vCPU.
#[derive(Debug)]
pub struct KvmStats {
    file: File,
    descriptors: Vec<StatDesc>,
    data_offset: u64,
    data_len: usize,
}

impl KvmStats {
    /// The statistics of `vm`; `Ok(None)` when the host kernel lacks
    /// `KVM_CAP_BINARY_STATS_FD`.
    pub fn for_vm(vm: &VmFd) -> io::Result<Option<KvmStats>> {
        if vm.check_extension_raw(KVM_CAP_BINARY_STATS_FD.into()) <= 0 {
            return Ok(None);
        }
        Self::open(vm)
    }

    /// The statistics of `vcpu`; `Ok(None)` when the host kernel lacks
    /// `KVM_CAP_BINARY_STATS_FD` (the ioctl is unknown to it).
    pub fn for_vcpu(vcpu: &VcpuFd) -> io::Result<Option<KvmStats>> {
        Self::open(vcpu)
    }

    /// Issues `KVM_GET_STATS_FD` on a VM or vCPU fd and parses the
    /// result.
    fn open(fd: &impl AsRawFd) -> io::Result<Option<KvmStats>> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and touches no memory
        // of ours; `fd` is a live KVM VM or vCPU fd for the whole call. On
        // success it returns a new fd (O_CLOEXEC) that nothing else owns,
        // and the `File` takes sole ownership of it here, once.
        let file = unsafe {
            let ret = vmm_sys_util::ioctl::ioctl(fd, ioctls::KVM_GET_STATS_FD());
            (ret >= 0).then(|| File::from_raw_fd(ret))
        };
        let Some(file) = file else {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // An older kernel does not know the ioctl.
                Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(None),
                _ => Err(e),
            };
        };
        Self::from_file(file).map(Some)
    }

    /// Reads the header and descriptors of a stats file.
    fn from_file(file: File) -> io::Result<KvmStats> {
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, 0)?;
        let field = |index: usize| u32_at(&header, index * 4) as usize;
        let (name_size, num_desc, desc_offset, data_offset) =
            (field(1), field(2), field(4), field(5));
        if name_size == 0 || name_size > MAX_NAME_SIZE || num_desc > MAX_DESCRIPTORS {
            return Err(invalid(format!(
                "header: name_size {name_size}, num_desc {num_desc}"
            )));
        }
        let desc_len = DESC_FIXED_LEN + name_size;
        let mut block = vec![0u8; desc_len * num_desc];
        file.read_exact_at(&mut block, desc_offset as u64)?;
        let descriptors: Vec<StatDesc> = block.chunks_exact(desc_len).map(parse_desc).collect();
        let mut data_len = 0;
        for desc in &descriptors {
            let end = desc.offset as usize + usize::from(desc.size) * 8;
            data_len = data_len.max(end);
        }
        if data_len > MAX_DATA_LEN {
            return Err(invalid(format!("data block of {data_len} bytes")));
        }
        Ok(KvmStats {
            file,
            descriptors,
            data_offset: data_offset as u64,
            data_len,
        })
    }

    /// Every statistic the kernel describes, including those
    /// [`read`](Self::read) skips.
    pub fn descriptors(&self) -> &[StatDesc] {
        &self.descriptors
    }

    /// The current values by name: every cumulative counter, instant and
    /// peak value (the raw `u64`; its unit and exponent are in
    /// [`descriptors`](Self::descriptors), and most names end in theirs,
    /// e.g. `_ns`). Histograms (and any stat with more than one value) are
    /// skipped: their buckets do not fold into one number, and the kernel
    /// keeps the matching totals as separate counters (`halt_wait_ns` for
    /// `halt_wait_hist`).
    pub fn read(&self) -> io::Result<BTreeMap<String, u64>> {
        let mut data = vec![0u8; self.data_len];
        self.file.read_exact_at(&mut data, self.data_offset)?;
        Ok(values(&self.descriptors, &data))
    }
}

/// Parses one descriptor (its fixed fields, then the NUL-terminated name).
fn parse_desc(raw: &[u8]) -> StatDesc {
    let name = &raw[DESC_FIXED_LEN..];
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    StatDesc {
        name: String::from_utf8_lossy(name).into_owned(),
        flags: u32_at(raw, 0),
        exponent: i16::from_le_bytes([raw[4], raw[5]]),
        size: u16::from_le_bytes([raw[6], raw[7]]),
        offset: u32_at(raw, 8),
        bucket_size: u32_at(raw, 12),
    }
}

/// The scalar statistics' values in `data`.
fn values(descriptors: &[StatDesc], data: &[u8]) -> BTreeMap<String, u64> {
    descriptors
        .iter()
        .filter(|desc| desc.is_scalar())
        .filter_map(|desc| {
            let at = desc.offset as usize;
            let bytes = data.get(at..at + 8)?;
            let value = u64::from_le_bytes(bytes.try_into().ok()?);
            Some((desc.name.clone(), value))
        })
        .collect()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn invalid(what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("KVM stats fd: bad {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::{
        KVM_STATS_BASE_POW10, KVM_STATS_TYPE_LOG_HIST, KVM_STATS_UNIT_NONE, KVM_STATS_UNIT_SECONDS,
    };
    use vmm_sys_util::tempfile::TempFile;

    const NAME_SIZE: usize = 48;

    fn descriptor(flags: u32, exponent: i16, size: u16, offset: u32, name: &str) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend(flags.to_le_bytes());
        raw.extend(exponent.to_le_bytes());
        raw.extend(size.to_le_bytes());
        raw.extend(offset.to_le_bytes());
        raw.extend(0u32.to_le_bytes());
        let mut name = name.as_bytes().to_vec();
        name.resize(NAME_SIZE, 0);
        raw.extend(name);
        raw
    }

    /// A stats file as the kernel lays it out: header, id string,
    /// descriptors, data, with two scalars and a histogram; the values are
    /// given in data-block order (exits, halt_wait_ns, 4 buckets).
    fn stats_file(values: [u64; 6]) -> TempFile {
        let (id_offset, desc_offset) = (HEADER_LEN, HEADER_LEN + 16);
        let data_offset = desc_offset + 3 * (DESC_FIXED_LEN + NAME_SIZE);
        let mut raw = Vec::new();
        for field in [0, NAME_SIZE, 3, id_offset, desc_offset, data_offset] {
            raw.extend((field as u32).to_le_bytes());
        }
        raw.extend(b"kvm-1234/vcpu-0\0");
        let cumulative = KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_NONE;
        let seconds = KVM_STATS_TYPE_CUMULATIVE | KVM_STATS_UNIT_SECONDS | KVM_STATS_BASE_POW10;
        let histogram = KVM_STATS_TYPE_LOG_HIST | KVM_STATS_UNIT_SECONDS;
        raw.extend(descriptor(cumulative, 0, 1, 0, "exits"));
        raw.extend(descriptor(seconds, -9, 1, 8, "halt_wait_ns"));
        raw.extend(descriptor(histogram, -9, 4, 16, "halt_wait_hist"));
        assert_eq!(raw.len(), data_offset);
        for value in values {
            raw.extend(value.to_le_bytes());
        }
        let file = TempFile::new().unwrap();
        file.as_file().write_all_at(&raw, 0).unwrap();
        file
    }

    #[test]
    fn parses_descriptors_and_reads_scalars() {
        let file = stats_file([42, 7_000, 1, 2, 3, 4]);
        let stats = KvmStats::from_file(File::open(file.as_path()).unwrap()).unwrap();
        let names: Vec<&str> = stats.descriptors().iter().map(|d| &*d.name).collect();
        assert_eq!(names, ["exits", "halt_wait_ns", "halt_wait_hist"]);
        let wait = &stats.descriptors()[1];
        assert_eq!(
            (wait.kind(), wait.exponent, wait.offset),
            (StatKind::Cumulative, -9, 8)
        );
        assert_eq!(wait.unit(), KVM_STATS_UNIT_SECONDS);
        assert_eq!(stats.descriptors()[2].kind(), StatKind::Other);
        assert_eq!(stats.data_len, 48);
        let values = stats.read().unwrap();
        let expected = BTreeMap::from([
            ("exits".to_string(), 42),
            ("halt_wait_ns".to_string(), 7_000),
        ]);
        assert_eq!(values, expected, "the histogram is skipped");
    }

    #[test]
    fn every_read_is_fresh() {
        let file = stats_file([1, 0, 0, 0, 0, 0]);
        let stats = KvmStats::from_file(File::open(file.as_path()).unwrap()).unwrap();
        assert_eq!(stats.read().unwrap()["exits"], 1);
        let data_offset = stats.data_offset;
        file.as_file()
            .write_all_at(&99u64.to_le_bytes(), data_offset)
            .unwrap();
        assert_eq!(stats.read().unwrap()["exits"], 99);
    }

    #[test]
    fn corrupt_headers_are_refused() {
        let file = TempFile::new().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header[4..8].copy_from_slice(&0u32.to_le_bytes()); // name_size 0
        file.as_file().write_all_at(&header, 0).unwrap();
        let err = KvmStats::from_file(File::open(file.as_path()).unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let short = TempFile::new().unwrap();
        short.as_file().write_all_at(&[0u8; 10], 0).unwrap();
        assert!(KvmStats::from_file(File::open(short.as_path()).unwrap()).is_err());
    }
}
