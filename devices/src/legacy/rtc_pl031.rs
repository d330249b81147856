//! The ARM PL031 real-time clock (vm-superio's model) behind a
//! [`BusDevice`]: 32-bit registers in a 4 KiB window, including the AMBA
//! PrimeCell ID registers Linux probes the device by.
//!
//! vm-superio 0.8 does not implement the match (alarm) register, so the raw
//! interrupt status never rises and the interrupt never fires. The device
//! still owns its line and raises it whenever the masked status becomes
//! set, so it behaves per spec with any model that implements the alarm.
//! A snapshot keeps its registers and its offset from host time
//! ([`Pl031State`]): a restored clock goes on with wall-clock time, as a
//! real RTC does across a suspend.

use serde::{Deserialize, Serialize};
use vm_superio::rtc_pl031::{Rtc, RtcEvents, RtcState};

use crate::{BusDevice, IrqTrigger};

/// Bytes the device decodes from its base.
pub const PL031_LEN: u64 = 0x1000;
/// Masked interrupt status register.
const RTCMIS: u16 = 0x18;
/// Every register is 32 bits wide and 32-bit aligned.
const REGISTER_SIZE: usize = 4;

/// Logs accesses vm-superio rejects (write-only, read-only or reserved
/// registers).
struct LogInvalidAccess;

impl RtcEvents for LogInvalidAccess {
    fn invalid_read(&self) {
        log::debug!("pl031: read of a write-only or reserved register");
    }
    fn invalid_write(&self) {
        log::debug!("pl031: write to a read-only or reserved register");
    }
}

/// What a snapshot keeps of the PL031 (vm-superio's `RtcState`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pl031State {
    /// The load register: the time the guest last set.
    pub lr: u32,
    /// The clock's offset from host time, as the model keeps it.
    pub offset: i64,
    /// The match (alarm) register.
    pub mr: u32,
    /// The interrupt mask.
    pub imsc: u32,
    /// The raw interrupt status.
    pub ris: u32,
}

/// A PL031 clock reading host time, wired to an interrupt line.
pub struct Pl031 {
    rtc: Rtc<LogInvalidAccess>,
    irq: IrqTrigger,
    /// The masked interrupt status last seen, to raise the line on a rising
    /// edge only.
    irq_pending: bool,
}

impl Pl031 {
    /// A clock starting at host time that raises `irq` for its alarm.
    pub fn new(irq: IrqTrigger) -> Self {
        Self {
            rtc: Rtc::with_events(LogInvalidAccess),
            irq,
            irq_pending: false,
        }
    }

    /// The state to save; the VM is paused.
    pub fn state(&self) -> Pl031State {
        let RtcState {
            lr,
            offset,
            mr,
            imsc,
            ris,
        } = self.rtc.state();
        Pl031State {
            lr,
            offset,
            mr,
            imsc,
            ris,
        }
    }

    /// Takes the state [`Self::state`] saved.
    pub fn restore(&mut self, state: &Pl031State) {
        let saved = RtcState {
            lr: state.lr,
            offset: state.offset,
            mr: state.mr,
            imsc: state.imsc,
            ris: state.ris,
        };
        self.rtc = Rtc::from_state(&saved, LogInvalidAccess);
        // An interrupt pending when saved was raised then: no new edge.
        self.irq_pending = state.ris & state.imsc != 0;
    }

    /// The register `offset` names, if it is a valid 32-bit register access.
    fn register(offset: u64, len: usize) -> Option<u16> {
        let aligned = offset & (REGISTER_SIZE as u64 - 1) == 0;
        let valid = len == REGISTER_SIZE && offset < PL031_LEN && aligned;
        if !valid {
            log::debug!("pl031: ignored {len}-byte access at {offset:#x}");
        }
        valid.then_some(offset as u16)
    }

    fn update_irq(&mut self) {
        let mut mis = [0; REGISTER_SIZE];
        self.rtc.read(RTCMIS, &mut mis);
        let pending = u32::from_le_bytes(mis) != 0;
        if pending && !self.irq_pending {
            if let Err(e) = self.irq.trigger() {
                log::warn!("pl031: cannot raise the alarm interrupt: {e}");
            }
        }
        self.irq_pending = pending;
    }
}

impl BusDevice for Pl031 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(register) = Self::register(offset, data.len()) {
            let mut value = [0; REGISTER_SIZE];
            self.rtc.read(register, &mut value);
            data.copy_from_slice(&value);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(register) = Self::register(offset, data.len()) else {
            return;
        };
        let mut value = [0; REGISTER_SIZE];
        value.copy_from_slice(data);
        self.rtc.write(register, &value);
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    const RTCDR: u64 = 0x00;
    const RTCMR: u64 = 0x04;
    const RTCLR: u64 = 0x08;
    const RTCCR: u64 = 0x0c;
    const RTCIMSC: u64 = 0x10;
    const RTCRIS: u64 = 0x14;
    const RTCICR: u64 = 0x1c;

    fn read32(dev: &mut Pl031, offset: u64) -> u32 {
        let mut data = [0xff; 4];
        dev.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write32(dev: &mut Pl031, offset: u64, value: u32) {
        dev.write(offset, &value.to_le_bytes());
    }

    fn host_seconds() -> u32 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32
    }

    fn pl031() -> (Pl031, IrqTrigger) {
        let irq = IrqTrigger::new().unwrap();
        (Pl031::new(irq.clone()), irq)
    }

    #[test]
    fn data_register_reads_host_time() {
        let (mut dev, _) = pl031();
        let before = host_seconds();
        let rtc = read32(&mut dev, RTCDR);
        let after = host_seconds();
        assert!(
            (before..=after).contains(&rtc),
            "{before} <= {rtc} <= {after}"
        );
        assert_eq!(read32(&mut dev, RTCCR), 1, "clock always enabled");
    }

    #[test]
    fn load_register_sets_the_clock() {
        let (mut dev, _) = pl031();
        write32(&mut dev, RTCLR, 1_000_000);
        let rtc = read32(&mut dev, RTCDR);
        assert!((1_000_000..=1_000_002).contains(&rtc), "{rtc}");
        write32(&mut dev, RTCDR, 5);
        assert!(
            read32(&mut dev, RTCDR) < 1_000_003,
            "data register is read-only"
        );
    }

    #[test]
    fn id_registers_identify_a_pl031() {
        let (mut dev, _) = pl031();
        let ids: Vec<u32> = (0xfe0..0x1000)
            .step_by(4)
            .map(|offset| read32(&mut dev, offset))
            .collect();
        // PeriphID0..3 (part 0x031, ARM, rev 0), then the PrimeCell ID.
        assert_eq!(ids, [0x31, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }

    #[test]
    fn alarm_registers_hold_values_without_a_spurious_interrupt() {
        let (mut dev, irq) = pl031();
        let soon = read32(&mut dev, RTCDR);
        write32(&mut dev, RTCMR, soon);
        write32(&mut dev, RTCIMSC, 0xffff_ffff);
        assert_eq!(read32(&mut dev, RTCMR), soon);
        assert_eq!(read32(&mut dev, RTCIMSC), 1, "only the mask bit sticks");
        // vm-superio 0.8 never sets the raw status, so nothing may fire.
        assert_eq!(read32(&mut dev, RTCRIS), 0);
        write32(&mut dev, RTCICR, 1);
        write32(&mut dev, RTCIMSC, 0);
        assert_eq!(read32(&mut dev, RTCIMSC), 0);
        assert!(irq.event_fd().read().is_err(), "no interrupt was raised");
    }

    #[test]
    fn bad_accesses_are_ignored() {
        let (mut dev, _) = pl031();
        write32(&mut dev, RTCIMSC, 1);
        dev.write(RTCIMSC, &[0]);
        dev.write(RTCIMSC, &[0; 8]);
        dev.write(RTCIMSC + 1, &[0; 4]);
        dev.write(PL031_LEN, &[0; 4]);
        dev.write(u64::MAX - 1, &[0; 4]);
        assert_eq!(read32(&mut dev, RTCIMSC), 1);

        let mut short = [0xff; 2];
        dev.read(RTCDR, &mut short);
        assert_eq!(short, [0, 0]);
        let mut wide = [0xff; 8];
        dev.read(RTCDR, &mut wide);
        assert_eq!(wide, [0; 8]);
        assert_eq!(read32(&mut dev, 0xffd), 0, "unaligned");
        assert_eq!(read32(&mut dev, RTCICR), 0, "write-only register");
        assert_eq!(read32(&mut dev, 0x800), 0, "reserved");
    }

    #[test]
    fn a_restored_clock_keeps_the_time_the_guest_set() {
        let (mut dev, _) = pl031();
        // The guest sets the clock a day ahead and unmasks the alarm.
        let day_ahead = host_seconds() + 86_400;
        write32(&mut dev, RTCLR, day_ahead);
        write32(&mut dev, RTCIMSC, 1);
        write32(&mut dev, RTCMR, 1234);
        let saved = dev.state();

        let (mut restored, _) = pl031();
        assert!(
            read32(&mut restored, RTCDR) < day_ahead - 3600,
            "a fresh clock reads host time"
        );
        restored.restore(&saved);
        let now = read32(&mut restored, RTCDR);
        assert!(
            (day_ahead..=day_ahead + 5).contains(&now),
            "{now} vs {day_ahead}"
        );
        assert_eq!(read32(&mut restored, RTCLR), day_ahead);
        assert_eq!(read32(&mut restored, RTCIMSC), 1);
        assert_eq!(read32(&mut restored, RTCMR), 1234);
        assert_eq!(restored.state(), saved);
    }
}
