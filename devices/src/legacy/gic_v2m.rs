//! A GICv2m MSI frame: how a guest on a GICv2 (GIC-400 hosts such as the
//! Raspberry Pi 4 and 5, which have no ITS) gets MSIs. The frame owns a
//! range of SPIs; writing one's INTID to MSI_SETSPI_NS raises it. Each SPI
//! has its own [`IrqTrigger`], which the VMM binds to that SPI with an
//! irqfd. The frame's registers: MSI_TYPER (its first INTID and count),
//! MSI_SETSPI_NS and MSI_IIDR; everything else reads zero and ignores
//! writes.
//!
//! Devices' MSIs need not go through the bus: [`V2mWindow::spi_for`] says
//! which SPI a message (address, data) raises, and
//! [`GicV2mFrame::deliver`] raises it, so the VMM's `MsiSink` on a GICv2
//! delivers an MSI-X write without an MMIO access.

use std::io;

use pci::MsiMessage;

use crate::{BusDevice, IrqTrigger, LogLimit};

/// Bytes the frame decodes from its base (one 4 KiB frame).
pub const GIC_V2M_LEN: u64 = 0x1000;
/// MSI_TYPER: the first SPI's INTID in bits 25:16, the count in bits 9:0.
const MSI_TYPER: u64 = 0x008;
/// MSI_SETSPI_NS: a 32-bit write of an INTID raises that SPI.
pub const MSI_SETSPI_NS: u64 = 0x040;
/// MSI_IIDR: who implemented the frame.
const MSI_IIDR: u64 = 0xfcc;
/// MSI_IIDR's value: Arm's JEP106 code (0x43b) as the implementer, as
/// KVM's own VGIC reports, product and revision 0. None of the values
/// Linux applies v2m errata workarounds for (APM X-Gene, Broadcom NS2).
pub const V2M_IIDR: u32 = 0x43b;
/// INTID of SPI 0.
const FIRST_SPI_INTID: u32 = 32;
/// Interrupt IDs a GIC has; 1020-1023 are special, not SPIs.
const MAX_INTIDS: u32 = 1020;
/// Every register is 32 bits wide and 32-bit aligned.
const REGISTER_SIZE: usize = 4;

/// MSI_SETSPI_NS writes of an INTID outside the frame's SPIs.
static BAD_SETSPI: LogLimit = LogLimit::new();
/// Messages the VMM asked [`GicV2mFrame::deliver`] for that are not this
/// frame's (a guest programmed another address or INTID).
static BAD_MESSAGE: LogLimit = LogLimit::new();
/// Writes that could not signal a trigger's `EventFd`.
static TRIGGER_FAILED: LogLimit = LogLimit::new();

/// Where a frame sits and which SPIs it owns; no state, so the VMM can
/// keep a copy to route messages with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V2mWindow {
    /// Guest-physical address of the frame.
    pub base: u64,
    /// First SPI (INTID - 32, the KVM irqfd GSI) an MSI may set.
    pub first_spi: u32,
    /// How many SPIs from there.
    pub spis: u32,
}

impl V2mWindow {
    /// The address devices write their MSIs to: MSI_SETSPI_NS.
    pub fn doorbell(&self) -> u64 {
        self.base + MSI_SETSPI_NS
    }

    /// MSI_TYPER's value.
    pub fn typer(&self) -> u32 {
        (FIRST_SPI_INTID + self.first_spi) << 16 | self.spis
    }

    /// The SPI an MSI_SETSPI_NS write of `value` raises: `value` must be
    /// the INTID of one of the frame's SPIs (its reserved bits 31:10
    /// clear; Linux writes the bare INTID).
    pub fn spi_of_intid(&self, value: u32) -> Option<u32> {
        let spi = value.checked_sub(FIRST_SPI_INTID)?;
        let index = spi.checked_sub(self.first_spi)?;
        (index < self.spis).then_some(spi)
    }

    /// The SPI `message` raises, if it is a write to this frame's doorbell
    /// of one of its INTIDs: what the VMM's `MsiSink` asks on a GICv2.
    pub fn spi_for(&self, message: MsiMessage) -> Option<u32> {
        if message.address != self.doorbell() {
            return None;
        }
        self.spi_of_intid(message.data)
    }

    /// Refuses a window no GICv2m can have: no SPIs, or some past INTID
    /// 1019.
    fn check(&self) -> io::Result<()> {
        let end = u64::from(FIRST_SPI_INTID) + u64::from(self.first_spi) + u64::from(self.spis);
        if self.spis == 0 || end > u64::from(MAX_INTIDS) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "GICv2m SPIs {}+{} are not within INTIDs 32..{MAX_INTIDS}",
                    self.first_spi, self.spis
                ),
            ));
        }
        Ok(())
    }
}

/// One GICv2m frame. Nothing in it changes after creation, so clones
/// (which share the triggers' `EventFd`s) serve the MMIO bus and the
/// VMM's `MsiSink` alike.
#[derive(Clone, Debug)]
pub struct GicV2mFrame {
    window: V2mWindow,
    /// One per SPI, in order from `window.first_spi`.
    triggers: Vec<IrqTrigger>,
}

impl GicV2mFrame {
    /// A frame owning `window`'s SPIs, each with a new trigger.
    pub fn new(window: V2mWindow) -> io::Result<Self> {
        window.check()?;
        let triggers = (0..window.spis)
            .map(|_| IrqTrigger::new())
            .collect::<io::Result<_>>()?;
        Ok(Self { window, triggers })
    }

    /// Where the frame is and which SPIs it owns.
    pub fn window(&self) -> V2mWindow {
        self.window
    }

    /// Each SPI with its trigger, for the VMM to bind with KVM_IRQFD.
    pub fn spi_triggers(&self) -> impl Iterator<Item = (u32, &IrqTrigger)> {
        (self.window.first_spi..).zip(&self.triggers)
    }

    /// Raises the SPI `message` names, as if a device had written it to
    /// the doorbell; returns whether the message was this frame's.
    pub fn deliver(&self, message: MsiMessage) -> bool {
        let Some(spi) = self.window.spi_for(message) else {
            BAD_MESSAGE.warn(format_args!(
                "gic-v2m: MSI to {:#x} with data {:#x} is not for frame {:#x} \
                 (doorbell {:#x}, INTIDs {}+{}); dropped",
                message.address,
                message.data,
                self.window.base,
                self.window.doorbell(),
                FIRST_SPI_INTID + self.window.first_spi,
                self.window.spis
            ));
            return false;
        };
        self.raise(spi);
        true
    }

    fn raise(&self, spi: u32) {
        let index = (spi - self.window.first_spi) as usize;
        if let Err(e) = self.triggers[index].trigger() {
            TRIGGER_FAILED.error(format_args!("gic-v2m: cannot raise SPI {spi}: {e}"));
        }
    }

    /// The register a 32-bit aligned access at `offset` names.
    fn register(offset: u64, len: usize) -> Option<u64> {
        let aligned = offset.is_multiple_of(REGISTER_SIZE as u64);
        (len == REGISTER_SIZE && aligned && offset < GIC_V2M_LEN).then_some(offset)
    }
}

impl BusDevice for GicV2mFrame {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match Self::register(offset, data.len()) {
            Some(MSI_TYPER) => self.window.typer(),
            Some(MSI_IIDR) => V2M_IIDR,
            _ => 0,
        };
        data.fill(0);
        if data.len() == REGISTER_SIZE {
            data.copy_from_slice(&value.to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if Self::register(offset, data.len()) != Some(MSI_SETSPI_NS) {
            return;
        }
        let mut value = [0; REGISTER_SIZE];
        value.copy_from_slice(data);
        let intid = u32::from_le_bytes(value);
        match self.window.spi_of_intid(intid) {
            Some(spi) => self.raise(spi),
            None => BAD_SETSPI.warn(format_args!(
                "gic-v2m: MSI_SETSPI_NS write of {intid:#x} is not one of INTIDs {}+{}; ignored",
                FIRST_SPI_INTID + self.window.first_spi,
                self.window.spis
            )),
        }
    }
}

#[cfg(test)]
#[path = "gic_v2m_tests.rs"]
mod tests;
