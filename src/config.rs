//! The command line, in two forms: `tandem run …` boots a guest from
//! flags, and tandem with no subcommand takes Firecracker's flags
//! (`--api-sock`, `--config-file`, …) so tools that spawn firecracker can
//! spawn tandem. Both end in a [`VmResources`]; syntax is checked here,
//! files and numbers there.

use std::path::PathBuf;

use arch::GicChoice;
use clap::{Args, Parser, Subcommand, ValueEnum};
use devices::virtio::{parse_mac, BlockConfig, IoEngine, NetConfig};

use crate::resources::{
    BalloonDevice, BootSource, ConsoleKind, Drive, NetInterface, Transport, VmResources,
    VsockDevice,
};

/// tandem: a virtual machine monitor for Linux guests on KVM.
///
/// Without a subcommand it serves Firecracker's API on a Unix socket.
#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; none: the Firecracker-compatible VMM.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Firecracker's flags.
    #[command(flatten)]
    pub vmm: VmmArgs,
}

/// Firecracker's command line, as `firecracker` takes it, and tandem's
/// extensions to it.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("at_once").args(["config_file", "restore_snapshot"]))]
pub struct VmmArgs {
    /// Serve the API on this Unix socket.
    #[arg(long, value_name = "PATH", default_value = "/run/tandem.socket")]
    pub api_sock: PathBuf,
    /// The VM's id, as `GET /` reports it.
    #[arg(long, default_value = "anonymous-instance")]
    pub id: String,
    /// Boot at once from a Firecracker JSON configuration.
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Serve no API (needs --config-file or --restore-snapshot).
    #[arg(long, requires = "at_once")]
    pub no_api: bool,
    /// Restore at once the VM saved in this state file and run it (a
    /// tandem extension: the command-line form of `PUT /snapshot/load`).
    #[arg(long, value_name = "PATH", requires = "restore_memory")]
    pub restore_snapshot: Option<PathBuf>,
    /// The memory file saved with --restore-snapshot.
    #[arg(long, value_name = "PATH", requires = "restore_snapshot")]
    pub restore_memory: Option<PathBuf>,
    /// Leave the restored VM paused (resume it with `PATCH /vm`).
    #[arg(long, requires = "restore_snapshot")]
    pub restore_paused: bool,
    /// Wait on this Unix socket (PATH or unix:PATH) or TCP address
    /// (tcp:IP:PORT) for a guest migrated from another tandem (`PUT
    /// /migrate` there), then run it (a tandem extension).
    #[arg(long, value_name = "ENDPOINT", conflicts_with = "at_once")]
    pub migrate_listen: Option<crate::migration::Endpoint>,
    /// Append log lines to this file (or FIFO) instead of stderr.
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<PathBuf>,
    /// Log level: Error, Warning, Info, Debug, Trace or Off.
    #[arg(long, value_name = "LEVEL", value_parser = parse_fc_level)]
    pub level: Option<log::LevelFilter>,
    /// Prefix log lines with their level.
    #[arg(long)]
    pub show_level: bool,
    /// Prefix log lines with their source file and line.
    #[arg(long)]
    pub show_log_origin: bool,
    /// Write metrics lines to this file or FIFO.
    #[arg(long, value_name = "PATH")]
    pub metrics_path: Option<PathBuf>,
    /// Run without seccomp filters (for debugging; logged as a warning).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Firecracker flags tandem accepts and ignores (logged).
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// Flags of Firecracker's that tandem has no use for. They are accepted so
/// that tools passing them work unchanged, and each is logged.
#[derive(Debug, Args)]
pub struct IgnoredArgs {
    /// Ignored: tandem's seccomp filters are its own.
    #[arg(long, value_name = "PATH")]
    pub seccomp_filter: Option<String>,
    /// Ignored (Firecracker's jailer start time).
    #[arg(long, value_name = "US")]
    pub start_time_us: Option<String>,
    /// Ignored (Firecracker's jailer start time).
    #[arg(long, value_name = "US")]
    pub start_time_cpu_us: Option<String>,
    /// Ignored (Firecracker's jailer CPU time).
    #[arg(long, value_name = "US")]
    pub parent_cpu_time_us: Option<String>,
    /// Ignored (Firecracker's boot-timer device).
    #[arg(long)]
    pub boot_timer: bool,
    /// Ignored (no MMDS yet).
    #[arg(long, value_name = "BYTES")]
    pub mmds_size_limit: Option<String>,
    /// Ignored (Firecracker's log module filter).
    #[arg(long, value_name = "MODULE")]
    pub module: Option<String>,
    /// Ignored (no PCI yet).
    #[arg(long)]
    pub enable_pci: bool,
    /// Ignored: the API takes bodies up to Firecracker's default, 51200
    /// bytes.
    #[arg(long, value_name = "BYTES")]
    pub http_api_max_payload_size: Option<String>,
}

impl IgnoredArgs {
    /// The flags that were given, as `--name[=value]`.
    pub fn given(&self) -> Vec<String> {
        let valued = [
            ("seccomp-filter", &self.seccomp_filter),
            ("start-time-us", &self.start_time_us),
            ("start-time-cpu-us", &self.start_time_cpu_us),
            ("parent-cpu-time-us", &self.parent_cpu_time_us),
            ("mmds-size-limit", &self.mmds_size_limit),
            ("module", &self.module),
            ("http-api-max-payload-size", &self.http_api_max_payload_size),
        ];
        let switches = [
            ("boot-timer", self.boot_timer),
            ("enable-pci", self.enable_pci),
        ];
        let valued = valued
            .into_iter()
            .filter_map(|(name, v)| v.as_ref().map(|v| format!("--{name}={v}")));
        let switches = switches
            .into_iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| format!("--{name}"));
        valued.chain(switches).collect()
    }
}

/// Parses Firecracker's level names (and tandem's).
fn parse_fc_level(text: &str) -> Result<log::LevelFilter, String> {
    match text.to_ascii_lowercase().as_str() {
        "warning" => Ok(log::LevelFilter::Warn),
        other => parse_level(other),
    }
}

/// tandem's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux guest and attach its console to this terminal.
    Run(RunArgs),
    /// Send one request to a running tandem's API socket and print the
    /// answer (for hosts without curl).
    Api(ApiArgs),
    /// Snapshot a running tandem through its API socket: pause, save the
    /// VM's state and memory to two files, resume (the command-line form
    /// of `PUT /snapshot/create`; restore with --restore-snapshot).
    Snapshot(SnapshotArgs),
    /// Apply a diff snapshot's memory file to the memory file of the
    /// snapshot before it (as Firecracker's `snapshot-editor edit-memory
    /// rebase`): the base then restores to the diff's state.
    RebaseMemory(RebaseArgs),
}

/// Options of `tandem rebase-memory`.
#[derive(Debug, Args)]
pub struct RebaseArgs {
    /// The memory file of the snapshot the diff was taken after; changed
    /// in place.
    #[arg(long, value_name = "PATH")]
    pub memory_path: PathBuf,
    /// The diff snapshot's memory file.
    #[arg(long, value_name = "PATH")]
    pub diff_path: PathBuf,
}

/// Options of `tandem api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The API socket.
    #[arg(long, value_name = "PATH")]
    pub sock: PathBuf,
    /// GET, PUT or PATCH.
    pub method: String,
    /// The endpoint, e.g. /vm.
    pub path: String,
    /// The JSON body.
    pub body: Option<String>,
}

/// Options of `tandem snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The API socket of the tandem whose VM is saved.
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Where the VM's state goes.
    #[arg(long, value_name = "PATH")]
    pub snapshot_path: PathBuf,
    /// Where guest RAM goes.
    #[arg(long, value_name = "PATH")]
    pub mem_file_path: PathBuf,
    /// Save only the pages written since the last snapshot (docs/snapshots.md).
    #[arg(long)]
    pub diff: bool,
    /// Leave the VM paused afterwards (it is resumed if it was running).
    #[arg(long)]
    pub keep_paused: bool,
}

/// Options of `tandem run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: bzImage or ELF vmlinux (x86_64), Image (aarch64).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: "console=ttyS0 panic=-1", or
    /// console=hvc0 with --console virtio].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u8,
    /// Guest RAM: a number with an optional K, M, G or T suffix (MiB when
    /// there is none).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    /// Interrupt controller on aarch64: GICv3 if the host has it, else GICv2.
    #[arg(long, value_enum, default_value_t = GicArg::Auto)]
    pub gic: GicArg,
    /// Write the guest's device tree to FILE (aarch64).
    #[arg(long, value_name = "FILE")]
    pub dump_fdt: Option<PathBuf>,
    /// A debug-exit port at 0xf4 (x86_64): a guest write of V ends tandem
    /// with exit status (V << 1) | 1, as QEMU's isa-debug-exit does.
    #[arg(long)]
    pub debug_exit: bool,
    /// An in-kernel 8254 PIT (x86_64). Linux 5.3 and later need none (they
    /// use the TSC-deadline timer); older kernels and some test kernels do.
    #[arg(long)]
    pub legacy_pit: bool,
    /// A PMUv3 in each vCPU (aarch64), backed by the host's counters, for
    /// `perf` in the guest; an error where the host's KVM offers none.
    #[arg(long)]
    pub pmu: bool,
    /// How virtio devices reach the guest: virtio-mmio windows, or
    /// virtio-pci functions behind a PCIe host bridge (docs/pci.md).
    #[arg(long, value_enum, default_value_t = TransportArg::Mmio)]
    pub transport: TransportArg,
    /// A virtio-blk disk backed by a host file (repeatable).
    #[arg(long = "disk", value_name = "path=FILE[,readonly=on][,id=ID][,io_engine=sync|async]", value_parser = parse_disk)]
    pub disks: Vec<BlockConfig>,
    /// A virtio-net interface on a host TAP device, created if missing
    /// (repeatable).
    #[arg(long = "net", value_name = "tap=NAME[,mac=MAC]", value_parser = parse_net)]
    pub nets: Vec<NetConfig>,
    /// A virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// A virtio-vsock device for guest CID N; host programs connect to the
    /// Unix socket PATH (docs/vsock.md).
    #[arg(long, value_name = "cid=N,uds=PATH", value_parser = parse_vsock)]
    pub vsock: Option<VsockDevice>,
    /// A virtio-balloon device with an initial target of N MiB
    /// (docs/balloon.md).
    #[arg(long, value_name = "size_mib=N[,deflate_on_oom=on][,free_page_reporting=on][,stats_interval=S]", value_parser = parse_balloon)]
    pub balloon: Option<BalloonDevice>,
    /// Which device the terminal is attached to.
    #[arg(long, value_enum, default_value_t = ConsoleArg::Serial)]
    pub console: ConsoleArg,
    /// Also describe virtio devices on the kernel command line
    /// (`virtio_mmio.device=`), for kernels built with
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES.
    #[arg(long)]
    pub virtio_cmdline: bool,
    /// Print exit and virtio notification counts when the VM stops.
    #[arg(long)]
    pub stats: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: log::LevelFilter,
    /// Run without seccomp filters (for debugging; logged as a warning).
    #[arg(long)]
    pub no_seccomp: bool,
}

/// `--console` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsoleArg {
    /// The UART (ttyS0).
    Serial,
    /// virtio-console (hvc0).
    Virtio,
}

/// `--gic` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GicArg {
    /// GICv3 when available, else GICv2.
    Auto,
    /// GICv2 (GIC-400 hosts such as the Raspberry Pi).
    V2,
    /// GICv3.
    V3,
}

impl From<GicArg> for GicChoice {
    fn from(arg: GicArg) -> Self {
        match arg {
            GicArg::Auto => GicChoice::Auto,
            GicArg::V2 => GicChoice::V2,
            GicArg::V3 => GicChoice::V3,
        }
    }
}

/// `--transport` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// virtio-mmio.
    Mmio,
    /// virtio-pci behind a PCIe host bridge.
    Pci,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Self {
        match arg {
            TransportArg::Mmio => Transport::Mmio,
            TransportArg::Pci => Transport::Pci,
        }
    }
}

/// Splits `key=value,key=value` and checks every key is one of `known`.
fn parse_keys<'a>(text: &'a str, known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    text.split(',')
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("'{pair}' is not key=value"))?;
            if !known.contains(&key) {
                return Err(format!("unknown key '{key}' (known: {})", known.join(", ")));
            }
            Ok((key, value))
        })
        .collect()
}

/// Parses `on`/`off` (and the usual synonyms).
fn parse_switch(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{key}={value}: use on or off")),
    }
}

/// Parses a `--disk` value.
pub fn parse_disk(text: &str) -> Result<BlockConfig, String> {
    let mut disk = BlockConfig {
        path: PathBuf::new(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Sync,
    };
    for (key, value) in parse_keys(text, &["path", "readonly", "id", "io_engine"])? {
        match key {
            "path" => disk.path = PathBuf::from(value),
            "readonly" => disk.readonly = parse_switch(key, value)?,
            "io_engine" => {
                disk.io_engine = match value {
                    "sync" => IoEngine::Sync,
                    "async" => IoEngine::Async,
                    _ => return Err(format!("io_engine={value}: use sync or async")),
                }
            }
            _ => disk.id = Some(value.to_string()),
        }
    }
    if disk.path.as_os_str().is_empty() {
        return Err("a disk needs path=FILE".into());
    }
    Ok(disk)
}

/// Parses a `--net` value.
pub fn parse_net(text: &str) -> Result<NetConfig, String> {
    let mut net = NetConfig {
        tap: String::new(),
        mac: None,
    };
    for (key, value) in parse_keys(text, &["tap", "mac"])? {
        match key {
            "tap" => net.tap = value.to_string(),
            _ => net.mac = Some(parse_mac(value).ok_or(format!("'{value}' is not a MAC address"))?),
        }
    }
    if net.tap.is_empty() || net.tap.len() > 15 {
        return Err("a net device needs tap=NAME (1 to 15 characters)".into());
    }
    Ok(net)
}

/// Parses a `--vsock` value.
pub fn parse_vsock(text: &str) -> Result<VsockDevice, String> {
    let mut vsock = VsockDevice {
        id: "vsock".into(),
        guest_cid: 0,
        uds_path: PathBuf::new(),
    };
    for (key, value) in parse_keys(text, &["cid", "uds"])? {
        match key {
            "cid" => {
                vsock.guest_cid = value
                    .parse()
                    .map_err(|_| format!("cid={value}: not a number"))?
            }
            _ => vsock.uds_path = PathBuf::from(value),
        }
    }
    if vsock.guest_cid < 3 {
        return Err("a vsock device needs cid=N with N at least 3".into());
    }
    if vsock.uds_path.as_os_str().is_empty() {
        return Err("a vsock device needs uds=PATH".into());
    }
    Ok(vsock)
}

/// Parses a `--balloon` value.
pub fn parse_balloon(text: &str) -> Result<BalloonDevice, String> {
    let mut balloon = BalloonDevice::default();
    let keys = [
        "size_mib",
        "deflate_on_oom",
        "free_page_reporting",
        "stats_interval",
    ];
    let number = |key: &str, value: &str| {
        value
            .parse::<u32>()
            .map_err(|_| format!("{key}={value}: not a number"))
    };
    for (key, value) in parse_keys(text, &keys)? {
        match key {
            "size_mib" => balloon.amount_mib = number(key, value)?,
            "deflate_on_oom" => balloon.deflate_on_oom = parse_switch(key, value)?,
            "free_page_reporting" => balloon.free_page_reporting = parse_switch(key, value)?,
            _ => {
                balloon.stats_interval_s = value
                    .parse()
                    .map_err(|_| format!("{key}={value}: not a number of seconds up to 65535"))?
            }
        }
    }
    if balloon.amount_mib > crate::api::models::MAX_BALLOON_MIB {
        return Err(format!("size_mib={} is too large", balloon.amount_mib));
    }
    Ok(balloon)
}

/// Parses a log level name.
fn parse_level(text: &str) -> Result<log::LevelFilter, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not a log level (error, warn, info, debug, trace)"))
}

/// Parses `512M`, `3G`, `3GiB`, `1024` (MiB) … into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 512M or 2G)"))?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" | "M" | "m" => 20,
        "K" | "k" => 10,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => {
            return Err(format!(
                "'{text}' has an unknown size suffix (use K, M, G or T)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

impl From<ConsoleArg> for ConsoleKind {
    fn from(arg: ConsoleArg) -> Self {
        match arg {
            ConsoleArg::Serial => ConsoleKind::Serial,
            ConsoleArg::Virtio => ConsoleKind::Virtio,
        }
    }
}

impl RunArgs {
    /// The VM these flags describe. Disks are named `disk0`, `disk1`, …
    /// and interfaces `net0`, … in the order given.
    pub fn resources(&self) -> VmResources {
        let drives = self.disks.iter().enumerate().map(|(index, block)| Drive {
            id: format!("disk{index}"),
            is_root: false,
            block: block.clone(),
        });
        let nets = self
            .nets
            .iter()
            .enumerate()
            .map(|(index, net)| NetInterface {
                id: format!("net{index}"),
                net: net.clone(),
            });
        VmResources {
            vcpus: self.cpus,
            memory_size: self.memory,
            gic: self.gic.into(),
            console: self.console.into(),
            boot: Some(BootSource {
                kernel: self.kernel.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone(),
            }),
            drives: drives.collect(),
            nets: nets.collect(),
            rng: self.rng,
            vsock: self.vsock.clone(),
            balloon: self.balloon,
            virtio_cmdline: self.virtio_cmdline,
            dump_fdt: self.dump_fdt.clone(),
            debug_exit: self.debug_exit,
            legacy_pit: self.legacy_pit,
            pmu: self.pmu,
            transport: self.transport.into(),
            ..VmResources::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEFAULT_CMDLINE, DEFAULT_CMDLINE_HVC};

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512"), Ok(512 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("5X").unwrap_err().contains("suffix"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["tandem", "run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Some(Command::Run(run)) => run,
            other => panic!("`run` parsed as {other:?}"),
        })
    }

    #[test]
    fn missing_kernel_is_one_clear_error() {
        let args = run_args(&["--kernel", "/nonexistent/vmlinuz"]).unwrap();
        let err = format!("{:#}", args.resources().vm_config().unwrap_err());
        assert!(err.starts_with("kernel /nonexistent/vmlinuz"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn defaults_and_flags_reach_the_vm_config() {
        let kernel = std::env::current_exe().unwrap();
        let kernel = kernel.to_str().unwrap();
        let cfg = run_args(&["--kernel", kernel])
            .unwrap()
            .resources()
            .vm_config()
            .unwrap();
        assert_eq!((cfg.vcpus, cfg.memory_size), (1, 512 << 20));
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
        assert_eq!(cfg.gic, GicChoice::Auto);
        let cfg = run_args(&[
            "--kernel", kernel, "--cpus", "2", "--memory", "3G", "--gic", "v2",
        ])
        .unwrap()
        .resources()
        .vm_config()
        .unwrap();
        assert_eq!(
            (cfg.vcpus, cfg.memory_size, cfg.gic),
            (2, 3 << 30, GicChoice::V2)
        );
        assert!(run_args(&["--kernel", kernel, "--cpus", "0"])
            .unwrap()
            .resources()
            .vm_config()
            .is_err());
        assert!(run_args(&["--kernel", kernel, "--bogus"]).is_err());
        assert!(run_args(&["--kernel", kernel, "--cpus", "300"]).is_err());
        let cfg = run_args(&["--kernel", kernel, "--console", "virtio"]).unwrap();
        assert_eq!(
            cfg.resources().vm_config().unwrap().cmdline,
            DEFAULT_CMDLINE_HVC
        );
    }

    #[test]
    fn disk_and_net_options_parse_or_say_why_not() {
        let disk = parse_disk("path=/tmp/a.img,readonly=on,id=data").unwrap();
        assert_eq!(disk.path, PathBuf::from("/tmp/a.img"));
        assert!(disk.readonly);
        assert_eq!(disk.id.as_deref(), Some("data"));
        assert!(!parse_disk("path=/x").unwrap().readonly);
        assert_eq!(parse_disk("path=/x").unwrap().io_engine, IoEngine::Sync);
        let engine = |text| parse_disk(text).map(|disk| disk.io_engine);
        assert_eq!(engine("path=/x,io_engine=async"), Ok(IoEngine::Async));
        assert_eq!(engine("path=/x,io_engine=sync"), Ok(IoEngine::Sync));
        assert!(engine("path=/x,io_engine=uring")
            .unwrap_err()
            .contains("sync or async"));
        assert!(parse_disk("readonly=on").unwrap_err().contains("path=FILE"));
        assert!(parse_disk("path=/x,readonly=maybe")
            .unwrap_err()
            .contains("on or off"));
        assert!(parse_disk("path=/x,size=3")
            .unwrap_err()
            .contains("unknown key 'size'"));
        let net = parse_net("tap=tap0,mac=52:54:00:12:34:56").unwrap();
        assert_eq!(net.tap, "tap0");
        assert_eq!(net.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert!(parse_net("tap=tap0,mac=zz").unwrap_err().contains("MAC"));
        assert!(parse_net("mac=52:54:00:12:34:56").is_err());
        let balloon = parse_balloon("size_mib=64,deflate_on_oom=on").unwrap();
        assert_eq!((balloon.amount_mib, balloon.deflate_on_oom), (64, true));
        assert!(parse_balloon("size_mib=x")
            .unwrap_err()
            .contains("not a number"));
        assert_eq!(
            parse_balloon("size_mib=1,stats_interval=5")
                .unwrap()
                .stats_interval_s,
            5
        );
        assert!(parse_balloon("size_mib=1,stats_interval=65536").is_err());
        assert!(parse_balloon("size_mib=1,stats_interval=-1").is_err());
        assert!(parse_balloon("size_mib=1,stats_interval=0").is_ok());
        let vsock = parse_vsock("cid=3,uds=/tmp/v.sock").unwrap();
        assert_eq!((vsock.guest_cid, vsock.uds_path), (3, "/tmp/v.sock".into()));
        assert!(parse_vsock("cid=2,uds=/tmp/v.sock")
            .unwrap_err()
            .contains("at least 3"));
        assert!(parse_vsock("cid=3").unwrap_err().contains("uds=PATH"));
        assert!(parse_vsock("cid=x,uds=/v")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn no_seccomp_is_an_option_of_both_forms() {
        let kernel = std::env::current_exe().unwrap();
        let kernel = kernel.to_str().unwrap();
        assert!(!run_args(&["--kernel", kernel]).unwrap().no_seccomp);
        assert!(
            run_args(&["--kernel", kernel, "--no-seccomp"])
                .unwrap()
                .no_seccomp
        );
        let cli = Cli::try_parse_from(["tandem", "--no-seccomp", "--boot-timer"]).unwrap();
        assert!(cli.vmm.no_seccomp);
        assert_eq!(cli.vmm.ignored.given(), ["--boot-timer"]);
    }

    #[test]
    fn missing_disk_file_is_one_clear_error() {
        let kernel = std::env::current_exe().unwrap();
        let args = run_args(&[
            "--kernel",
            kernel.to_str().unwrap(),
            "--disk",
            "path=/nonexistent.img",
        ]);
        let err = format!("{:#}", args.unwrap().resources().vm_config().unwrap_err());
        assert!(err.starts_with("disk /nonexistent.img"), "{err}");
    }
}
