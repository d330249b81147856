//! The main thread: one epoll loop over everything that reaches a VM from
//! outside — host console input, stop signals, the guest ending its run,
//! API requests, the metrics timer — driving the [`Vm`] lifecycle object,
//! and the exit code the process ends with. What each API request does is
//! src/controller.rs.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use devices::{ExitReason, ExitSignal};
use log::{info, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::api::models::{FullVmConfiguration, Logger, SnapshotLoadParams};
use crate::api::{self, convert, ApiInbox, ApiResponse, ApiServer};
use crate::config::{RunArgs, VmmArgs};
use crate::console::{flush_output, ConsoleInput, InputEvent, RawTerminal};
use crate::machine::{Machine, SavedMemory};
use crate::memory::rss_report;
use crate::metrics::{MetricsSink, MetricsTimer};
use crate::metrics_line::{metrics_line, VmmCounters};
use crate::migration;
use crate::signals::StopSignals;
use crate::vm::{RestoreOptions, Vm};

const TOKEN_EXIT: u64 = 0;
const TOKEN_STDIN: u64 = 1;
const TOKEN_RX_DRAINED: u64 = 2;
const TOKEN_API: u64 = 3;
const TOKEN_METRICS: u64 = 4;
/// Stop signal `i` uses token `TOKEN_SIGNALS + i`.
const TOKEN_SIGNALS: u64 = 16;

/// Boots the VM `tandem run` describes, runs it to the end and returns the
/// process exit code.
pub fn run(args: &RunArgs) -> Result<i32> {
    // First, so that a stop requested during set-up still ends cleanly.
    let signals = StopSignals::install()?;
    seccomp_policy(args.no_seccomp)?;
    let exit = Arc::new(ExitSignal::new()?);
    let vm = Vm::new("tandem".into(), args.resources(), exit.clone());
    let mut vmm = Vmm::new(vm, exit, signals)?;
    vmm.start()?;
    vmm.serve()?;
    Ok(vmm.finish(args.stats))
}

/// Runs as `firecracker` does: binds the API socket before anything slow
/// (clients poll for it), boots at once from `--config-file` (or restores
/// `--restore-snapshot`, or receives a migration) if given, then serves
/// the API until the run ends.
pub fn run_firecracker(args: &VmmArgs) -> Result<i32> {
    let signals = StopSignals::install()?;
    seccomp_policy(args.no_seccomp)?;
    let ignored = args.ignored.given();
    if !ignored.is_empty() {
        info!(
            "ignoring Firecracker flags tandem has no use for: {}",
            ignored.join(" ")
        );
    }
    let api = match args.no_api {
        true => None,
        false => Some(
            api::start(&args.api_sock)
                .with_context(|| format!("API socket {}", args.api_sock.display()))?,
        ),
    };
    let exit = Arc::new(ExitSignal::new()?);
    let resources = match &args.config_file {
        Some(path) => config_file_resources(path)?,
        None => convert::firecracker_defaults(),
    };
    let vm = Vm::new(args.id.clone(), resources, exit.clone());
    let mut vmm = Vmm::new(vm, exit, signals)?;
    if let Some(path) = &args.log_path {
        vmm.set_logger(&Logger {
            log_path: Some(path.display().to_string()),
            level: None,
            show_level: Some(args.show_level),
            show_log_origin: Some(args.show_log_origin),
            module: None,
        })
        .map_err(anyhow::Error::msg)?;
    }
    if let Some(path) = &args.metrics_path {
        vmm.set_metrics(path).map_err(anyhow::Error::msg)?;
    }
    if let Some((server, inbox)) = api {
        vmm.watch(inbox.event_fd().as_raw_fd(), TOKEN_API)?;
        vmm.api = Some((server, inbox));
    }
    if args.config_file.is_some() {
        vmm.start()?;
    }
    if let (Some(snapshot), Some(memory)) = (&args.restore_snapshot, &args.restore_memory) {
        let options = RestoreOptions {
            resume: !args.restore_paused,
            ..RestoreOptions::default()
        };
        vmm.restore(snapshot, memory, &options)?;
    }
    if let Some(endpoint) = &args.migrate_listen {
        vmm.receive_migration(endpoint)?;
    }
    vmm.serve()?;
    Ok(vmm.finish(false))
}

/// Turns the per-thread seccomp filters on, unless `--no-seccomp`. Every
/// thread started from here on confines itself; the main thread does once
/// its VM is built.
fn seccomp_policy(off: bool) -> Result<()> {
    if off {
        crate::seccomp::disabled();
        return Ok(());
    }
    crate::seccomp::enable()
}

/// The VM a `--config-file` describes.
fn config_file_resources(path: &Path) -> Result<crate::resources::VmResources> {
    let text = std::fs::read(path).with_context(|| format!("config file {}", path.display()))?;
    let config = FullVmConfiguration::from_json(&text)
        .and_then(|config| config.validate().map(|()| config))
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    convert::from_config_file(&config)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// The main thread's state: the VM and what feeds it.
pub struct Vmm {
    /// The VM this process runs.
    pub vm: Vm,
    exit: Arc<ExitSignal>,
    signals: StopSignals,
    epoll: Epoll,
    console: Option<ConsoleInput>,
    /// stdin is out of the epoll set until the UART makes room for input.
    stdin_paused: bool,
    terminal: Option<RawTerminal>,
    api: Option<(ApiServer, ApiInbox)>,
    metrics: Option<MetricsSink>,
    metrics_timer: Option<MetricsTimer>,
    counters: VmmCounters,
}

impl Vmm {
    /// A loop watching `exit` and `signals` for `vm`.
    pub fn new(vm: Vm, exit: Arc<ExitSignal>, signals: StopSignals) -> Result<Vmm> {
        let vmm = Vmm {
            vm,
            exit,
            signals,
            epoll: Epoll::new()?,
            console: None,
            stdin_paused: false,
            terminal: None,
            api: None,
            metrics: None,
            metrics_timer: None,
            counters: VmmCounters::default(),
        };
        vmm.watch(vmm.exit.event_fd().as_raw_fd(), TOKEN_EXIT)?;
        for (index, (_, socket)) in vmm.signals.sockets.iter().enumerate() {
            vmm.watch(socket.as_raw_fd(), TOKEN_SIGNALS + index as u64)?;
        }
        Ok(vmm)
    }

    fn watch(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    }

    /// Builds and boots the VM, then connects the terminal to its console.
    pub fn start(&mut self) -> Result<()> {
        self.vm.start()?;
        self.attach_console()
    }

    /// Restores a snapshot into the VM and attaches the console, as
    /// [`Self::start`] does for a boot.
    pub fn load_snapshot(&mut self, params: &SnapshotLoadParams) -> Result<()> {
        let memory = params.memory_file().map_err(anyhow::Error::msg)?;
        let options = RestoreOptions {
            resume: params.resume_vm,
            track_dirty: params.track_dirty_pages || params.enable_diff_snapshots,
            network_overrides: params.network_overrides.clone(),
            vsock_override: params.vsock_override.clone(),
        };
        self.restore(
            Path::new(&params.snapshot_path),
            Path::new(memory),
            &options,
        )
    }

    /// Restores the VM saved in `snapshot` and `memory` (see
    /// [`Vm::restore`]) and connects the host terminal to its console.
    pub fn restore(
        &mut self,
        snapshot: &Path,
        memory: &Path,
        options: &RestoreOptions,
    ) -> Result<()> {
        self.vm.restore(snapshot, memory, options)?;
        self.attach_console()
    }

    /// Waits for a migration on `path` and runs the guest it brings, then
    /// tells the source whether that worked. API requests wait meanwhile.
    pub fn receive_migration(&mut self, endpoint: &migration::Endpoint) -> Result<()> {
        let incoming = migration::receive(endpoint)?;
        let memory = SavedMemory {
            file: &incoming.memory,
            shared: true,
        };
        let resume = RestoreOptions {
            resume: true,
            ..RestoreOptions::default()
        };
        let result = self
            .vm
            .check_restorable()
            .and_then(|()| self.vm.rebuild(&incoming.snapshot, memory, &resume))
            .and_then(|()| self.attach_console());
        let answered = incoming.answer(&result);
        result.context("migration")?;
        answered?;
        info!("migrated guest running");
        Ok(())
    }

    /// Connects the host terminal to the started VM's console.
    fn attach_console(&mut self) -> Result<()> {
        let Some(target) = self.vm.machine().and_then(Machine::take_console) else {
            return Ok(());
        };
        let console = ConsoleInput::new(target);
        if let Some(serial) = console.uart() {
            let serial = serial.lock().unwrap_or_else(|p| p.into_inner());
            self.watch(serial.rx_drained_event().as_raw_fd(), TOKEN_RX_DRAINED)?;
        }
        // stdin may be closed or not pollable (a regular file): no input then.
        if self
            .watch(std::io::stdin().as_raw_fd(), TOKEN_STDIN)
            .is_err()
        {
            info!("stdin cannot be polled: the guest console takes no input");
        }
        self.console = Some(console);
        self.terminal = Some(RawTerminal::enter());
        Ok(())
    }

    /// Serves events until a reason to stop is raised.
    pub fn serve(&mut self) -> Result<()> {
        let mut events = vec![EpollEvent::default(); 8];
        loop {
            let count = match self.epoll.wait(-1, &mut events) {
                Ok(count) => count,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("epoll_wait"),
            };
            for event in &events[..count] {
                match event.data() {
                    TOKEN_EXIT => return Ok(()),
                    TOKEN_STDIN => self.console_input(),
                    TOKEN_RX_DRAINED => self.rx_drained(),
                    TOKEN_API => self.serve_api(),
                    TOKEN_METRICS => {
                        if let Some(timer) = self.metrics_timer.as_mut() {
                            let _ = timer.consume();
                        }
                        if let Err(e) = self.flush_metrics() {
                            warn!("metrics: {e}");
                        }
                    }
                    token => {
                        let signal = self.signals.take((token - TOKEN_SIGNALS) as usize);
                        self.exit
                            .raise(ExitReason::Stopped(format!("signal {signal}")));
                    }
                }
            }
        }
    }

    /// Answers every API request waiting, in arrival order.
    fn serve_api(&mut self) {
        while let Some(pending) = self.api.as_ref().and_then(|(_, inbox)| inbox.try_recv()) {
            let response = self.handle_api(pending.request.clone());
            self.counters.api_requests += 1;
            if matches!(response, ApiResponse::Fault(_)) {
                self.counters.api_faults += 1;
            }
            pending.reply(response);
        }
    }

    /// Sends metrics lines to `path` from now on, one every 60 s.
    pub fn set_metrics(&mut self, path: &Path) -> Result<(), String> {
        if self.metrics.is_some() {
            return Err("metrics are already configured".into());
        }
        let sink =
            MetricsSink::open(path).map_err(|e| format!("metrics {}: {e}", path.display()))?;
        let mut timer = MetricsTimer::new().map_err(|e| e.to_string())?;
        timer.arm().map_err(|e| e.to_string())?;
        self.watch(timer.as_raw_fd(), TOKEN_METRICS)
            .map_err(|e| e.to_string())?;
        self.metrics = Some(sink);
        self.metrics_timer = Some(timer);
        Ok(())
    }

    /// Writes one metrics line now.
    pub fn flush_metrics(&mut self) -> Result<(), String> {
        let Some(sink) = self.metrics.as_mut() else {
            return Err("metrics are not configured: PUT /metrics first".into());
        };
        self.counters.metrics_lines_dropped = sink.dropped();
        let line = metrics_line(&mut self.vm, &self.counters);
        sink.write_line(&line).map_err(|e| format!("metrics: {e}"))
    }

    /// Applies `PUT /logger` (or the logging flags).
    pub fn set_logger(&mut self, logger: &Logger) -> Result<(), String> {
        let level = match logger.level {
            Some(_) => Some(logger.level_filter()?),
            None => None,
        };
        crate::logger::configure(crate::logger::LogOptions {
            level,
            path: logger.log_path.as_deref().map(Path::new),
            show_level: logger.show_level,
            show_origin: logger.show_log_origin,
        })
        .map_err(|e| format!("logger: {e}"))
    }

    /// Reads host input for the guest; stops watching stdin at its end,
    /// and while the UART has no room (back-pressure, nothing dropped).
    fn console_input(&mut self) {
        let Some(console) = self.console.as_mut() else {
            return;
        };
        let stdin = std::io::stdin().as_raw_fd();
        match console.read_stdin() {
            Ok(InputEvent::Queued) => {}
            Ok(InputEvent::Quit) => self
                .exit
                .raise(ExitReason::Stopped("console escape (Ctrl-A x)".into())),
            Ok(InputEvent::Closed) | Err(_) => {
                let _ = self
                    .epoll
                    .ctl(ControlOperation::Delete, stdin, EpollEvent::default());
                return;
            }
        }
        if !console.accepts_input() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, stdin, EpollEvent::default());
            self.stdin_paused = true;
        }
    }

    /// The guest emptied the UART's FIFO: pending input moves in, and stdin
    /// is watched again once there is room.
    fn rx_drained(&mut self) {
        let Some(console) = self.console.as_mut() else {
            return;
        };
        console.rx_drained();
        if self.stdin_paused && console.accepts_input() {
            self.stdin_paused = false;
            if let Err(e) = self.watch(std::io::stdin().as_raw_fd(), TOKEN_STDIN) {
                warn!("console input stops: {e}");
            }
        }
    }

    /// Stops the VM, writes out buffered guest output (waiting at most
    /// 100 ms for a stdout nobody reads), restores the terminal, prints
    /// statistics if asked, and maps the reason the run ended to the exit
    /// code.
    pub fn finish(mut self, stats: bool) -> i32 {
        let output = self.vm.machine().map(|m| m.console_output().clone());
        if stats {
            let uptime = self.vm.uptime();
            if let Some(machine) = self.vm.machine() {
                // Final counts: no vCPU runs any more.
                machine.stop();
                report_stats(machine, uptime);
            }
        }
        self.vm.stop();
        if let Some(output) = output {
            flush_output(&output);
        }
        drop(self.terminal.take());
        match self.exit.reason() {
            Some(ExitReason::PowerOff) => {
                info!("guest powered off");
                0
            }
            Some(ExitReason::Reset) => {
                info!("guest requested a reset: exiting");
                0
            }
            Some(ExitReason::Migrated) => {
                info!("the guest runs on in the migration's destination: exiting");
                0
            }
            Some(ExitReason::Stopped(why)) => {
                info!("stopped: {why}");
                self.signals.exit_code()
            }
            Some(ExitReason::Fatal(message)) => {
                log::error!("{message}");
                1
            }
            Some(reason @ ExitReason::DebugExit(value)) => {
                let status = reason.exit_status().unwrap_or(1);
                info!("guest wrote {value:#x} to the debug-exit port: exit status {status}");
                status
            }
            None => 0,
        }
    }
}

/// Prints exit and virtio notification statistics, one `tandem-stats:` line
/// each, for benchmarks to parse.
fn report_stats(machine: &Machine, elapsed: std::time::Duration) {
    let counters = machine.exit_counters();
    let total = counters.total();
    // Guest output first, as far as a host that is reading lets it.
    machine
        .console_output()
        .flush_within(crate::console::EXIT_FLUSH_LIMIT);
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "tandem-stats: seconds={:.3} exits={total} pio={} mmio={} other={} unclaimed={}",
        elapsed.as_secs_f64(),
        load(&counters.pio),
        load(&counters.mmio),
        load(&counters.other),
        load(&counters.unclaimed),
    );
    for slot in &machine.devices().virtio {
        let stats = slot.interrupt.stats().snapshot();
        eprintln!(
            "tandem-stats: device={} kicks={} interrupts={} suppressed={}",
            slot.name, stats.queue_kicks, stats.interrupts_sent, stats.interrupts_suppressed
        );
    }
    if let Ok(rss) = rss_report(machine.memory()) {
        eprintln!(
            "tandem-stats: guest_rss_kib={} vmm_rss_kib={} vmm_peak_rss_kib={}",
            rss.guest_kib,
            rss.vmm_kib,
            rss.vmm_peak_kib()
        );
    }
}
