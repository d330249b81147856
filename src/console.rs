//! The host side of the guest console: raw terminal mode while the guest
//! runs (restored on every way out, panics included); host input with the
//! Ctrl-A x escape filtered out and, for the UART, back-pressure instead of
//! an unbounded buffer; and stdout behind the non-blocking
//! [`ConsoleOutput`] both consoles write to.

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use devices::legacy::{ConsoleOutput, EscapeFilter, Serial};
use devices::virtio::ConsoleInput as VirtioConsoleInput;

use vmm_sys_util::terminal::Terminal;

/// Restores canonical mode on stdin; safe to call more than once.
fn restore_terminal() {
    let _ = io::stdin().lock().set_canon_mode();
}

/// Keeps stdin in raw mode until dropped. Does nothing when stdin is not a
/// terminal.
pub struct RawTerminal {
    active: bool,
}

impl RawTerminal {
    /// Switches a terminal stdin to raw mode so keys reach the guest as typed.
    pub fn enter() -> Self {
        static PANIC_HOOK: Once = Once::new();
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal { active: false };
        }
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        let active = stdin.lock().set_raw_mode().is_ok();
        RawTerminal { active }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if self.active {
            restore_terminal();
        }
    }
}

/// Most host input kept for the UART while its receive FIFO is full; stdin
/// is not read again until the guest drains the FIFO, so nothing typed or
/// piped is lost and nothing grows without bound.
pub const MAX_PENDING_INPUT: usize = 4096;
/// Most bytes read from stdin at once.
const READ_CHUNK: usize = 256;
/// Longest wait for buffered guest output to reach a stuck stdout at exit.
pub const EXIT_FLUSH_LIMIT: Duration = Duration::from_millis(100);

/// Guest console output bound for stdout: a duplicate of fd 1 written by the
/// buffer's own thread, so no lock of std's `Stdout` is ever held by a
/// writer that may block.
pub fn stdout_output() -> io::Result<ConsoleOutput> {
    let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
    ConsoleOutput::new(Box::new(stdout))
}

/// Writes out what guest output is still buffered, waiting at most
/// [`EXIT_FLUSH_LIMIT`] for a host that is not reading.
pub fn flush_output(output: &ConsoleOutput) {
    if !output.flush_within(EXIT_FLUSH_LIMIT) {
        log::warn!("console output: stdout is not being read; the rest is dropped");
    }
    let dropped = output.dropped_bytes();
    if dropped > 0 {
        log::info!("console output: {dropped} bytes of guest output dropped in all");
    }
}

/// Host stdin without std's buffer in front: a read takes no more than it
/// is asked for, so what epoll reports readable is all there is.
fn stdin() -> io::Result<&'static File> {
    static STDIN: OnceLock<File> = OnceLock::new();
    if let Some(file) = STDIN.get() {
        return Ok(file);
    }
    let file = File::from(io::stdin().as_fd().try_clone_to_owned()?);
    Ok(STDIN.get_or_init(|| file))
}

/// The device host keystrokes go to.
pub enum InputTarget {
    /// The UART's receive FIFO.
    Uart(Arc<Mutex<Serial>>),
    /// virtio-console's receive queue.
    Virtio(VirtioConsoleInput),
}

/// What one read of host input brought.
#[derive(Debug, PartialEq, Eq)]
pub enum InputEvent {
    /// Bytes for the guest (or nothing yet).
    Queued,
    /// The user typed Ctrl-A x.
    Quit,
    /// End of input: stop watching stdin.
    Closed,
}

/// Host keystrokes on their way to the guest's console.
pub struct ConsoleInput {
    target: InputTarget,
    filter: EscapeFilter,
    /// Bytes the UART's receive FIFO had no room for yet; at most
    /// [`MAX_PENDING_INPUT`].
    pending: Vec<u8>,
}

impl ConsoleInput {
    /// Input for `target`, with the Ctrl-A x escape filtered out.
    pub fn new(target: InputTarget) -> Self {
        ConsoleInput {
            target,
            filter: EscapeFilter::new(),
            pending: Vec::new(),
        }
    }

    /// The UART whose drained FIFO should trigger [`Self::rx_drained`], if
    /// any.
    pub fn uart(&self) -> Option<&Arc<Mutex<Serial>>> {
        match &self.target {
            InputTarget::Uart(serial) => Some(serial),
            InputTarget::Virtio(_) => None,
        }
    }

    /// Whether there is room to read more host input. When there is not,
    /// the caller stops watching stdin until [`Self::rx_drained`] makes room.
    pub fn accepts_input(&self) -> bool {
        self.room() > 0
    }

    /// How much may be read now: the escape filter can add one byte (a
    /// held-back Ctrl-A) to what it is given.
    fn room(&self) -> usize {
        MAX_PENDING_INPUT
            .saturating_sub(self.pending.len() + 1)
            .min(READ_CHUNK)
    }

    /// Reads what host stdin has, as far as there is room.
    pub fn read_stdin(&mut self) -> io::Result<InputEvent> {
        self.read_from(&mut stdin()?)
    }

    /// Reads from `source` as far as there is room, filters and queues it.
    pub fn read_from(&mut self, source: &mut impl Read) -> io::Result<InputEvent> {
        let mut buf = [0u8; READ_CHUNK];
        let room = self.room();
        if room == 0 {
            return Ok(InputEvent::Queued);
        }
        let n = match source.read(&mut buf[..room]) {
            Ok(0) => return Ok(InputEvent::Closed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(InputEvent::Queued)
            }
            Err(e) => return Err(e),
        };
        let (bytes, quit) = self.filter.feed(&buf[..n]);
        self.pending.extend_from_slice(&bytes);
        self.deliver();
        Ok(if quit {
            InputEvent::Quit
        } else {
            InputEvent::Queued
        })
    }

    /// The UART's FIFO drained: takes the event (it stays readable until
    /// read) and moves pending input in.
    pub fn rx_drained(&mut self) {
        if let InputTarget::Uart(serial) = &self.target {
            let serial = serial.lock().unwrap_or_else(|p| p.into_inner());
            // WouldBlock: nothing to take, a spurious wakeup.
            let _ = serial.rx_drained_event().read();
        }
        self.deliver();
    }

    /// Moves as much pending input to the guest as fits.
    fn deliver(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match &self.target {
            InputTarget::Uart(serial) => {
                let mut serial = serial.lock().unwrap_or_else(|p| p.into_inner());
                let taken = serial.enqueue_input(&self.pending);
                self.pending.drain(..taken);
            }
            InputTarget::Virtio(input) => {
                input.push(&self.pending);
                self.pending.clear();
            }
        }
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
