//! Builds the devices the back end asks for, puts each on its bus and binds
//! its interrupt trigger to its GSI with KVM_IRQFD. Owns the list of
//! [`DeviceInfo`] the boot tables describe.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use arch::{AddressSpace, DeviceInfo, DeviceKind};
use devices::legacy::serial::SerialOutput;
use devices::legacy::{AcpiSleep, Pl031, Serial, I8042};
use devices::{BusDevice, ExitSignal, IrqTrigger};
use kvm_ioctls::VmFd;

use crate::vcpu::Buses;

/// The VM's devices and where they are.
pub struct DeviceManager {
    /// The buses vCPU exits are dispatched on.
    pub buses: Buses,
    /// Every device placed so far, for the FDT or ACPI tables.
    pub info: Vec<DeviceInfo>,
    /// The console UART, fed with host input.
    pub serial: Option<Arc<Mutex<Serial>>>,
}

impl DeviceManager {
    /// Creates the back end's platform devices. Guest console output goes
    /// to `console_out`; reset and power-off requests to `exit`.
    pub fn new(
        vm: &VmFd,
        platform: &[DeviceInfo],
        exit: &Arc<ExitSignal>,
        console_out: SerialOutput,
    ) -> Result<Self> {
        let mut manager = DeviceManager {
            buses: Buses::default(),
            info: Vec::new(),
            serial: None,
        };
        let mut console_out = Some(console_out);
        for info in platform {
            match info.kind {
                DeviceKind::Serial => {
                    let out = console_out.take().context("two serial consoles")?;
                    let serial = Arc::new(Mutex::new(Serial::new(irq_line(vm, info)?, out)?));
                    manager.serial = Some(serial.clone());
                    manager.place(info, serial)?;
                }
                DeviceKind::Rtc => {
                    let rtc = Pl031::new(irq_line(vm, info)?);
                    manager.place(info, Arc::new(Mutex::new(rtc)))?;
                }
                DeviceKind::I8042 => {
                    manager.place(info, Arc::new(Mutex::new(I8042::new(exit.clone()))))?;
                }
                DeviceKind::AcpiSleep => {
                    manager.place(info, Arc::new(Mutex::new(AcpiSleep::new(exit.clone()))))?;
                }
                DeviceKind::VirtioMmio => bail!("virtio devices are not platform devices"),
            }
        }
        Ok(manager)
    }

    /// Puts `device` on the bus `info` names and records it.
    fn place(&mut self, info: &DeviceInfo, device: Arc<Mutex<dyn BusDevice>>) -> Result<()> {
        let bus = match info.space {
            AddressSpace::Pio => &mut self.buses.pio,
            AddressSpace::Mmio => &mut self.buses.mmio,
        };
        bus.insert(device, info.base, info.len)
            .with_context(|| format!("cannot place {:?}", info.kind))?;
        self.info.push(*info);
        Ok(())
    }
}

/// A trigger bound to the device's GSI, or an error if it has none.
fn irq_line(vm: &VmFd, info: &DeviceInfo) -> Result<IrqTrigger> {
    let gsi = info
        .irq
        .with_context(|| format!("{:?} has no interrupt line", info.kind))?;
    let trigger = IrqTrigger::new()?;
    vm.register_irqfd(trigger.event_fd(), gsi)
        .with_context(|| format!("KVM_IRQFD for {:?} on GSI {gsi}", info.kind))?;
    Ok(trigger)
}
