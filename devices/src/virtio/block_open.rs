//! Opening the backing file of a virtio-blk device: a regular file or a
//! host block device, locked against other users with an OFD lock
//! (exclusive read-write, shared read-only), and sized (a block device
//! through `BLKGETSIZE64`, its logical block size through `BLKSSZGET`).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use log::warn;
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr};

use super::super::{BlockError, SECTOR_SIZE};
use super::Disk;

ioctl_ior_nr!(BLKGETSIZE64, 0x12, 114, usize);
ioctl_io_nr!(BLKSSZGET, 0x12, 104);

/// An opened, locked and sized backing file.
pub(in crate::virtio::block) struct Backing {
    pub(super) file: File,
    /// Where it was opened (for messages, and to lock it again).
    pub(super) path: PathBuf,
    /// Size in whole 512-byte sectors (a partial last sector is not
    /// exposed).
    pub(in crate::virtio::block) capacity: u64,
    /// Logical block size: 512 for a regular file, the device's own for a
    /// block device.
    pub(super) block_size: u32,
    /// A flush of this file failed before (it is the disk's current file,
    /// reopened).
    pub(super) flush_failed: bool,
}

/// Opens `path` as a disk image, read-only or read-write, locks it and
/// sizes it. When `current` (the disk being replaced) already has this
/// very file open, its open file is shared instead, with its lock and
/// its flush failure: a reopen for a resize is no conflict.
pub(in crate::virtio::block) fn open_backing(
    path: &Path,
    readonly: bool,
    current: Option<&Disk>,
) -> Result<Backing, BlockError> {
    let open_error = |reason| BlockError::Open {
        path: path.to_path_buf(),
        reason,
    };
    // Checked before opening too, so a FIFO cannot block the open.
    let metadata = std::fs::metadata(path).map_err(open_error)?;
    check_kind(&metadata).map_err(open_error)?;
    let reopened = current.filter(|disk| is_same_file(&disk.file, &metadata));
    let (file, flush_failed) = match reopened {
        Some(disk) => (
            disk.file.try_clone().map_err(open_error)?,
            disk.flush_failed(),
        ),
        None => {
            let file = OpenOptions::new()
                .read(true)
                .write(!readonly)
                .open(path)
                .map_err(open_error)?;
            check_kind(&file.metadata().map_err(open_error)?).map_err(open_error)?;
            lock(&file, readonly, path)?;
            (file, false)
        }
    };
    let (size, block_size) = size(&file).map_err(open_error)?;
    Ok(Backing {
        file,
        path: path.to_path_buf(),
        capacity: size / SECTOR_SIZE,
        block_size,
        flush_failed,
    })
}

fn check_kind(metadata: &Metadata) -> io::Result<()> {
    let kind = metadata.file_type();
    if kind.is_file() || kind.is_block_device() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file or block device",
        ))
    }
}

fn is_same_file(file: &File, metadata: &Metadata) -> bool {
    file.metadata()
        .is_ok_and(|open| (open.dev(), open.ino()) == (metadata.dev(), metadata.ino()))
}

/// Takes an OFD lock on the whole file: exclusive to write, shared to
/// read. It lives as long as the open file (every clone of it), and
/// another open of the file, in this process or another, conflicts.
pub(in crate::virtio::block) fn lock(
    file: &File,
    readonly: bool,
    path: &Path,
) -> Result<(), BlockError> {
    let lock_type = if readonly {
        libc::F_RDLCK
    } else {
        libc::F_WRLCK
    };
    set_lock(file, lock_type, path)
}

/// Drops the lock [`lock`] took, for another process to take (a
/// migration to this same host).
pub(in crate::virtio::block) fn unlock(file: &File, path: &Path) -> Result<(), BlockError> {
    set_lock(file, libc::F_UNLCK, path)
}

fn set_lock(file: &File, lock_type: libc::c_int, path: &Path) -> Result<(), BlockError> {
    let request = libc::flock {
        l_type: lock_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // to the end, however far it grows
        l_pid: 0,
    };
    // SAFETY: F_OFD_SETLK reads one `struct flock`, which `request` is, and
    // the descriptor is open for the call.
    let ret = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &request) };
    if ret == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN | libc::EACCES) => Err(BlockError::Locked(path.to_path_buf())),
        // A file system (or kernel) without locks: the disk works, unguarded.
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL) => {
            warn!(
                "disk {}: cannot lock it ({e}); nothing stops a second user",
                path.display()
            );
            Ok(())
        }
        _ => Err(BlockError::Open {
            path: path.to_path_buf(),
            reason: io::Error::new(e.kind(), format!("locking: {e}")),
        }),
    }
}

/// Size in bytes and logical block size of an open backing file.
fn size(file: &File) -> io::Result<(u64, u32)> {
    if !file.metadata()?.file_type().is_block_device() {
        return Ok(((&*file).seek(SeekFrom::End(0))?, SECTOR_SIZE as u32));
    }
    let ioctl_error = |name: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("{name} ioctl: {e}"))
    };
    let mut bytes: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 into `bytes`; the descriptor is
    // an open block device.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64() as _, &mut bytes) } < 0 {
        return Err(ioctl_error("BLKGETSIZE64"));
    }
    let mut block_size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int into `block_size`; the descriptor is
    // an open block device.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET() as _, &mut block_size) } < 0 {
        return Err(ioctl_error("BLKSSZGET"));
    }
    let block_size = u32::try_from(block_size)
        .ok()
        .filter(|size| size.is_power_of_two() && u64::from(*size) >= SECTOR_SIZE)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("odd logical block size {block_size}"),
            )
        })?;
    Ok((bytes, block_size))
}
