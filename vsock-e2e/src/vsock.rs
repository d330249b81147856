//! AF_VSOCK stream sockets through libc (std has none): a listener and a
//! connected stream, each owning its fd.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::stream::Conn;

/// The host's context ID.
pub const HOST_CID: u32 = 2;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn address(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

fn new_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers; a new fd is returned or -1.
    let fd =
        check(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

/// A listening AF_VSOCK socket.
pub struct Listener(OwnedFd);

impl Listener {
    /// Listens on `port` of any local CID.
    pub fn bind(port: u32) -> io::Result<Self> {
        let fd = new_socket()?;
        let addr = address(libc::VMADDR_CID_ANY, port);
        // SAFETY: addr is a valid sockaddr_vm of ADDR_LEN bytes for the call.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                ADDR_LEN,
            )
        })?;
        // SAFETY: listen() takes no pointers.
        check(unsafe { libc::listen(fd.as_raw_fd(), 64) })?;
        Ok(Self(fd))
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<Stream> {
        // SAFETY: null address pointers ask for no peer address.
        let fd = check(unsafe {
            libc::accept4(
                self.0.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        })?;
        // SAFETY: fd was just returned by accept4 and is owned by nobody else.
        Ok(Stream(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

/// A connected AF_VSOCK stream.
pub struct Stream(OwnedFd);

/// AF_VSOCK socket options (linux/vm_sockets.h), at level AF_VSOCK.
const SO_VM_SOCKETS_BUFFER_SIZE: libc::c_int = 0;
const SO_VM_SOCKETS_BUFFER_MAX_SIZE: libc::c_int = 2;
/// Takes a `timeval` (the 64-bit layout on both arches here).
const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;

/// How long a guest connect waits for the host's answer. Linux's default
/// is 2 s, which an emulated host under load can miss with 64 connections
/// busy; a lost answer still fails, just later.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

fn set_u64(fd: &OwnedFd, option: libc::c_int, value: u64) -> io::Result<()> {
    // SAFETY: value is a valid u64 for the call's duration.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::AF_VSOCK,
            option,
            (&value as *const u64).cast(),
            std::mem::size_of::<u64>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

impl Stream {
    /// Connects to `port` of `cid`, with a socket buffer of `buffer` bytes
    /// if given (the receive buffer this end advertises; a Linux that caps
    /// its send credit by its own buffer then sends up to that much too).
    pub fn connect(cid: u32, port: u32, buffer: Option<u64>) -> io::Result<Self> {
        let fd = new_socket()?;
        if let Some(bytes) = buffer {
            set_u64(&fd, SO_VM_SOCKETS_BUFFER_MAX_SIZE, bytes)?;
            set_u64(&fd, SO_VM_SOCKETS_BUFFER_SIZE, bytes)?;
        }
        set_timeval(
            fd.as_raw_fd(),
            libc::AF_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            CONNECT_TIMEOUT,
        )?;
        let addr = address(cid, port);
        // SAFETY: addr is a valid sockaddr_vm of ADDR_LEN bytes for the call.
        check(unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                ADDR_LEN,
            )
        })?;
        Ok(Self(fd))
    }

    fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn io_result(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        io_result(unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) })
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for reads of buf.len() bytes.
        io_result(unsafe { libc::write(self.raw(), buf.as_ptr().cast(), buf.len()) })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn set_timeval(
    fd: RawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: Duration,
) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: value.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: tv is a valid timeval for the call's duration.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

impl Conn for Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            set_timeval(self.raw(), libc::SOL_SOCKET, option, timeout)?;
        }
        Ok(())
    }
    fn duplicate(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(Stream(self.0.try_clone()?)))
    }
    fn shut_write(&self) -> io::Result<()> {
        // SAFETY: shutdown() takes no pointers.
        check(unsafe { libc::shutdown(self.raw(), libc::SHUT_WR) })?;
        Ok(())
    }
}
