//! A UART flood: 64 KiB of filler lines through the kernel's serial
//! driver and line-speed changes that make it rewrite the divisor and
//! line control registers; on x86_64 also the registers rewritten
//! directly (loopback included) and 64 KiB by `rep outsb`, after which
//! the registers are put back so the console keeps working.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::port_io;
use crate::Ctx;

const COM1: u16 = 0x3f8;
const FLOOD_BYTES: usize = 64 << 10;

/// One filler line (no marker in it: the host drops these lines).
fn filler() -> Vec<u8> {
    let mut line = vec![b'U'; 63];
    line.push(b'\n');
    line.iter().copied().cycle().take(FLOOD_BYTES).collect()
}

/// Line-speed changes through termios, then the speed it had.
fn cycle_speeds(fd: i32) -> Result<u32, String> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(format!("tcgetattr: {}", std::io::Error::last_os_error()));
    }
    let speeds = [libc::B1200, libc::B9600, libc::B57600, libc::B4000000];
    let mut changes = 0;
    for i in 0..200 {
        let mut t = saved;
        // The speed bits by hand: glibc's cfsetospeed is a versioned
        // symbol a static link does not resolve.
        t.c_cflag = (t.c_cflag & !libc::CBAUD) | speeds[i % speeds.len()];
        // SAFETY: valid fd and termios pointer.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } == 0 {
            changes += 1;
        }
    }
    // SAFETY: valid fd and pointer.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    Ok(changes)
}

/// Direct register rewrites and a `rep outsb` flood (x86_64 only).
fn direct(ctx: &mut Ctx, flood: &[u8]) -> u32 {
    if !port_io::enable() {
        return 0;
    }
    let reg = |n: u16| COM1 + n;
    let (lcr, ier, mcr) = (
        port_io::read(reg(3), 1),
        port_io::read(reg(1), 1),
        port_io::read(reg(4), 1),
    );
    port_io::write(reg(3), 1, lcr | 0x80);
    let (dll, dlm) = (port_io::read(reg(0), 1), port_io::read(reg(1), 1));
    let mut writes = 0;
    for _ in 0..2000 {
        let r = ctx.rng.bits();
        port_io::write(reg(3), 1, 0x80);
        port_io::write(reg(0), 1, r as u32 & 0xff);
        port_io::write(reg(1), 1, (r >> 8) as u32 & 0xff);
        port_io::write(reg(3), 1, (r >> 16) as u32 & 0x7f);
        port_io::write(reg(1), 1, (r >> 24) as u32 & 0x0f);
        port_io::write(reg(2), 1, (r >> 32) as u32 & 0xff);
        port_io::write(reg(4), 1, (r >> 40) as u32 & 0x1f);
        port_io::write(reg(7), 1, (r >> 48) as u32 & 0xff);
        writes += 8;
    }
    port_io::write(reg(3), 1, 0x80);
    port_io::write(reg(0), 1, dll);
    port_io::write(reg(1), 1, dlm);
    port_io::write(reg(3), 1, lcr);
    port_io::write(reg(1), 1, ier);
    port_io::write(reg(4), 1, mcr);
    for chunk in flood.chunks(4096) {
        port_io::rep_outsb(reg(0), chunk);
    }
    writes
}

/// The flood.
pub fn flood(ctx: &mut Ctx) -> Result<String, String> {
    let flood = filler();
    let mut tty = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ttyS0")
        .map_err(|e| format!("/dev/ttyS0: {e}"))?;
    tty.write_all(&flood)
        .map_err(|e| format!("write /dev/ttyS0: {e}"))?;
    let changes = cycle_speeds(tty.as_raw_fd())?;
    let writes = direct(ctx, &flood);
    let direct_bytes = if writes > 0 { flood.len() } else { 0 };
    Ok(format!(
        "driver_bytes={} speed_changes={changes} register_writes={writes} direct_bytes={direct_bytes}",
        flood.len()
    ))
}
