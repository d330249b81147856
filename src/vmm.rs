//! The VM lifecycle: build the machine through the back end, run one thread
//! per vCPU, serve the console and signals on the main thread, and stop
//! everything when the guest, the host or an error ends the run.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arch::{Arch, Host};
use devices::virtio::{Block, Console, ConsoleInput as VirtioConsoleInput, Interrupt, Net, Rng};
use devices::{ExitReason, ExitSignal};
use kvm_ioctls::{Kvm, VcpuFd};
use log::{info, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::config::{ConsoleArg, RunArgs};
use crate::console::{read_stdin, ConsoleInput, InputTarget, RawTerminal};
use crate::device_manager::DeviceManager;
use crate::memory::{create_guest_memory, rss_report};
use crate::signals::StopSignals;
use crate::vcpu::{run_loop, ExitCounters, VcpuShared};

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Says so when this host's KVM is PVM, which runs only PVM-built kernels.
fn warn_if_pvm() {
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        warn!("this host's KVM is PVM (kvm_pvm): stock Linux kernels will not boot here; use a host with hardware KVM or the emulated hosts in ci/");
    }
}

/// Builds the VM described by `args`, runs it to the end and returns the
/// process exit code.
pub fn run(args: &RunArgs, started: Instant) -> Result<i32> {
    // First, so that a stop requested during set-up still ends cleanly.
    let stop_signals = StopSignals::install()?;
    let mut config = args.vm_config()?;
    warn_if_pvm();
    let kvm = Kvm::new().context("cannot open /dev/kvm (is KVM enabled and accessible?)")?;
    if kvm.get_api_version() != 12 {
        bail!(
            "/dev/kvm speaks API {}, tandem needs 12",
            kvm.get_api_version()
        );
    }
    let (mut arch, vm) = Host::create_vm(&kvm, &config)?;
    let mem = create_guest_memory(&vm, &arch.layout().ram)?;
    let exit = Arc::new(ExitSignal::new()?);
    let mut devices = DeviceManager::new(
        arch.layout(),
        &arch.platform_devices(),
        &exit,
        Box::new(std::io::stdout()),
    )?;
    let virtio_console = add_virtio_devices(args, &vm, &mem, &mut devices)?;
    if args.virtio_cmdline {
        config.cmdline.push_str(&devices.virtio_cmdline());
    }
    let mut vcpus = (0..config.vcpus)
        .map(|index| arch.create_vcpu(&vm, index))
        .collect::<arch::Result<Vec<VcpuFd>>>()?;
    arch.configure_boot(&vm, &mut vcpus, &mem, &config, &devices.info)?;
    devices.connect_irqs(&vm)?;

    register_signal_handler(kick_signal(), ignore_kick)
        .context("installing the vCPU kick handler")?;
    let shared = Arc::new(Shared {
        arch,
        buses: devices.buses.clone(),
        exit: exit.clone(),
        stop: AtomicBool::new(false),
        counters: ExitCounters::default(),
    });
    info!(
        "{} vCPU(s), {} MiB: first KVM_RUN {:.1} ms after start",
        config.vcpus,
        config.memory_size >> 20,
        started.elapsed().as_secs_f64() * 1e3
    );
    let threads = vcpus
        .into_iter()
        .enumerate()
        .map(|(index, vcpu)| spawn_vcpu(shared.clone(), index as u8, vcpu))
        .collect::<Result<Vec<_>>>()?;

    let terminal = RawTerminal::enter();
    let target = match virtio_console {
        Some(input) => Some(InputTarget::Virtio(input)),
        None => devices.serial.clone().map(InputTarget::Uart),
    };
    let console = target.map(ConsoleInput::new);
    let served = serve(&exit, console, &stop_signals);
    stop_vcpus(&shared.stop, threads);
    drop(terminal);
    let guest_run = started.elapsed();
    served?;
    if args.stats {
        report_stats(&shared.counters, &devices.virtio, &mem, guest_run);
    }
    // Guest memory lives until here, after every vCPU thread was joined.
    drop(mem);

    Ok(match exit.reason() {
        Some(ExitReason::PowerOff) => {
            info!("guest powered off");
            0
        }
        Some(ExitReason::Reset) => {
            info!("guest requested a reset: exiting");
            0
        }
        Some(ExitReason::Stopped(why)) => {
            info!("stopped: {why}");
            stop_signals.exit_code()
        }
        Some(ExitReason::Fatal(message)) => {
            log::error!("{message}");
            1
        }
        None => bail!("the VM stopped without a reason"),
    })
}

/// Creates the virtio devices `args` ask for; returns the virtio console's
/// input when the terminal is attached to it.
fn add_virtio_devices(
    args: &RunArgs,
    vm: &kvm_ioctls::VmFd,
    mem: &vm_memory::GuestMemoryMmap,
    devices: &mut DeviceManager,
) -> Result<Option<VirtioConsoleInput>> {
    for (index, disk) in args.disks.iter().enumerate() {
        let block = Block::new(disk).with_context(|| format!("disk {}", disk.path.display()))?;
        devices.add_virtio(vm, mem, format!("disk{index}"), Box::new(block))?;
    }
    for (index, net) in args.nets.iter().enumerate() {
        let device = Net::new(net).with_context(|| format!("net tap={}", net.tap))?;
        devices.add_virtio(vm, mem, format!("net{index}"), Box::new(device))?;
    }
    if args.rng {
        devices.add_virtio(vm, mem, "rng".into(), Box::new(Rng::new()?))?;
    }
    if args.console != ConsoleArg::Virtio {
        return Ok(None);
    }
    let console = Console::new(Box::new(std::io::stdout()))?;
    let input = console.input_sink();
    devices.add_virtio(vm, mem, "console".into(), Box::new(console))?;
    Ok(Some(input))
}

/// What every vCPU thread shares.
struct Shared {
    arch: Host,
    buses: crate::vcpu::Buses,
    exit: Arc<ExitSignal>,
    stop: AtomicBool,
    counters: ExitCounters,
}

fn spawn_vcpu(shared: Arc<Shared>, index: u8, mut vcpu: VcpuFd) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            let view = VcpuShared {
                buses: &shared.buses,
                exit: &shared.exit,
                stop: &shared.stop,
                counters: &shared.counters,
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_loop(&mut vcpu, index, &view, |i, e| {
                    shared.arch.handle_exit(i, e)
                });
            }));
            // A bug must end the run with an error, not leave it hanging.
            if ran.is_err() {
                let message = format!("vCPU {index} thread crashed (a tandem bug)");
                shared.exit.raise(ExitReason::Fatal(message));
            }
        })
        .context("cannot start a vCPU thread")
}

/// Asks every vCPU to stop and kicks each out of KVM_RUN until it has: a
/// kick that lands just before KVM_RUN is entered would be lost, so it is
/// repeated.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for thread in threads {
        while !thread.is_finished() {
            let _ = thread.kill(kick_signal());
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.join().is_err() {
            warn!("a vCPU thread panicked");
        }
    }
}

const TOKEN_EXIT: u64 = 0;
const TOKEN_STDIN: u64 = 1;
const TOKEN_RX_DRAINED: u64 = 2;
/// Stop signal `i` uses token `TOKEN_SIGNALS + i`.
const TOKEN_SIGNALS: u64 = 16;

/// The main thread's loop: console input, stop signals, and the exit
/// signal. Returns once a reason to stop was raised.
fn serve(
    exit: &ExitSignal,
    mut console: Option<ConsoleInput>,
    signals: &StopSignals,
) -> Result<()> {
    let epoll = Epoll::new()?;
    let add = |fd: i32, token: u64| {
        epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    };
    add(exit.event_fd().as_raw_fd(), TOKEN_EXIT)?;
    for (index, (_, socket)) in signals.sockets.iter().enumerate() {
        add(socket.as_raw_fd(), TOKEN_SIGNALS + index as u64)?;
    }
    let stdin_fd = std::io::stdin().as_raw_fd();
    if let Some(console) = &console {
        if let Some(serial) = console.uart() {
            let serial = serial.lock().unwrap_or_else(|p| p.into_inner());
            add(serial.rx_drained_event().as_raw_fd(), TOKEN_RX_DRAINED)?;
        }
        // stdin may be closed or not pollable (a regular file): no input then.
        if add(stdin_fd, TOKEN_STDIN).is_err() {
            info!("stdin cannot be polled: the guest console takes no input");
        }
    }
    let mut events = vec![EpollEvent::default(); 8];
    loop {
        let count = match epoll.wait(-1, &mut events) {
            Ok(count) => count,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        };
        for event in &events[..count] {
            match event.data() {
                TOKEN_EXIT => return Ok(()),
                TOKEN_STDIN => {
                    let Some(console) = console.as_mut() else {
                        continue;
                    };
                    let mut buf = [0u8; 256];
                    match read_stdin(&mut buf) {
                        Ok(Some(n)) => {
                            if console.push(&buf[..n]) {
                                exit.raise(ExitReason::Stopped("console escape (Ctrl-A x)".into()));
                            }
                        }
                        Ok(None) | Err(_) => {
                            let _ = epoll.ctl(
                                ControlOperation::Delete,
                                stdin_fd,
                                EpollEvent::default(),
                            );
                        }
                    }
                }
                TOKEN_RX_DRAINED => {
                    if let Some(console) = console.as_mut() {
                        console.retry();
                    }
                }
                token => {
                    let signal = signals.take((token - TOKEN_SIGNALS) as usize);
                    exit.raise(ExitReason::Stopped(format!("signal {signal}")));
                }
            }
        }
    }
}

/// Prints exit and virtio notification statistics, one `tandem-stats:` line
/// each, for benchmarks to parse.
fn report_stats(
    counters: &ExitCounters,
    virtio: &[(String, Arc<Interrupt>)],
    mem: &vm_memory::GuestMemoryMmap,
    elapsed: Duration,
) {
    let total = counters.total();
    let _ = std::io::stdout().flush();
    eprintln!(
        "tandem-stats: seconds={:.3} exits={total} pio={} mmio={} other={} unclaimed={}",
        elapsed.as_secs_f64(),
        counters.pio.load(Ordering::Relaxed),
        counters.mmio.load(Ordering::Relaxed),
        counters.other.load(Ordering::Relaxed),
        counters.unclaimed.load(Ordering::Relaxed),
    );
    for (name, interrupt) in virtio {
        let stats = interrupt.stats().snapshot();
        eprintln!(
            "tandem-stats: device={name} kicks={} interrupts={} suppressed={}",
            stats.queue_kicks, stats.interrupts_sent, stats.interrupts_suppressed
        );
    }
    if let Ok(rss) = rss_report(mem) {
        eprintln!(
            "tandem-stats: guest_rss_kib={} vmm_rss_kib={} vmm_peak_rss_kib={}",
            rss.guest_kib,
            rss.vmm_kib,
            rss.vmm_peak_kib()
        );
    }
}
