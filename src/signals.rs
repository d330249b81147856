//! Stop signals (SIGINT, SIGTERM, SIGHUP) turned into sockets the main
//! loop can poll, and the exit code a stop by signal ends with.

use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use anyhow::{Context, Result};

/// SIGINT, SIGTERM and SIGHUP, each turned into a readable socket.
pub struct StopSignals {
    /// Each signal and the socket that becomes readable when it arrives.
    pub sockets: Vec<(i32, UnixStream)>,
    last: Mutex<Option<i32>>,
}

impl StopSignals {
    const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

    /// Routes the stop signals to sockets.
    pub fn install() -> Result<Self> {
        let mut sockets = Vec::new();
        for signal in Self::SIGNALS {
            let (read_end, write_end) = UnixStream::pair()?;
            read_end.set_nonblocking(true)?;
            signal_hook::low_level::pipe::register(signal, write_end)
                .with_context(|| format!("installing the handler for signal {signal}"))?;
            sockets.push((signal, read_end));
        }
        Ok(StopSignals {
            sockets,
            last: Mutex::new(None),
        })
    }

    /// Consumes the notification of the signal at `index` and returns it.
    pub fn take(&self, index: usize) -> i32 {
        use std::io::Read;
        let (signal, socket) = &self.sockets[index];
        let _ = (&*socket).read(&mut [0u8; 16]);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(*signal);
        *signal
    }

    /// Exit code after a stop by signal: 128 + the signal, by convention.
    pub fn exit_code(&self) -> i32 {
        match *self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(signal) => 128 + signal,
            None => 0,
        }
    }
}
