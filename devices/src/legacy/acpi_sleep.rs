//! The ACPI hardware-reduced sleep registers (ACPI 6.5 §4.8.3.7-8): the
//! sleep control register at offset 0 and the sleep status register at
//! offset 1, one byte each, named by the FADT's SLEEP_CONTROL_REG and
//! SLEEP_STATUS_REG. Entering S5 powers the VM off.
//!
//! tandem has no other sleep state: a request for one is logged and treated
//! as an immediate wake-up (WAK_STS set), so a guest spinning on WAK_STS
//! resumes instead of hanging.

use std::sync::Arc;

use crate::{BusDevice, ExitReason, ExitSignal, LogLimit};

/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Bytes the device decodes.
pub const ACPI_SLEEP_LEN: u64 = 2;
/// The SLP_TYP value for S5 (soft off); the DSDT's `\_S5` package must
/// declare the same value.
pub const S5_SLEEP_TYPE: u8 = 5;

/// SLP_TYP field of the control register, bits 2..=4.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0b111;
/// SLP_EN: start the transition to the state in SLP_TYP.
const SLP_EN: u8 = 1 << 5;
/// WAK_STS: the system woke from a sleep state (write 1 to clear).
const WAK_STS: u8 = 1 << 7;

/// Requests for a sleep state other than S5.
static UNSUPPORTED: LogLimit = LogLimit::new();
/// Requests for S5 (the guest may repeat one until its vCPU is stopped).
static POWER_OFF: LogLimit = LogLimit::new();

/// The sleep control and status registers, reporting power-off through an
/// [`ExitSignal`].
pub struct AcpiSleep {
    exit: Arc<ExitSignal>,
    status: u8,
}

impl AcpiSleep {
    /// Registers that raise [`ExitReason::PowerOff`] on `exit` when the
    /// guest enters S5.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        Self { exit, status: 0 }
    }

    fn write_control(&mut self, value: u8) {
        if value & SLP_EN == 0 {
            log::debug!("acpi: sleep control {value:#04x} without SLP_EN ignored");
            return;
        }
        match (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK {
            S5_SLEEP_TYPE => {
                POWER_OFF.info(format_args!("acpi: guest entered S5, powering off"));
                self.exit.raise(ExitReason::PowerOff);
            }
            other => {
                UNSUPPORTED.warn(format_args!(
                    "acpi: sleep type {other} unsupported, waking at once"
                ));
                self.status |= WAK_STS;
            }
        }
    }
}

impl BusDevice for AcpiSleep {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let ([byte], SLEEP_STATUS_OFFSET) = (&mut *data, offset) {
            *byte = self.status;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (SLEEP_CONTROL_OFFSET, &[value]) => self.write_control(value),
            (SLEEP_STATUS_OFFSET, &[value]) => self.status &= !(value & WAK_STS),
            _ => log::debug!("acpi: ignored write {data:x?} at {offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleep_regs() -> (AcpiSleep, Arc<ExitSignal>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        (AcpiSleep::new(exit.clone()), exit)
    }

    fn control(sleep_type: u8, enable: bool) -> u8 {
        (sleep_type << SLP_TYP_SHIFT) | if enable { SLP_EN } else { 0 }
    }

    fn status(dev: &mut AcpiSleep) -> u8 {
        let mut data = [0xff];
        dev.read(SLEEP_STATUS_OFFSET, &mut data);
        data[0]
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut dev, exit) = sleep_regs();
        dev.write(SLEEP_CONTROL_OFFSET, &[control(S5_SLEEP_TYPE, true)]);
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn nothing_else_powers_off() {
        let (mut dev, exit) = sleep_regs();
        dev.write(SLEEP_CONTROL_OFFSET, &[control(S5_SLEEP_TYPE, false)]);
        for sleep_type in (0..=7).filter(|&t| t != S5_SLEEP_TYPE) {
            dev.write(SLEEP_CONTROL_OFFSET, &[control(sleep_type, true)]);
        }
        dev.write(SLEEP_STATUS_OFFSET, &[control(S5_SLEEP_TYPE, true)]);
        dev.write(SLEEP_CONTROL_OFFSET, &[control(S5_SLEEP_TYPE, true), 0]);
        dev.write(SLEEP_CONTROL_OFFSET, &[]);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn unsupported_sleep_wakes_at_once_and_wak_sts_clears() {
        let (mut dev, exit) = sleep_regs();
        assert_eq!(status(&mut dev), 0);
        dev.write(SLEEP_CONTROL_OFFSET, &[control(3, true)]);
        assert_eq!(status(&mut dev), WAK_STS);
        dev.write(SLEEP_STATUS_OFFSET, &[!WAK_STS]);
        assert_eq!(status(&mut dev), WAK_STS, "only a 1 clears WAK_STS");
        dev.write(SLEEP_STATUS_OFFSET, &[WAK_STS]);
        assert_eq!(status(&mut dev), 0);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn unsupported_sleep_requests_leave_few_lines() {
        let (mut dev, exit) = sleep_regs();
        let log = crate::test_log::Capture::start();
        for i in 0..10_000u32 {
            dev.write(SLEEP_CONTROL_OFFSET, &[control(i as u8 % 5, true)]);
        }
        crate::test_log::assert_few(&log.warnings_here(), "sleep requests");
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn repeated_s5_requests_leave_few_lines() {
        let (mut dev, exit) = sleep_regs();
        let log = crate::test_log::Capture::start();
        for _ in 0..10_000 {
            dev.write(SLEEP_CONTROL_OFFSET, &[control(S5_SLEEP_TYPE, true)]);
        }
        crate::test_log::assert_few(&log.lines_here(), "S5 requests");
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn control_and_wide_reads_return_zero() {
        let (mut dev, _) = sleep_regs();
        dev.write(SLEEP_CONTROL_OFFSET, &[control(1, true)]);
        let mut data = [0xff];
        dev.read(SLEEP_CONTROL_OFFSET, &mut data);
        assert_eq!(data, [0]);
        let mut wide = [0xff; 2];
        dev.read(SLEEP_STATUS_OFFSET, &mut wide);
        assert_eq!(wide, [0, 0]);
    }
}
