//! x86 port I/O, the one architecture-specific piece of the program:
//! `iopl(3)` for access to every port, then `in`/`out` and the string
//! forms `rep insb`/`rep outsb`. On aarch64 there are no ports:
//! [`enable`] says so and the port attacks are skipped.

/// Whether port I/O exists and was granted.
pub fn enable() -> bool {
    imp::enable()
}

/// Reads a byte, word or long (`width` 1, 2 or 4) from `port`.
pub fn read(port: u16, width: usize) -> u32 {
    imp::read(port, width)
}

/// Writes `value` to `port` as a byte, word or long.
pub fn write(port: u16, width: usize, value: u32) {
    imp::write(port, width, value)
}

/// `rep outsb`: every byte of `data` to `port`, one string instruction.
pub fn rep_outsb(port: u16, data: &[u8]) {
    imp::rep_outsb(port, data)
}

/// `rep insb`: fills `data` from `port`, one string instruction.
pub fn rep_insb(port: u16, data: &mut [u8]) {
    imp::rep_insb(port, data)
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::asm;

    pub fn enable() -> bool {
        // SAFETY: raises this process's I/O privilege level; no memory is touched.
        unsafe { libc::iopl(3) == 0 }
    }

    pub fn read(port: u16, width: usize) -> u32 {
        let value: u32;
        // SAFETY: port input after iopl(3); the instructions touch no memory.
        unsafe {
            match width {
                1 => {
                    let v: u8;
                    asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack));
                    value = v.into();
                }
                2 => {
                    let v: u16;
                    asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack));
                    value = v.into();
                }
                _ => asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack)),
            }
        }
        value
    }

    pub fn write(port: u16, width: usize, value: u32) {
        // SAFETY: port output after iopl(3); the instructions touch no memory.
        unsafe {
            match width {
                1 => {
                    asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack))
                }
                2 => {
                    asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack))
                }
                _ => asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)),
            }
        }
    }

    pub fn rep_outsb(port: u16, data: &[u8]) {
        // SAFETY: reads exactly data.len() bytes from data (rsi, rcx);
        // the direction flag is clear per the ABI.
        unsafe {
            asm!("rep outsb", in("dx") port, inout("rsi") data.as_ptr() => _,
                 inout("rcx") data.len() => _, options(nostack, readonly));
        }
    }

    pub fn rep_insb(port: u16, data: &mut [u8]) {
        // SAFETY: writes exactly data.len() bytes into data (rdi, rcx);
        // the direction flag is clear per the ABI.
        unsafe {
            asm!("rep insb", in("dx") port, inout("rdi") data.as_mut_ptr() => _,
                 inout("rcx") data.len() => _, options(nostack));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub fn enable() -> bool {
        false
    }
    pub fn read(_: u16, _: usize) -> u32 {
        u32::MAX
    }
    pub fn write(_: u16, _: usize, _: u32) {}
    pub fn rep_outsb(_: u16, _: &[u8]) {}
    pub fn rep_insb(_: u16, _: &mut [u8]) {}
}
