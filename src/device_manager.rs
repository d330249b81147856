//! Builds the devices the back end asks for, puts each on its bus and binds
//! its interrupt trigger to its GSI with KVM_IRQFD. Owns the list of
//! [`DeviceInfo`] the boot tables describe, and saves and restores the
//! devices' state for snapshots ([`DevicesState`]).

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arch::{AddressSpace, DeviceInfo, DeviceKind, MemoryLayout, MsiRouting, PciLayout};
use devices::legacy::i8042::I8042State;
use devices::legacy::rtc_pl031::Pl031State;
use devices::legacy::serial::{SerialOutput, SerialState};
use devices::legacy::{AcpiSleep, DebugExit, GicV2mFrame, Pl031, Serial, V2mWindow, I8042};
use devices::virtio::pci::layout::BAR_SIZE;
use devices::virtio::pci::VirtioPci;
use devices::virtio::{
    worker, BalloonControl, BalloonState, MmioState, MmioTransport, VirtioDevice, MMIO_LEN,
    QUEUE_NOTIFY_OFFSET,
};
use devices::{BusDevice, ExitSignal, IrqTrigger};
use guest_memory::GuestMemoryMmap;
use kvm_ioctls::{IoEventAddress, VmFd};
use serde::{Deserialize, Serialize};

use crate::msi::{KvmMsiSink, MsiRouter};
use crate::pci_bars::{BarMap, BarWindow};
use crate::pci_function::VirtioFunction;
use crate::pci_host::{ConfigPorts, PciHost};
use crate::vcpu::Buses;
pub use crate::virtio_slot::{VirtioSlot, VirtioTransport};
use crate::vm_wiring::VmWiring;

/// The VM's devices and where they are.
pub struct DeviceManager {
    /// The buses vCPU exits are dispatched on.
    pub buses: Buses,
    /// Every device placed so far, for the FDT or ACPI tables.
    pub info: Vec<DeviceInfo>,
    /// The console UART, fed with host input.
    pub serial: Option<Arc<Mutex<Serial>>>,
    /// The keyboard controller (x86_64), for Ctrl+Alt+Del.
    pub i8042: Option<Arc<Mutex<I8042>>>,
    /// The real-time clock (aarch64).
    rtc: Option<Arc<Mutex<Pl031>>>,
    /// The virtio devices, in the order they were added.
    pub virtio: Vec<VirtioSlot>,
    /// The balloon's handle, if the VM has one.
    pub balloon: Option<BalloonControl>,
    free_mmio: Range<u64>,
    free_irqs: Range<u32>,
    /// Triggers waiting for [`DeviceManager::connect_irqs`].
    unconnected: Vec<(IrqTrigger, u32, DeviceKind)>,
    /// The PCI host bridge, when the VM has one: virtio devices go there.
    pci: Option<PciParts>,
}

/// What the device manager needs from KVM and the back end for PCI.
pub struct PciKvm {
    /// Where ioeventfds and MSI routes go.
    pub vm: Arc<dyn VmWiring>,
    /// How MSIs are routed on this VM (`Arch::msi_routing`).
    pub msi: MsiRouting,
}

/// The host bridge and what its functions share.
struct PciParts {
    host: Arc<Mutex<PciHost>>,
    router: Arc<MsiRouter>,
    layout: PciLayout,
}

/// What a snapshot holds of the devices. The ACPI sleep and debug-exit
/// registers hold nothing between accesses.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DevicesState {
    /// The console UART, if the VM has one.
    pub serial: Option<SerialState>,
    /// The keyboard controller (x86_64); absent from older snapshots,
    /// whose controller restarts from reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub i8042: Option<I8042State>,
    /// The real-time clock (aarch64); absent from older snapshots, whose
    /// clock restarts at host time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc: Option<Pl031State>,
    /// Each virtio device, in the order they were added (the order the
    /// VM's configuration gives them again on restore).
    #[serde(default)]
    pub virtio: Vec<VirtioState>,
}

/// One virtio device's saved state.
#[derive(Debug, Serialize, Deserialize)]
pub struct VirtioState {
    /// The device's name (see [`VirtioSlot::name`]), checked on restore.
    pub name: String,
    /// Its transport's registers, queue positions and interrupt state.
    pub transport: MmioState,
    /// The balloon's target and actual (its own state besides the queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonState>,
}

/// Locks a device, whether or not an earlier holder panicked (the bus
/// already turns a device panic into a failed access).
fn lock<T: ?Sized>(device: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    device.lock().unwrap_or_else(|p| p.into_inner())
}

/// Address stride between virtio-mmio windows: one 4 KiB page each keeps
/// them apart and aligned whatever the window length.
const VIRTIO_STRIDE: u64 = 0x1000;

impl DeviceManager {
    /// The devices' state, for a snapshot of a paused VM.
    pub fn save_state(&self) -> Result<DevicesState> {
        let virtio = self
            .virtio
            .iter()
            .map(|slot| {
                let transport = &slot.transport;
                let balloon = (transport.device_type()
                    == devices::virtio::balloon::VIRTIO_ID_BALLOON)
                    .then(|| self.balloon.as_ref().map(BalloonControl::state))
                    .flatten();
                Ok(VirtioState {
                    name: slot.name.clone(),
                    balloon,
                    transport: transport
                        .save_state()
                        .with_context(|| format!("virtio device {}", slot.name))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(DevicesState {
            serial: self.serial.as_ref().map(|serial| lock(serial).state()),
            i8042: self.i8042.as_ref().map(|i8042| lock(i8042).state()),
            rtc: self.rtc.as_ref().map(|rtc| lock(rtc).state()),
            virtio,
        })
    }

    /// Gives freshly built devices the state a snapshot saved.
    pub fn restore_state(&self, state: &DevicesState) -> Result<()> {
        match (&self.serial, &state.serial) {
            (Some(serial), Some(saved)) => {
                lock(serial).restore(saved).map_err(anyhow::Error::msg)?
            }
            (None, None) => {}
            _ => bail!("the snapshot's serial console does not match this VM's"),
        }
        match (&self.i8042, &state.i8042) {
            (Some(i8042), Some(saved)) => lock(i8042).restore(saved).map_err(anyhow::Error::msg)?,
            (None, Some(_)) => bail!("the snapshot has an i8042, this VM none"),
            _ => {}
        }
        match (&self.rtc, &state.rtc) {
            (Some(rtc), Some(saved)) => lock(rtc).restore(saved),
            (None, Some(_)) => bail!("the snapshot has a real-time clock, this VM none"),
            _ => {}
        }
        let names = |names: Vec<&str>| names.join(", ");
        let saved = names(state.virtio.iter().map(|v| v.name.as_str()).collect());
        let built = names(self.virtio.iter().map(|v| v.name.as_str()).collect());
        if saved != built {
            bail!("the snapshot has virtio devices [{saved}], this VM [{built}]");
        }
        for (slot, saved) in self.virtio.iter().zip(&state.virtio) {
            slot.transport
                .restore_state(&saved.transport)
                .with_context(|| format!("virtio device {}", slot.name))?;
            if let (Some(control), Some(state)) = (&self.balloon, &saved.balloon) {
                control.restore(state);
            }
        }
        Ok(())
    }

    /// Creates the back end's platform devices. Guest console output goes
    /// to `console_out`; reset and power-off requests to `exit`. A PCI
    /// host bridge among them needs `pci`.
    pub fn new(
        layout: &MemoryLayout,
        platform: &[DeviceInfo],
        exit: &Arc<ExitSignal>,
        console_out: SerialOutput,
        pci: Option<PciKvm>,
    ) -> Result<Self> {
        let mut manager = DeviceManager {
            buses: Buses::default(),
            info: Vec::new(),
            serial: None,
            i8042: None,
            rtc: None,
            virtio: Vec::new(),
            free_mmio: layout.device_mmio.clone(),
            free_irqs: layout.device_irqs.clone(),
            unconnected: Vec::new(),
            balloon: None,
            pci: None,
        };
        let mut pci = pci;
        let mut console_out = Some(console_out);
        for info in platform {
            match info.kind {
                DeviceKind::Serial => {
                    let out = console_out.take().context("two serial consoles")?;
                    let serial = Arc::new(Mutex::new(Serial::new(manager.irq_line(info)?, out)?));
                    manager.serial = Some(serial.clone());
                    manager.place(info, serial)?;
                }
                DeviceKind::Rtc => {
                    let rtc = Arc::new(Mutex::new(Pl031::new(manager.irq_line(info)?)));
                    manager.rtc = Some(rtc.clone());
                    manager.place(info, rtc)?;
                }
                DeviceKind::I8042 => {
                    let i8042 = I8042::new(exit.clone(), manager.irq_line(info)?);
                    let i8042 = Arc::new(Mutex::new(i8042));
                    manager.i8042 = Some(i8042.clone());
                    manager.place(info, i8042)?;
                }
                DeviceKind::AcpiSleep => {
                    manager.place(info, Arc::new(Mutex::new(AcpiSleep::new(exit.clone()))))?;
                }
                DeviceKind::DebugExit => {
                    manager.place(info, Arc::new(Mutex::new(DebugExit::new(exit.clone()))))?;
                }
                DeviceKind::VirtioMmio => bail!("virtio devices are not platform devices"),
                DeviceKind::PciEcam => {
                    let kvm = pci.take().context("a PCI host bridge without KVM wiring")?;
                    let host = manager.add_pci_host(&layout.pci, kvm)?;
                    manager.place(info, host)?;
                }
                DeviceKind::PciConfigPorts => {
                    let parts = manager.pci.as_ref();
                    let host = parts.context("PCI configuration ports before the ECAM window")?;
                    let ports = ConfigPorts::new(host.host.clone());
                    manager.place(info, Arc::new(Mutex::new(ports)))?;
                }
                DeviceKind::GicV2mFrame { spis } => {
                    let first_spi = info.irq.context("a GICv2m frame without SPIs")?;
                    let window = V2mWindow {
                        base: info.base,
                        first_spi,
                        spis,
                    };
                    let parts = manager.pci.as_ref();
                    let parts = parts.context("a GICv2m frame before the PCI host bridge")?;
                    parts.router.through_v2m(window)?;
                    let frame = GicV2mFrame::new(window).context("GICv2m frame")?;
                    for (spi, trigger) in frame.spi_triggers() {
                        let line = (trigger.clone(), spi, info.kind);
                        manager.unconnected.push(line);
                    }
                    manager.place(info, Arc::new(Mutex::new(frame)))?;
                }
            }
        }
        Ok(manager)
    }

    /// Gives `device` its transport: a function on the PCI host bridge
    /// when the VM has one, else a virtio-mmio window.
    pub fn add_virtio(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        name: String,
        device: Box<dyn VirtioDevice>,
    ) -> Result<()> {
        match self.pci.is_some() {
            true => self.add_virtio_pci(mem, name, device),
            false => self.add_virtio_mmio(vm, mem, name, device),
        }
    }

    /// Gives `device` a virtio-mmio window and an interrupt line, binds its
    /// queue notifications to ioeventfds and its interrupt to an irqfd.
    fn add_virtio_mmio(
        &mut self,
        vm: &VmFd,
        mem: &GuestMemoryMmap,
        name: String,
        device: Box<dyn VirtioDevice>,
    ) -> Result<()> {
        let base = self.free_mmio.start;
        if base + VIRTIO_STRIDE > self.free_mmio.end {
            bail!("no MMIO space left for {name}");
        }
        let gsi = self
            .free_irqs
            .next()
            .with_context(|| format!("no interrupt line left for {name}"))?;
        self.free_mmio.start += VIRTIO_STRIDE;
        let info = DeviceInfo {
            kind: DeviceKind::VirtioMmio,
            space: AddressSpace::Mmio,
            base,
            len: MMIO_LEN,
            irq: Some(gsi),
        };
        let irq = self.irq_line(&info)?;
        let transport = MmioTransport::new(mem.clone(), irq, device)
            .with_context(|| format!("cannot create the transport for {name}"))?;
        for (queue, event) in transport.queue_events() {
            vm.register_ioevent(
                event,
                &IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET),
                queue,
            )
            .with_context(|| format!("KVM_IOEVENTFD for {name} queue {queue}"))?;
        }
        let interrupt = transport.interrupt();
        let transport = Arc::new(Mutex::new(transport));
        self.virtio.push(VirtioSlot {
            name,
            transport: VirtioTransport::Mmio(transport.clone()),
            interrupt,
        });
        self.place(&info, transport)
    }

    /// The host bridge, its BAR windows on the MMIO bus and the MSI router.
    fn add_pci_host(&mut self, layout: &PciLayout, kvm: PciKvm) -> Result<Arc<Mutex<PciHost>>> {
        let windows = vec![layout.mmio32.clone(), layout.mmio64.clone()];
        let bars = Arc::new(BarMap::new(windows.clone()));
        for window in windows {
            let device = Arc::new(Mutex::new(BarWindow::new(window.start, bars.clone())));
            self.buses
                .mmio
                .insert(device, window.start, window.end - window.start)
                .with_context(|| format!("PCI BAR window {window:x?}"))?;
        }
        let host = Arc::new(Mutex::new(PciHost::new(kvm.vm.clone(), bars)));
        self.pci = Some(PciParts {
            host: host.clone(),
            router: Arc::new(MsiRouter::new(kvm.vm, kvm.msi)),
            layout: layout.clone(),
        });
        Ok(host)
    }

    /// Puts `device` behind a virtio-pci function in the next slot: BAR0
    /// pre-assigned in the 32-bit window (decoding off until the guest
    /// turns it on), an irqfd per MSI-X vector, INTA# on the swizzled
    /// line.
    fn add_virtio_pci(
        &mut self,
        mem: &GuestMemoryMmap,
        name: String,
        device: Box<dyn VirtioDevice>,
    ) -> Result<()> {
        let parts = self.pci.as_ref().context("no PCI host bridge")?;
        let slot = lock(&parts.host)
            .next_slot()
            .with_context(|| format!("no PCI slot left for {name}"))?;
        let vectors = u16::try_from(device.queue_max_sizes().len() + 1)
            .with_context(|| format!("{name} has too many queues"))?;
        // Requester id: bus 0, this slot, function 0.
        let msi = KvmMsiSink::new(parts.router.clone(), u32::from(slot) << 3, vectors)?;
        let msi = Arc::new(msi);
        let intx_gsi = parts.layout.intx_irqs[usize::from(slot) % 4];
        // In the 32-bit window: BAR0 is not prefetchable (reading the ISR
        // clears it), and Linux keeps a firmware-placed BAR only in a
        // window of its kind — the 64-bit one is prefetchable.
        let bar = parts.layout.mmio32.start + u64::from(slot - 1) * BAR_SIZE;
        if bar + BAR_SIZE > parts.layout.mmio32.end {
            bail!("no 32-bit BAR space left for {name}");
        }
        let host = parts.host.clone();
        for (irqfd, gsi) in msi.irqfds() {
            self.unconnected
                .push((irqfd.clone(), gsi, DeviceKind::PciEcam));
        }
        let intx = IrqTrigger::level()?;
        self.unconnected
            .push((intx.clone(), intx_gsi, DeviceKind::PciEcam));
        let function = VirtioPci::new(mem.clone(), intx, msi.clone(), device)
            .with_context(|| format!("cannot create the virtio-pci function for {name}"))?;
        let interrupt = function.interrupt();
        let function = Arc::new(Mutex::new(function));
        let wired = VirtioFunction::new(function.clone(), msi)?;
        wired.assign_bar(bar);
        lock(&host).add(wired)?;
        self.virtio.push(VirtioSlot {
            name,
            transport: VirtioTransport::Pci(function),
            interrupt,
        });
        Ok(())
    }

    /// Parks every virtio device's worker; the vCPUs must be parked
    /// already, or they could restart one through its registers.
    pub fn pause(&self) -> Result<()> {
        for slot in &self.virtio {
            if !slot.transport.pause() {
                bail!("virtio device {} did not stop in time", slot.name);
            }
        }
        Ok(())
    }

    /// Lets another process on this host take the devices' single-user
    /// host resources (`release`, a migration's destination), or takes
    /// them back (see `VirtioDevice::hand_over`).
    pub fn hand_over(&self, release: bool) -> Result<()> {
        for slot in &self.virtio {
            slot.transport
                .hand_over(release)
                .with_context(|| format!("virtio device {}", slot.name))?;
        }
        Ok(())
    }

    /// Stops every virtio device's worker at once and waits for them
    /// together, at most `STOP_WAIT`; one still busy then is left to end
    /// on its own. Stopping them one by one (dropping each) would wait up
    /// to that long per busy device, so a guest keeping several busy
    /// could hold up the VMM's exit for seconds.
    pub fn stop_workers(&self) {
        let deadline = Instant::now() + worker::STOP_WAIT;
        let workers = self
            .virtio
            .iter()
            .flat_map(|slot| slot.transport.stop_workers())
            .collect();
        worker::finish_all(workers, deadline);
    }

    /// Lets every virtio device's worker go on.
    pub fn resume(&self) {
        for slot in &self.virtio {
            slot.transport.resume();
        }
    }

    /// `virtio_mmio.device=` arguments describing every virtio device, for
    /// kernels built with `CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES` that are not
    /// told about them by ACPI or a device tree.
    pub fn virtio_cmdline(&self) -> String {
        self.info
            .iter()
            .filter(|info| info.kind == DeviceKind::VirtioMmio)
            .filter_map(|info| {
                let irq = info.irq?;
                Some(format!(
                    " virtio_mmio.device={:#x}@{:#x}:{irq}",
                    info.len, info.base
                ))
            })
            .collect()
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

    /// A trigger for the device's GSI, bound by [`Self::connect_irqs`].
    fn irq_line(&mut self, info: &DeviceInfo) -> Result<IrqTrigger> {
        let gsi = info
            .irq
            .with_context(|| format!("{:?} has no interrupt line", info.kind))?;
        let trigger = IrqTrigger::new()?;
        self.unconnected.push((trigger.clone(), gsi, info.kind));
        Ok(trigger)
    }

    /// Binds every trigger to its GSI with KVM_IRQFD. Called once the
    /// interrupt controller exists (on aarch64 that is after the vCPUs);
    /// KVM delivers anything a device raised before then at binding time.
    pub fn connect_irqs(&mut self, vm: &VmFd) -> Result<()> {
        for (trigger, gsi, kind) in self.unconnected.drain(..) {
            match trigger.resample_fd() {
                None => vm.register_irqfd(trigger.event_fd(), gsi),
                Some(resample) => {
                    vm.register_irqfd_with_resample(trigger.event_fd(), resample, gsi)
                }
            }
            .with_context(|| format!("KVM_IRQFD for {kind:?} on GSI {gsi}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_cmdline_names_each_virtio_window_and_line() {
        let layout = MemoryLayout {
            ram: Vec::new(),
            device_mmio: 0xd000_0000..0xd000_3000,
            device_irqs: 5..7,
            pci: arch::PciLayout {
                ecam: 0xe000_0000..0xe010_0000,
                mmio32: 0xc000_0000..0xd000_0000,
                mmio64: 0x1_0000_0000..0x2_0000_0000,
                intx_irqs: [20, 21, 22, 23],
            },
        };
        let mut manager = DeviceManager::new(
            &layout,
            &[],
            &Arc::new(ExitSignal::new().unwrap()),
            SerialOutput::new(Box::new(std::io::sink())).unwrap(),
            None,
        )
        .unwrap();
        for (base, irq) in [(0xd000_0000, 5), (0xd000_1000, 6)] {
            manager.info.push(DeviceInfo {
                kind: DeviceKind::VirtioMmio,
                space: AddressSpace::Mmio,
                base,
                len: MMIO_LEN,
                irq: Some(irq),
            });
        }
        assert_eq!(
            manager.virtio_cmdline(),
            " virtio_mmio.device=0x200@0xd0000000:5 virtio_mmio.device=0x200@0xd0001000:6"
        );
    }
}
