//! The host side of the guest console: raw terminal mode while the guest
//! runs (restored on every way out, panics included), and host input with
//! the Ctrl-A x escape filtered out.

use std::io::{self, IsTerminal, Read};
use std::sync::Once;

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
