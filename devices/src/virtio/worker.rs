//! Device worker threads: one epoll loop per active device over its queue
//! kicks, its backend fds, a kill `EventFd` and a pause `EventFd`. A
//! handler error is logged and turns into NEEDS_RESET; it never reaches the
//! VMM as a panic. A paused worker sits between events and touches neither
//! guest memory nor its queues until resumed; kicks and backend readiness
//! that arrive meanwhile wait in their fds and are served on resume.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, error};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::Interrupt;

/// A failure that leaves the device unusable until the driver resets it.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The driver corrupted a queue (ring outside memory, bad index, …).
    #[error("virtqueue {index}: {source}")]
    Queue {
        /// Queue index.
        index: usize,
        /// What went wrong.
        #[source]
        source: virtio_queue::Error,
    },
    /// The host side of the device failed.
    #[error("backend: {0}")]
    Backend(#[source] io::Error),
}

/// The device-specific half of a worker.
pub trait WorkerHandler: Send + 'static {
    /// Queue `index` was kicked. Also called once per queue when the worker
    /// starts, since buffers may have been queued before activation.
    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError>;

    /// Extra fds to watch, with the events wanted; `backend_event` gets the
    /// position in this list.
    fn backend_fds(&self) -> Vec<(RawFd, EventSet)> {
        Vec::new()
    }

    /// Backend fd `index` of [`WorkerHandler::backend_fds`] is ready.
    fn backend_event(&mut self, index: usize, events: EventSet) -> Result<(), WorkerError> {
        let _ = (index, events);
        Ok(())
    }
}

const KILL_TOKEN: u64 = 0;
const PAUSE_TOKEN: u64 = 1;
/// Queue `i` uses token `FIRST_QUEUE_TOKEN + i`; backend fds follow.
const FIRST_QUEUE_TOKEN: u64 = 2;

/// How long [`Worker::pause`] waits for the thread to finish the event it
/// is serving before giving up.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The pause handshake between the VMM and a worker thread.
#[derive(Debug, Default)]
struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// The VMM wants the worker parked.
    requested: bool,
    /// The worker is parked.
    parked: bool,
}

impl PauseGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Worker side: parks until the VMM resumes (or kills) the worker.
    fn park(&self) {
        let mut state = self.lock();
        state.parked = true;
        self.changed.notify_all();
        while state.requested {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.parked = false;
    }
}

/// A running worker thread; stopping (or dropping) it joins the thread.
#[derive(Debug)]
pub struct Worker {
    kill: EventFd,
    pause: EventFd,
    gate: Arc<PauseGate>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `handler` on a thread named `name`, woken by `kicks` (one per
    /// queue, in queue order) and the handler's backend fds.
    pub fn spawn<H: WorkerHandler>(
        name: &str,
        kicks: Vec<EventFd>,
        interrupt: Arc<Interrupt>,
        handler: H,
    ) -> io::Result<Self> {
        if cfg!(feature = "fuzzing") {
            return Self::serve_inline(kicks.len(), &interrupt, handler);
        }
        let kill = EventFd::new(EFD_NONBLOCK)?;
        let pause = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let watch = |fd: RawFd, events: EventSet, token: u64| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        };
        watch(kill.as_raw_fd(), EventSet::IN, KILL_TOKEN)?;
        watch(pause.as_raw_fd(), EventSet::IN, PAUSE_TOKEN)?;
        for (i, kick) in kicks.iter().enumerate() {
            watch(kick.as_raw_fd(), EventSet::IN, FIRST_QUEUE_TOKEN + i as u64)?;
        }
        for (i, (fd, events)) in handler.backend_fds().into_iter().enumerate() {
            watch(fd, events, FIRST_QUEUE_TOKEN + (kicks.len() + i) as u64)?;
        }
        let gate = Arc::new(PauseGate::default());
        let kill_for_thread = kill.try_clone()?;
        let pause_for_thread = pause.try_clone()?;
        let gate_for_thread = gate.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _kill = kill_for_thread;
                let mut event_loop = EventLoop {
                    epoll,
                    pause: pause_for_thread,
                    gate: gate_for_thread,
                    kicks,
                    interrupt,
                    handler,
                };
                if let Err(e) = event_loop.run() {
                    error!("virtio worker {}: {e}", thread_name());
                    event_loop.interrupt.set_needs_reset();
                }
            })?;
        Ok(Self {
            kill,
            pause,
            gate,
            thread: Some(thread),
        })
    }

    /// Fuzzing builds (feature `fuzzing`) only: no thread. The handler's
    /// start-up pass (every queue once, in order) runs on the caller's
    /// thread, and an error sets NEEDS_RESET as the thread would; later
    /// kicks are not served. Deterministic, so a fuzz target can drive a
    /// device through the transport alone.
    fn serve_inline<H: WorkerHandler>(
        queues: usize,
        interrupt: &Interrupt,
        mut handler: H,
    ) -> io::Result<Self> {
        if let Err(e) = (0..queues).try_for_each(|index| handler.queue_event(index)) {
            debug!("virtio worker (inline): {e}");
            interrupt.set_needs_reset();
        }
        Ok(Self {
            kill: EventFd::new(EFD_NONBLOCK)?,
            pause: EventFd::new(EFD_NONBLOCK)?,
            gate: Arc::default(),
            thread: None,
        })
    }

    /// Parks the thread between events. Returns once it has stopped
    /// touching guest memory, or false if it did not within
    /// [`PAUSE_TIMEOUT`] (it then parks as soon as its current event is
    /// done) or had already ended.
    pub fn pause(&self) -> bool {
        let Some(thread) = &self.thread else {
            return true;
        };
        let mut state = self.gate.lock();
        state.requested = true;
        // A full counter still wakes the loop, so a write error is moot.
        let _ = self.pause.write(1);
        let deadline = std::time::Instant::now() + PAUSE_TIMEOUT;
        while !state.parked {
            if thread.is_finished() {
                // Ended (device failure): nothing left to touch memory.
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            // Short waits, so a thread that ends instead of parking is seen.
            let wait = left.min(Duration::from_millis(50));
            state = self
                .gate
                .changed
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Lets a paused thread go on serving events.
    pub fn resume(&self) {
        let mut state = self.gate.lock();
        state.requested = false;
        self.gate.changed.notify_all();
    }

    /// Stops the thread and waits for it. Returns false if it had panicked.
    pub fn stop(&mut self) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        // A full counter still wakes the loop, so a write error is moot.
        let _ = self.kill.write(1);
        // A paused thread must wake up to see the kill.
        self.resume();
        thread.join().is_ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

struct EventLoop<H> {
    epoll: Epoll,
    pause: EventFd,
    gate: Arc<PauseGate>,
    kicks: Vec<EventFd>,
    interrupt: Arc<Interrupt>,
    handler: H,
}

impl<H: WorkerHandler> EventLoop<H> {
    /// Runs until killed (Ok) or until the device breaks (Err).
    fn run(&mut self) -> Result<(), WorkerError> {
        for index in 0..self.kicks.len() {
            self.handler.queue_event(index)?;
        }
        let mut events = vec![EpollEvent::default(); 8 + self.kicks.len()];
        loop {
            let ready = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WorkerError::Backend(e)),
            };
            for event in &events[..ready] {
                let token = event.data();
                if token == KILL_TOKEN {
                    debug!("virtio worker {} stopping", thread_name());
                    return Ok(());
                }
                if token == PAUSE_TOKEN {
                    // WouldBlock: a pause already served by an earlier wake.
                    let _ = self.pause.read();
                    self.gate.park();
                    // Events of this batch may be stale after a long pause:
                    // poll again rather than serve them.
                    break;
                }
                let index = (token - FIRST_QUEUE_TOKEN) as usize;
                if let Some(kick) = self.kicks.get(index) {
                    // WouldBlock: a spurious wakeup, the kick was consumed.
                    if let Ok(count) = kick.read() {
                        let stats = self.interrupt.stats();
                        stats.queue_kicks.fetch_add(count, Ordering::Relaxed);
                    }
                    self.handler.queue_event(index)?;
                } else {
                    let backend = index - self.kicks.len();
                    self.handler.backend_event(backend, event.event_set())?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Sender};
    use std::time::Duration;

    use super::*;
    use crate::IrqTrigger;

    /// Reports each queue event; fails on queue 1.
    struct Probe(Sender<usize>);

    impl WorkerHandler for Probe {
        fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
            let _ = self.0.send(index);
            if index == 1 {
                let e = io::Error::other("queue 1 is broken");
                return Err(WorkerError::Backend(e));
            }
            Ok(())
        }
    }

    fn spawn(
        queues: usize,
    ) -> (
        Worker,
        Vec<EventFd>,
        Arc<Interrupt>,
        std::sync::mpsc::Receiver<usize>,
    ) {
        let kicks: Vec<EventFd> = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let clones = kicks.iter().map(|k| k.try_clone().unwrap()).collect();
        let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().unwrap()));
        let (tx, rx) = channel();
        let worker = Worker::spawn("test-worker", clones, interrupt.clone(), Probe(tx)).unwrap();
        (worker, kicks, interrupt, rx)
    }

    #[test]
    fn kicks_reach_the_handler_and_stop_joins() {
        let (mut worker, kicks, interrupt, events) = spawn(1);
        let wait = Duration::from_secs(5);
        assert_eq!(events.recv_timeout(wait), Ok(0), "initial pass");
        kicks[0].write(3).unwrap();
        assert_eq!(events.recv_timeout(wait), Ok(0));
        assert!(worker.stop());
        assert_eq!(interrupt.stats().snapshot().queue_kicks, 3);
        assert!(!interrupt.needs_reset());
    }

    #[test]
    fn a_paused_worker_serves_no_kick_until_resumed() {
        let (mut worker, kicks, interrupt, events) = spawn(1);
        let wait = Duration::from_secs(5);
        assert_eq!(events.recv_timeout(wait), Ok(0), "initial pass");
        assert!(worker.pause());
        kicks[0].write(1).unwrap();
        assert!(
            events.recv_timeout(Duration::from_millis(200)).is_err(),
            "a paused worker served a kick"
        );
        worker.resume();
        assert_eq!(events.recv_timeout(wait), Ok(0), "the kick waited");
        assert_eq!(interrupt.stats().snapshot().queue_kicks, 1);
        // Pausing twice and stopping while paused both end cleanly.
        assert!(worker.pause());
        assert!(worker.pause());
        assert!(worker.stop());
    }

    #[test]
    fn a_handler_error_sets_needs_reset() {
        let (mut worker, _kicks, interrupt, events) = spawn(2);
        let wait = Duration::from_secs(5);
        assert_eq!(events.recv_timeout(wait), Ok(0));
        assert_eq!(events.recv_timeout(wait), Ok(1));
        assert!(worker.stop(), "the thread ended without panicking");
        assert!(interrupt.needs_reset());
        assert_ne!(interrupt.status() & crate::virtio::INT_CONFIG_CHANGE, 0);
    }
}
