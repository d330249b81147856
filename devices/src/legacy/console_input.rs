//! The console escape sequence on host stdin: Ctrl-A then `x` asks tandem
//! to quit, Ctrl-A Ctrl-A sends one literal Ctrl-A, and every other byte
//! (including a Ctrl-A followed by anything else) goes to the guest.
//!
//! The filter keeps its state across reads, so an escape split over two
//! reads of stdin is still recognised.

/// The escape byte, Ctrl-A (as in QEMU and screen).
pub const ESCAPE: u8 = 0x01;
/// The byte that, after [`ESCAPE`], asks tandem to quit.
pub const QUIT: u8 = b'x';

/// Separates the escape sequence from the bytes meant for the guest.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    /// The previous byte was an unpaired Ctrl-A, held back until the next
    /// byte says what it meant.
    escape_pending: bool,
}

impl EscapeFilter {
    /// A filter that has seen no input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Filters one read of host input. Returns the bytes to send to the
    /// guest and whether the user asked to quit; input after the quit
    /// sequence is dropped.
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut to_guest = Vec::with_capacity(input.len());
        for &byte in input {
            if !self.escape_pending {
                if byte == ESCAPE {
                    self.escape_pending = true;
                } else {
                    to_guest.push(byte);
                }
                continue;
            }
            self.escape_pending = false;
            match byte {
                QUIT => return (to_guest, true),
                ESCAPE => to_guest.push(ESCAPE),
                other => to_guest.extend_from_slice(&[ESCAPE, other]),
            }
        }
        (to_guest, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_input_passes_through() {
        let mut filter = EscapeFilter::new();
        assert_eq!(filter.feed(b"ls -l\r"), (b"ls -l\r".to_vec(), false));
        assert_eq!(filter.feed(b""), (vec![], false));
        assert_eq!(filter.feed(b"x"), (b"x".to_vec(), false));
    }

    #[test]
    fn ctrl_a_x_quits_and_drops_the_rest() {
        let mut filter = EscapeFilter::new();
        assert_eq!(filter.feed(b"ab\x01xcd"), (b"ab".to_vec(), true));
    }

    #[test]
    fn escape_split_across_reads_is_recognised() {
        let mut filter = EscapeFilter::new();
        assert_eq!(filter.feed(b"a\x01"), (b"a".to_vec(), false));
        assert_eq!(filter.feed(b"x"), (vec![], true));
    }

    #[test]
    fn double_ctrl_a_sends_one() {
        let mut filter = EscapeFilter::new();
        assert_eq!(filter.feed(b"\x01\x01x"), (b"\x01x".to_vec(), false));
        assert_eq!(filter.feed(b"\x01"), (vec![], false));
        assert_eq!(filter.feed(b"\x01"), (vec![ESCAPE], false));
    }

    #[test]
    fn other_escapes_pass_through_whole() {
        let mut filter = EscapeFilter::new();
        assert_eq!(filter.feed(b"\x01X\x01c"), (b"\x01X\x01c".to_vec(), false));
        assert_eq!(filter.feed(b"\x01"), (vec![], false));
        assert_eq!(filter.feed(b"b"), (b"\x01b".to_vec(), false));
    }
}
