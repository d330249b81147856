//! The one description of a VM that every front end fills: `tandem run`'s
//! flags, a Firecracker `--config-file`, and API requests before
//! InstanceStart all build a [`VmResources`], and the machine is built from
//! it by one path (src/machine.rs). Checks that need no KVM are made here,
//! each failing with one line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arch::{GicChoice, VmConfig};
use devices::virtio::{random_mac, BlockConfig, NetConfig};

/// Command line used when none is given (serial console).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";
/// Command line used when none is given and the console is virtio.
pub const DEFAULT_CMDLINE_HVC: &str = "console=hvc0 panic=-1";
/// Guest RAM when none is given.
pub const DEFAULT_MEMORY: u64 = 512 << 20;

/// Which device the host terminal is attached to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsoleKind {
    /// The UART (ttyS0).
    #[default]
    Serial,
    /// virtio-console (hvc0).
    Virtio,
}

/// How virtio devices reach the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// virtio-mmio windows, one interrupt line each.
    #[default]
    Mmio,
    /// virtio-pci functions behind a PCIe host bridge, with MSI-X.
    Pci,
}

/// Kernel, initrd and command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootSource {
    /// Kernel image (bzImage or ELF vmlinux on x86_64, `Image` on aarch64).
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line; the default depends on the console.
    pub cmdline: Option<String>,
}

/// One virtio-blk disk and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drive {
    /// The drive's name (Firecracker's drive_id).
    pub id: String,
    /// The guest boots from it: it becomes /dev/vda and `root=` is added
    /// to the command line.
    pub is_root: bool,
    /// Backing file and options.
    pub block: BlockConfig,
}

/// One virtio-net interface and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInterface {
    /// The interface's name (Firecracker's iface_id).
    pub id: String,
    /// TAP and MAC.
    pub net: NetConfig,
}

/// The virtio-vsock device: guest CID and the host's Unix socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockDevice {
    /// Firecracker's vsock_id (informative; one device per VM).
    pub id: String,
    /// The guest's context ID, 3 or more.
    pub guest_cid: u32,
    /// Where host programs connect (`<uds_path>_<port>` for the guest's).
    pub uds_path: PathBuf,
}

/// The virtio-balloon device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonDevice {
    /// The initial target, in MiB.
    pub amount_mib: u32,
    /// Let the guest deflate under memory pressure.
    pub deflate_on_oom: bool,
    /// Offer free page reporting.
    pub free_page_reporting: bool,
    /// Seconds between guest statistics refreshes; 0: no stats queue.
    pub stats_interval_s: u16,
}

/// Everything a VM is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmResources {
    /// vCPUs, at least 1.
    pub vcpus: u8,
    /// Guest RAM in bytes.
    pub memory_size: u64,
    /// Simultaneous multithreading (x86_64 only; always off on aarch64).
    pub smt: bool,
    /// Keep KVM's dirty-page log (for diff snapshots and migration, later).
    pub track_dirty_pages: bool,
    /// aarch64 interrupt controller.
    pub gic: GicChoice,
    /// Where the host terminal is attached.
    pub console: ConsoleKind,
    /// What to boot; required before start.
    pub boot: Option<BootSource>,
    /// Disks, root first once started.
    pub drives: Vec<Drive>,
    /// Network interfaces.
    pub nets: Vec<NetInterface>,
    /// A virtio-rng device.
    pub rng: bool,
    /// A virtio-vsock device.
    pub vsock: Option<VsockDevice>,
    /// A virtio-balloon device.
    pub balloon: Option<BalloonDevice>,
    /// Also list virtio devices on the command line.
    pub virtio_cmdline: bool,
    /// Write the aarch64 device tree here.
    pub dump_fdt: Option<PathBuf>,
    /// The x86_64 debug-exit port (CLI only).
    pub debug_exit: bool,
    /// An in-kernel 8254 PIT (x86_64), for guests that need one.
    pub legacy_pit: bool,
    /// A PMUv3 in each vCPU (aarch64).
    pub pmu: bool,
    /// virtio-mmio or virtio-pci (docs/pci.md).
    pub transport: Transport,
}

impl Default for VmResources {
    fn default() -> Self {
        VmResources {
            vcpus: 1,
            memory_size: DEFAULT_MEMORY,
            smt: false,
            track_dirty_pages: false,
            gic: GicChoice::Auto,
            console: ConsoleKind::Serial,
            boot: None,
            drives: Vec::new(),
            nets: Vec::new(),
            rng: false,
            vsock: None,
            balloon: None,
            virtio_cmdline: false,
            dump_fdt: None,
            debug_exit: false,
            legacy_pit: false,
            pmu: false,
            transport: Transport::Mmio,
        }
    }
}

/// Fails with a one-line message unless `path` names a readable file.
pub fn check_readable_file(what: &str, path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(())
}

impl VmResources {
    /// Adds `drive`, or replaces the drive of the same id. A second root
    /// drive is refused.
    pub fn set_drive(&mut self, drive: Drive) -> Result<()> {
        if drive.is_root {
            if let Some(root) = self.drives.iter().find(|d| d.is_root && d.id != drive.id) {
                bail!("drive {} is already the root device", root.id);
            }
        }
        match self.drives.iter_mut().find(|d| d.id == drive.id) {
            Some(existing) => *existing = drive,
            None => self.drives.push(drive),
        }
        Ok(())
    }

    /// Adds `iface`, or replaces the interface of the same id. Two
    /// interfaces on one TAP are refused.
    pub fn set_net(&mut self, iface: NetInterface) -> Result<()> {
        let clash = self
            .nets
            .iter()
            .find(|n| n.id != iface.id && n.net.tap == iface.net.tap);
        if let Some(other) = clash {
            bail!("TAP {} is already used by {}", iface.net.tap, other.id);
        }
        match self.nets.iter_mut().find(|n| n.id == iface.id) {
            Some(existing) => *existing = iface,
            None => self.nets.push(iface),
        }
        Ok(())
    }

    /// Gives each interface without a MAC a random one. Called at start,
    /// so that the VM's configuration (`GET /vm/config`, a snapshot's)
    /// names the MAC its guest sees: a restored guest keeps it.
    pub fn choose_missing_macs(&mut self) -> Result<()> {
        for iface in self.nets.iter_mut().filter(|n| n.net.mac.is_none()) {
            iface.net.mac = Some(random_mac().context("cannot choose a MAC address")?);
        }
        Ok(())
    }

    /// The drives in the order the guest will see them: the root drive
    /// first (/dev/vda), the others as given.
    pub fn drives_in_guest_order(&self) -> Vec<&Drive> {
        let (root, rest): (Vec<_>, Vec<_>) = self.drives.iter().partition(|d| d.is_root);
        root.into_iter().chain(rest).collect()
    }

    /// The kernel command line: the one given or the console's default,
    /// plus `root=` for a root drive.
    pub fn cmdline(&self) -> String {
        let given = self.boot.as_ref().and_then(|b| b.cmdline.clone());
        let mut cmdline = given.unwrap_or_else(|| {
            match self.console {
                ConsoleKind::Serial => DEFAULT_CMDLINE,
                ConsoleKind::Virtio => DEFAULT_CMDLINE_HVC,
            }
            .to_string()
        });
        if let Some(root) = self.drives.iter().find(|d| d.is_root) {
            let mode = if root.block.readonly { "ro" } else { "rw" };
            cmdline.push_str(&format!(" root=/dev/vda {mode}"));
        }
        cmdline
    }

    /// Checks the files and numbers and builds the back end's config.
    pub fn vm_config(&self) -> Result<VmConfig> {
        let Some(boot) = &self.boot else {
            bail!("no kernel: set the boot source first");
        };
        check_readable_file("kernel", &boot.kernel)?;
        if let Some(initrd) = &boot.initrd {
            check_readable_file("initrd", initrd)?;
        }
        self.restored_vm_config()
    }

    /// The [`VmConfig`] of a VM restored from a snapshot: its guest is in
    /// the memory file, so its kernel and initrd need not exist any more.
    pub fn restored_vm_config(&self) -> Result<VmConfig> {
        for drive in &self.drives {
            check_readable_file("disk", &drive.block.path)?;
        }
        if self.vcpus == 0 {
            bail!("a VM needs at least 1 vCPU");
        }
        if self.memory_size == 0 {
            bail!("a VM needs some memory");
        }
        Ok(VmConfig {
            vcpus: self.vcpus,
            memory_size: self.memory_size,
            kernel: self
                .boot
                .as_ref()
                .map(|b| b.kernel.clone())
                .unwrap_or_default(),
            initrd: self.boot.as_ref().and_then(|b| b.initrd.clone()),
            cmdline: self.cmdline(),
            gic: self.gic,
            dump_fdt: self.dump_fdt.clone(),
            debug_exit: self.debug_exit,
            legacy_pit: self.legacy_pit,
            pci: self.transport == Transport::Pci,
            pmu: self.pmu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(id: &str, is_root: bool) -> Drive {
        Drive {
            id: id.into(),
            is_root,
            block: BlockConfig {
                path: PathBuf::from(format!("/tmp/{id}.img")),
                readonly: false,
                id: Some(id.into()),
                io_engine: Default::default(),
            },
        }
    }

    #[test]
    fn drives_replace_by_id_and_the_root_goes_first() {
        let mut resources = VmResources::default();
        resources.set_drive(drive("data", false)).unwrap();
        resources.set_drive(drive("rootfs", true)).unwrap();
        let order: Vec<_> = resources
            .drives_in_guest_order()
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(order, ["rootfs", "data"]);
        let err = resources.set_drive(drive("other", true)).unwrap_err();
        assert_eq!(err.to_string(), "drive rootfs is already the root device");
        resources.set_drive(drive("data", false)).unwrap();
        assert_eq!(resources.drives.len(), 2);
        assert!(resources.cmdline().ends_with(" root=/dev/vda rw"));
    }

    #[test]
    fn one_tap_serves_one_interface() {
        let mut resources = VmResources::default();
        let iface = |id: &str, tap: &str| NetInterface {
            id: id.into(),
            net: NetConfig {
                tap: tap.into(),
                mac: None,
            },
        };
        resources.set_net(iface("eth0", "tap0")).unwrap();
        resources.set_net(iface("eth0", "tap1")).unwrap();
        assert!(resources.set_net(iface("eth1", "tap1")).is_err());
        assert_eq!(resources.nets.len(), 1);
    }

    #[test]
    fn a_vm_without_a_kernel_is_refused_in_one_line() {
        let err = VmResources::default().vm_config().unwrap_err();
        assert_eq!(err.to_string(), "no kernel: set the boot source first");
        let resources = VmResources {
            boot: Some(BootSource {
                kernel: "/nonexistent/vmlinuz".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = format!("{:#}", resources.vm_config().unwrap_err());
        assert!(err.starts_with("kernel /nonexistent/vmlinuz"), "{err}");
    }

    #[test]
    fn the_default_cmdline_follows_the_console() {
        let mut resources = VmResources::default();
        assert_eq!(resources.cmdline(), DEFAULT_CMDLINE);
        resources.console = ConsoleKind::Virtio;
        assert_eq!(resources.cmdline(), DEFAULT_CMDLINE_HVC);
    }
}
