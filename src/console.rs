//! The host side of the guest console: raw terminal mode while the guest
//! runs (restored on every way out, panics included), and host input with
//! the Ctrl-A x escape filtered out.

use std::io::{self, IsTerminal, Read};
use std::sync::{Arc, Mutex, Once};

use devices::legacy::{EscapeFilter, Serial};
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

/// Reads what stdin has; `Ok(None)` at end of input.
pub fn read_stdin(buf: &mut [u8]) -> io::Result<Option<usize>> {
    match io::stdin().lock().read(buf)? {
        0 => Ok(None),
        n => Ok(Some(n)),
    }
}

/// The device host keystrokes go to.
pub enum InputTarget {
    /// The UART's receive FIFO.
    Uart(Arc<Mutex<Serial>>),
    /// virtio-console's receive queue.
    Virtio(VirtioConsoleInput),
}

/// Host keystrokes on their way to the guest's console.
pub struct ConsoleInput {
    target: InputTarget,
    filter: EscapeFilter,
    /// Bytes the UART's receive FIFO had no room for yet.
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

    /// The UART whose drained FIFO should trigger [`Self::retry`], if any.
    pub fn uart(&self) -> Option<&Arc<Mutex<Serial>>> {
        match &self.target {
            InputTarget::Uart(serial) => Some(serial),
            InputTarget::Virtio(_) => None,
        }
    }

    /// Filters and queues `input`; true when the user asked to quit.
    pub fn push(&mut self, input: &[u8]) -> bool {
        let (bytes, quit) = self.filter.feed(input);
        self.pending.extend_from_slice(&bytes);
        self.retry();
        quit
    }

    /// Moves as much pending input into the FIFO as fits.
    pub fn retry(&mut self) {
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
