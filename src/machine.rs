//! A built, running VM: KVM, the back end, guest memory, devices and vCPU
//! threads, made from a [`VmResources`] by the one boot path every front
//! end uses. It pauses and resumes as a whole: vCPUs first (no new device
//! access), then device workers (no guest-memory access), then guest time.
//! States and which operation is legal when live in src/vm.rs.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arch::{Arch, GuestClock, Host, VmConfig};
use devices::legacy::ConsoleOutput;
use devices::virtio::{
    Balloon, BalloonConfig, BalloonControl, Block, Console, ConsoleInput as VirtioConsoleInput,
    Net, Rng, Vsock,
};
use devices::ExitSignal;
use guest_memory::GuestMemoryMmap;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use log::{info, warn};

use crate::api::models::SnapshotType;
use crate::console::InputTarget;
use crate::device_manager::{DeviceManager, PciKvm};
use crate::dirty::{save_dirty_memory, take_dirty_pages, DirtyPages};
use crate::kvm_stats::KvmStats;
use crate::memory::{
    load_guest_memory_from_file, map_guest_memory, map_guest_memory_from_file,
    register_guest_memory, save_guest_memory,
};
use crate::resources::{ConsoleKind, VmResources};
use crate::seccomp::ThreadKind;
use crate::snapshot::MachineState;
use crate::vcpu::ExitCounters;
use crate::vcpus::{VcpuContext, Vcpus};

/// Says so when this host's KVM is PVM, which runs only PVM-built kernels.
fn warn_if_pvm() {
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        warn!("this host's KVM is PVM (kvm_pvm): stock Linux kernels will not boot here; use a host with hardware KVM or the emulated hosts in ci/");
    }
}

/// Opens /dev/kvm and checks its API version.
fn open_kvm() -> Result<Kvm> {
    let kvm = Kvm::new().context("cannot open /dev/kvm (is KVM enabled and accessible?)")?;
    if kvm.get_api_version() != 12 {
        bail!(
            "/dev/kvm speaks API {}, tandem needs 12",
            kvm.get_api_version()
        );
    }
    Ok(kvm)
}

/// A running VM. Dropping it stops the vCPUs before anything they use.
pub struct Machine {
    // Field order is drop order: threads first, guest memory last.
    vcpus: Vcpus,
    devices: DeviceManager,
    context: Arc<VcpuContext>,
    /// Shared with the PCI host bridge, which moves ioeventfds and MSI
    /// routes as the guest programs its functions.
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    console: Option<InputTarget>,
    /// Where both consoles' guest output goes (stdout), without blocking.
    console_output: ConsoleOutput,
    /// Guest time while paused.
    paused_clock: Option<GuestClock>,
    /// Whether RAM is anonymous memory (booted, or restored with dirty-page
    /// tracking: read in at load) rather than a memory file mapped
    /// privately (restored) or shared (migrated in): snapshots skip what it
    /// never used, and its dirty-page logs are exact.
    anonymous_memory: bool,
    /// Whether KVM logs the pages the vCPUs write (`track_dirty_pages`),
    /// for diff snapshots.
    log_dirty: bool,
    /// KVM's statistics: the VM's (`vm`) and each vCPU's (`vcpuN`).
    kvm_stats: Vec<(String, KvmStats)>,
}

/// Where a machine's guest comes from.
#[derive(Clone, Copy)]
pub enum Origin<'a> {
    /// Boot the kernel the resources name.
    Kernel,
    /// Continue a snapshot's guest: its saved state, and its RAM file.
    Snapshot(&'a MachineState, SavedMemory<'a>),
}

/// The guest RAM a restore maps.
#[derive(Clone, Copy)]
pub struct SavedMemory<'a> {
    /// RAM, regions back to back.
    pub file: &'a File,
    /// Mapped shared (a migration's file, nobody else's) rather than
    /// privately (a snapshot's, which must stay as it is).
    pub shared: bool,
}

impl Machine {
    /// Builds the VM `resources` describe and starts its vCPUs. Whatever
    /// ends the run is raised on `exit`.
    pub fn boot(resources: &VmResources, exit: Arc<ExitSignal>) -> Result<Machine> {
        let machine = Machine::build(resources, exit, Origin::Kernel)?;
        machine.vcpus.resume();
        Ok(machine)
    }

    /// Rebuilds a snapshot's machine, paused exactly where it was saved:
    /// [`Self::resume`] runs it, guest time included.
    pub fn restore(
        resources: &VmResources,
        exit: Arc<ExitSignal>,
        state: &MachineState,
        memory: SavedMemory,
    ) -> Result<Machine> {
        let mut machine = Machine::build(resources, exit, Origin::Snapshot(state, memory))?;
        machine.paused_clock = state.clock;
        machine.devices.pause()?;
        Ok(machine)
    }

    /// The one build path: the machine with its vCPU threads parked.
    fn build(resources: &VmResources, exit: Arc<ExitSignal>, origin: Origin) -> Result<Machine> {
        let mut config = match origin {
            Origin::Kernel => resources.vm_config()?,
            Origin::Snapshot(..) => resources.restored_vm_config()?,
        };
        warn_if_pvm();
        let kvm = open_kvm()?;
        let (mut arch, vm) = Host::create_vm(&kvm, &config)?;
        let vm = Arc::new(vm);
        // A restored VM that logs dirty pages gets its RAM read into
        // anonymous memory: KVM's log misses pages of RAM mapped from a
        // file (docs/snapshots.md, "Dirty pages").
        let anonymous_memory = match origin {
            Origin::Kernel => true,
            Origin::Snapshot(_, memory) => resources.track_dirty_pages && !memory.shared,
        };
        let ram = &arch.layout().ram;
        let mem = match origin {
            Origin::Kernel => map_guest_memory(ram)?,
            Origin::Snapshot(_, memory) if anonymous_memory => {
                let mut file = memory.file.try_clone().context("memory file")?;
                load_guest_memory_from_file(ram, &mut file)?
            }
            Origin::Snapshot(_, memory) => {
                map_guest_memory_from_file(ram, memory.file, memory.shared)?
            }
        };
        // Before the interrupt controller: registered after it, the
        // memory waits out a KVM grace period (Arch::create_irqchip).
        register_guest_memory(&vm, &mem, resources.track_dirty_pages)?;
        arch.create_irqchip(&vm)?;
        let (mut devices, vcpus, virtio_console, console_output) =
            build_platform(resources, &mut arch, &vm, &mem, &mut config, &exit, origin)?;
        if let Origin::Snapshot(state, _) = origin {
            restore_state(&mut arch, &vm, &vcpus, &devices, state)?;
            devices.connect_irqs(&vm)?;
        }

        let kvm_stats = open_kvm_stats(&vm, &vcpus);
        let context = Arc::new(VcpuContext {
            arch: Arc::new(arch),
            buses: devices.buses.clone(),
            exit,
            counters: ExitCounters::default(),
        });
        let console = match virtio_console {
            Some(input) => Some(InputTarget::Virtio(input)),
            None => devices.serial.clone().map(InputTarget::Uart),
        };
        let vcpus = Vcpus::start(vcpus, context.clone())?;
        // Built: from here on the main thread needs none of the calls that
        // built the VM (docs/security.md). The guest starts after this.
        crate::seccomp::enter(ThreadKind::Main, "main");
        info!(
            "{} vCPU(s), {} MiB: {} {:.1} ms after start",
            config.vcpus,
            config.memory_size >> 20,
            match origin {
                Origin::Kernel => "first KVM_RUN",
                Origin::Snapshot(..) => "restored, paused,",
            },
            crate::process_started().elapsed().as_secs_f64() * 1e3
        );
        Ok(Machine {
            vcpus,
            devices,
            context,
            vm,
            mem,
            console,
            console_output,
            paused_clock: None,
            anonymous_memory,
            log_dirty: resources.track_dirty_pages,
            kvm_stats,
        })
    }

    /// Guest RAM.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Turns KVM's dirty-page log on if it is not (a migration), and
    /// clears both logs: pages written from now on are known.
    pub fn start_dirty_log(&mut self) -> Result<()> {
        if !self.log_dirty {
            register_guest_memory(&self.vm, &self.mem, true)
                .context("turning on dirty-page logging")?;
            self.log_dirty = true;
        }
        self.take_dirty_pages().map(drop)
    }

    /// The pages written since the logs were last taken (see
    /// src/dirty.rs); the guest must be paused or the pages may be
    /// written again meanwhile (a migration's rounds allow for that).
    pub fn take_dirty_pages(&self) -> Result<DirtyPages> {
        take_dirty_pages(&self.vm, &self.mem)
    }

    /// See [`DeviceManager::hand_over`]: a migration's destination on this
    /// host opens the same disks.
    pub fn hand_over_devices(&self, release: bool) -> Result<()> {
        self.devices.hand_over(release)
    }

    /// After a failed migration, which may have taken the dirty-page logs
    /// a diff snapshot counts on: every page counts as written, so the
    /// next diff holds all of RAM rather than miss a page.
    pub fn forget_dirty_log(&self) {
        crate::dirty::mark_all(&self.mem);
    }

    /// Saves a paused machine's state (its RAM is [`Self::save_memory`]'s).
    pub fn save_state(&self) -> Result<MachineState> {
        let devices = self.devices.save_state()?;
        let vcpus = self.vcpus.lock_all();
        let fds: Vec<&VcpuFd> = vcpus.iter().map(|fd| &**fd).collect();
        let arch = &self.context.arch;
        Ok(MachineState {
            clock: self.paused_clock,
            vm: arch.save_vm(&self.vm, &fds)?,
            vcpus: fds
                .iter()
                .map(|fd| arch.save_vcpu(fd))
                .collect::<arch::Result<_>>()?,
            devices,
        })
    }

    /// Whether the dirty-page logs hold every page written, as a diff
    /// snapshot and a migration's pre-copy need. Measured on both
    /// architectures (docs/snapshots.md, "Dirty pages"): exact for
    /// anonymous RAM; pages go missing when RAM is mapped from a memory
    /// file (restored without tracking, or migrated in).
    pub fn dirty_log_exact(&self) -> bool {
        self.anonymous_memory
    }

    /// Writes guest RAM to `file`; the machine must be paused.
    pub fn save_memory(&self, file: &File, kind: SnapshotType) -> Result<()> {
        if kind == SnapshotType::Diff && !self.log_dirty {
            bail!("a diff snapshot needs dirty-page tracking: set track_dirty_pages in the machine configuration (or in the snapshot load)");
        }
        if kind == SnapshotType::Diff && !self.dirty_log_exact() {
            bail!("diff snapshots of a VM migrated in are not supported yet: its RAM is a memory file, whose dirty-page log misses pages (take a full one)");
        }
        // Taken first either way: the next diff starts at this snapshot.
        let dirty = match self.log_dirty {
            true => Some(self.take_dirty_pages()?),
            false => None,
        };
        let saved = match (kind, &dirty) {
            (SnapshotType::Diff, Some(dirty)) => save_dirty_memory(&self.mem, file, dirty),
            _ => save_guest_memory(&self.mem, file, self.anonymous_memory),
        };
        if let (Err(_), Some(dirty)) = (&saved, &dirty) {
            // No snapshot after all: the next diff must still have these.
            dirty.keep_for_next(&self.mem);
        }
        saved
    }

    /// Stops the guest: vCPUs parked out of KVM_RUN, device workers parked,
    /// guest time saved. Undone if any part fails.
    pub fn pause(&mut self) -> Result<()> {
        self.vcpus.pause()?;
        if let Err(e) = self.devices.pause() {
            self.devices.resume();
            self.vcpus.resume();
            return Err(e);
        }
        let vcpus = self.vcpus.lock_all();
        let fds: Vec<&VcpuFd> = vcpus.iter().map(|fd| &**fd).collect();
        match self.context.arch.save_clock(&self.vm, &fds) {
            Ok(clock) => self.paused_clock = Some(clock),
            // The guest will see the paused time; not worth failing for.
            Err(e) => warn!("cannot save guest time at pause: {e}"),
        }
        Ok(())
    }

    /// Goes on exactly where [`Self::pause`] stopped, guest time included.
    pub fn resume(&mut self) -> Result<()> {
        if let Some(clock) = self.paused_clock.take() {
            let vcpus = self.vcpus.lock_all();
            let fds: Vec<&VcpuFd> = vcpus.iter().map(|fd| &**fd).collect();
            if let Err(e) = self.context.arch.restore_clock(&self.vm, &fds, clock) {
                warn!("cannot restore guest time at resume: {e}");
            }
        }
        self.devices.resume();
        self.vcpus.resume();
        Ok(())
    }

    /// Stops every vCPU thread, then every device worker, all workers
    /// at once (idempotent).
    pub fn stop(&mut self) {
        self.vcpus.stop();
        self.devices.stop_workers();
    }

    /// Presses Ctrl+Alt+Del on the guest's keyboard (x86_64's i8042).
    pub fn send_ctrl_alt_del(&self) -> Result<()> {
        let Some(i8042) = &self.devices.i8042 else {
            bail!("SendCtrlAltDel is not supported on {}", Host::NAME);
        };
        let mut i8042 = i8042.lock().unwrap_or_else(|p| p.into_inner());
        if !i8042.send_ctrl_alt_del() {
            bail!("the guest has not enabled its keyboard yet");
        }
        Ok(())
    }

    /// Backs the running disk `id` with the file at `path` and tells the
    /// guest its new capacity.
    pub fn swap_drive(&self, id: &str, path: &Path) -> Result<()> {
        let Some(slot) = self.devices.virtio.iter().find(|slot| slot.name == id) else {
            bail!("no drive {id}");
        };
        slot.transport
            .update_backend(path)
            .with_context(|| format!("drive {id}: {}", path.display()))
    }

    /// The balloon's handle, if the VM has one.
    pub fn balloon(&self) -> Option<&BalloonControl> {
        self.devices.balloon.as_ref()
    }

    /// KVM's statistics, by `vm` and `vcpuN`; empty when the host has none.
    pub fn kvm_stats(&self) -> &[(String, KvmStats)] {
        &self.kvm_stats
    }

    /// Where host console input goes; handed out once.
    pub fn take_console(&mut self) -> Option<InputTarget> {
        self.console.take()
    }

    /// Guest console output; its `dropped_bytes()` counts what a host not
    /// reading stdout cost.
    pub fn console_output(&self) -> &ConsoleOutput {
        &self.console_output
    }

    /// Exit counts of all vCPUs.
    pub fn exit_counters(&self) -> &ExitCounters {
        &self.context.counters
    }

    /// The devices, for statistics.
    pub fn devices(&self) -> &DeviceManager {
        &self.devices
    }

    /// Guest memory, for statistics.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

/// What [`build_platform`] makes.
type Platform = (
    DeviceManager,
    Vec<VcpuFd>,
    Option<VirtioConsoleInput>,
    ConsoleOutput,
);

/// Everything of the machine but guest memory's KVM slots: devices, vCPUs,
/// the loaded kernel and boot tables (written through the mapping).
fn build_platform(
    resources: &VmResources,
    arch: &mut Host,
    vm: &Arc<VmFd>,
    mem: &GuestMemoryMmap,
    config: &mut VmConfig,
    exit: &Arc<ExitSignal>,
    origin: Origin,
) -> Result<Platform> {
    let console_output = crate::console::stdout_output().context("console output")?;
    let pci = match config.pci {
        true => Some(PciKvm {
            vm: vm.clone(),
            msi: arch.msi_routing()?,
        }),
        false => None,
    };
    let mut devices = DeviceManager::new(
        arch.layout(),
        &arch.platform_devices(),
        exit,
        console_output.clone(),
        pci,
    )?;
    let virtio_console = add_virtio_devices(resources, vm, mem, &mut devices, &console_output)?;
    if resources.virtio_cmdline {
        config.cmdline.push_str(&devices.virtio_cmdline());
    }
    let mut vcpus = (0..config.vcpus)
        .map(|index| arch.create_vcpu(vm, index))
        .collect::<arch::Result<Vec<VcpuFd>>>()?;
    // A snapshot's state is restored by the caller once guest memory is
    // registered: KVM checks that MSRs such as kvmclock's and async PF's
    // name guest memory it knows. Its interrupt lines are connected after
    // that too, as here after the boot set the interrupt controller up.
    if let Origin::Kernel = origin {
        arch.configure_boot(vm, &mut vcpus, mem, config, &devices.info)?;
        devices.connect_irqs(vm)?;
    }
    Ok((devices, vcpus, virtio_console, console_output))
}

/// Gives a machine built for a snapshot the state it saved: the VM's,
/// each vCPU's, the devices'. Guest memory must be registered with KVM.
fn restore_state(
    arch: &mut Host,
    vm: &VmFd,
    vcpus: &[VcpuFd],
    devices: &DeviceManager,
    state: &MachineState,
) -> Result<()> {
    if state.vcpus.len() != vcpus.len() {
        bail!(
            "the snapshot has {} vCPU states for {} vCPUs",
            state.vcpus.len(),
            vcpus.len()
        );
    }
    arch.restore_vm(vm, vcpus, &state.vm)?;
    for (vcpu, saved) in vcpus.iter().zip(&state.vcpus) {
        arch.restore_vcpu(vcpu, saved)?;
    }
    devices.restore_state(&state.devices)
}

/// Opens KVM's statistics for the VM and each vCPU, where the host has
/// them (KVM_CAP_BINARY_STATS_FD).
fn open_kvm_stats(vm: &VmFd, vcpus: &[VcpuFd]) -> Vec<(String, KvmStats)> {
    let vcpus = vcpus
        .iter()
        .enumerate()
        .map(|(index, vcpu)| (format!("vcpu{index}"), KvmStats::for_vcpu(vcpu)));
    std::iter::once(("vm".to_string(), KvmStats::for_vm(vm)))
        .chain(vcpus)
        .filter_map(|(name, stats)| match stats {
            Ok(Some(stats)) => Some((name, stats)),
            Ok(None) => None,
            Err(e) => {
                warn!("KVM statistics of {name} unavailable: {e}");
                None
            }
        })
        .collect()
}

/// Creates the virtio devices `resources` ask for; returns the virtio
/// console's input when the terminal is attached to it.
fn add_virtio_devices(
    resources: &VmResources,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    devices: &mut DeviceManager,
    console_output: &ConsoleOutput,
) -> Result<Option<VirtioConsoleInput>> {
    for drive in resources.drives_in_guest_order() {
        let block = Block::new(&drive.block).with_context(|| format!("drive {}", drive.id))?;
        devices.add_virtio(vm, mem, drive.id.clone(), Box::new(block))?;
    }
    for iface in &resources.nets {
        let tap = &iface.net.tap;
        let device = Net::new(&iface.net).with_context(|| format!("net tap={tap}"))?;
        devices.add_virtio(vm, mem, iface.id.clone(), Box::new(device))?;
    }
    if resources.rng {
        devices.add_virtio(vm, mem, "rng".into(), Box::new(Rng::new()?))?;
    }
    if let Some(vsock) = &resources.vsock {
        let device = Vsock::new(u64::from(vsock.guest_cid), &vsock.uds_path)?;
        devices.add_virtio(vm, mem, vsock.id.clone(), Box::new(device))?;
    }
    if let Some(balloon) = &resources.balloon {
        let config = BalloonConfig {
            target_pages: balloon.amount_mib * 256,
            deflate_on_oom: balloon.deflate_on_oom,
            free_page_reporting: balloon.free_page_reporting,
            stats_interval_s: balloon.stats_interval_s,
        };
        let device = Balloon::new(config, arch::host_page_size()?)?;
        devices.balloon = Some(device.control());
        devices.add_virtio(vm, mem, "balloon".into(), Box::new(device))?;
    }
    if resources.console != ConsoleKind::Virtio {
        return Ok(None);
    }
    let console = Console::new(console_output.clone())?;
    let input = console.input_sink();
    devices.add_virtio(vm, mem, "console".into(), Box::new(console))?;
    Ok(Some(input))
}
