//! A host TAP interface for virtio-net: opened through /dev/net/tun with
//! IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (created, or attached to by name),
//! non-blocking, frames prefixed with a 12-byte `virtio_net_hdr_v1`.
//! Offloads are set once the guest's features are known.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use libc::{c_int, c_short, c_uint};

/// Bytes of `virtio_net_hdr_v1` in front of every frame.
pub const VNET_HDR_LEN: usize = 12;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` with the member TUNSETIFF uses (flags), padded to the
/// kernel's 40 bytes.
#[repr(C)]
#[derive(Default)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: c_short,
    _pad: [u8; 22],
}

/// An open TAP interface.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating it if needed, which takes CAP_NET_ADMIN) the TAP
    /// interface `name`. The interface still has to be brought up on the
    /// host (`ip link set NAME up`).
    pub fn open(name: &str) -> io::Result<Self> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['\0', '/']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid interface name {name:?} (1 to 15 bytes)"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq::default();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as c_short;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `req` is one
        // (same layout and size) and outlives the call.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let len = req.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        let tap = Self {
            file,
            name: String::from_utf8_lossy(&req.name[..len]).into_owned(),
        };
        tap.set_vnet_hdr_len(VNET_HDR_LEN as c_int)?;
        Ok(tap)
    }

    /// A TAP stand-in over any datagram fd (tests and fuzz targets use a
    /// socket pair).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn from_file(file: File, name: &str) -> Self {
        Self {
            file,
            name: name.to_string(),
        }
    }

    /// The interface name the kernel settled on.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the offloads the TAP may hand us (`TUN_F_*`): what the guest
    /// accepted to receive.
    pub fn set_offload(&self, flags: c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no
        // memory of ours.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETOFFLOAD, flags) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn set_vnet_hdr_len(&self, len: c_int) -> io::Result<()> {
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which
        // points at `len` for the duration of the call.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one frame (header included); `WouldBlock` when none is queued.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included).
    pub fn write_frame(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "a-name-longer-than-15", "a/b", "nul\0"] {
            let err = Tap::open(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    /// Needs root and /dev/net/tun; run inside a throw-away network
    /// namespace: `unshare -n cargo test -p devices tap -- --ignored`.
    #[test]
    #[ignore]
    fn opens_a_tap_and_sets_offloads() {
        let tap = Tap::open("tandemtest0").unwrap();
        assert_eq!(tap.name(), "tandemtest0");
        tap.set_offload(libc::TUN_F_CSUM | libc::TUN_F_TSO4)
            .unwrap();
        let mut buf = [0u8; 64];
        let err = tap.read_frame(&mut buf).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "non-blocking, no frames"
        );
        // A non-persistent TAP goes away with its fd, freeing the name.
        drop(tap);
        Tap::open("tandemtest0").unwrap();
    }
}
