//! Device worker threads: one epoll loop per active device over its queue
//! kicks, its backend fds, a kill `EventFd` and a pause `EventFd`. A
//! handler error is logged and turns into NEEDS_RESET; it never reaches the
//! VMM as a panic. A paused worker sits between requests and touches
//! neither guest memory nor its queues until resumed; kicks and backend
//! readiness that arrive meanwhile wait in their fds, and every queue and
//! backend is served again on resume.
//!
//! A parked worker leaves behind where each of its queues stands
//! ([`QueuePosition`]), which is what a snapshot saves of a running device.
//!
//! Nobody waits long for a worker. Handlers check [`should_yield`] between
//! requests, so a pause or a stop waits for the request in hand only (and
//! requests are bounded: see the chain cap and each device's limits).
//! [`Worker::request_stop`] returns at once; from then on the worker
//! publishes nothing (see [`publish`]) and ends after that request.
//! Dropping a worker waits for it at most [`STOP_WAIT`], then leaves it to
//! end on its own.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, warn};
use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::Interrupt;
use crate::LogLimit;

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

/// Where a device stands on one of its queues: the next available entry it
/// will take and the next used entry it will fill. The rest of a queue
/// (size, ring addresses) is what the driver wrote to the transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePosition {
    /// The next available-ring entry the device reads.
    pub next_avail: u16,
    /// The next used-ring entry the device writes.
    pub next_used: u16,
}

impl QueuePosition {
    /// Where `queue` stands.
    pub fn of(queue: &Queue) -> Self {
        Self {
            next_avail: queue.next_avail(),
            next_used: queue.next_used(),
        }
    }
}

/// The device-specific half of a worker.
pub trait WorkerHandler: Send + 'static {
    /// Where each queue stands, in queue order, for a device that goes on
    /// from here in another process (a snapshot). Chains taken but not yet
    /// returned are given back: a restored device takes them again.
    /// Called on the worker thread between requests, as it parks.
    fn queue_positions(&self) -> Vec<QueuePosition>;

    /// Queue `index` was kicked. Also called once per queue when the worker
    /// starts, since buffers may have been queued before activation, and
    /// after a pause, since the handler may have yielded with work left.
    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError>;

    /// Extra fds to watch, with the events wanted; `backend_event` gets the
    /// position in this list.
    fn backend_fds(&self) -> Vec<(RawFd, EventSet)> {
        Vec::new()
    }

    /// Backend fd `index` of [`WorkerHandler::backend_fds`] is ready. Also
    /// called (with `EventSet::IN`) for every backend fd after a pause.
    fn backend_event(&mut self, index: usize, events: EventSet) -> Result<(), WorkerError> {
        let _ = (index, events);
        Ok(())
    }

    /// Returns whatever the handler holds back for a later batch (used
    /// entries, say) through the rings now. Called before the worker
    /// parks, so that a paused device, and the snapshot of one, owes the
    /// driver nothing.
    fn flush(&mut self) -> Result<(), WorkerError> {
        Ok(())
    }
}

/// Workers that failed (a driver that broke its rings can make one fail
/// again after every reset).
static FAILED: LogLimit = LogLimit::new();

const KILL_TOKEN: u64 = 0;
const PAUSE_TOKEN: u64 = 1;
/// The interrupt line's resample event (level-triggered INTx only).
const RESAMPLE_TOKEN: u64 = u64::MAX;
/// Queue `i` uses token `FIRST_QUEUE_TOKEN + i`; backend fds follow.
const FIRST_QUEUE_TOKEN: u64 = 2;

/// How long [`Worker::pause`] waits for the thread to finish the request
/// it is serving before giving up.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Worker::stop`] (and dropping a worker) waits for the thread
/// to end before leaving it to end on its own.
pub const STOP_WAIT: Duration = Duration::from_millis(500);

/// What a worker thread and its owner share.
#[derive(Debug, Default)]
struct Control {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Lock-free copies of "pause requested" and "stop requested", read
    /// between requests.
    pausing: AtomicBool,
    stopping: AtomicBool,
    /// Held around every [`publish`], and by [`Worker::request_stop`]
    /// while it sets `stopping`.
    publishing: Mutex<()>,
}

#[derive(Debug, Default)]
struct GateState {
    /// The VMM wants the worker parked.
    requested: bool,
    /// The worker is parked.
    parked: bool,
    /// The thread has ended (or is about to: it touches nothing more).
    finished: bool,
    /// Where the queues stood when the worker last parked.
    positions: Vec<QueuePosition>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Worker side: parks, leaving where its queues stand, until the VMM
    /// resumes (or stops) the worker.
    fn park(&self, positions: Vec<QueuePosition>) {
        let mut state = self.lock();
        state.positions = positions;
        state.parked = true;
        self.changed.notify_all();
        while state.requested {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.parked = false;
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it held.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&GateState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Marks the thread finished when it ends, panicking or not.
struct FinishOnDrop(Arc<Control>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.lock().finished = true;
        self.0.changed.notify_all();
    }
}

thread_local! {
    /// The control block of the worker running on this thread, if any.
    static CONTROL: RefCell<Option<Arc<Control>>> = const { RefCell::new(None) };
}

thread_local! {
    /// Set by a handler that stopped early with work left on its queue.
    static COME_BACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Asks the worker running on this thread to serve the queue whose event
/// is being handled again, after the other events that are ready: for a
/// handler that stops at a fairness budget with work left. Does nothing
/// off a worker thread.
pub fn come_back_later() {
    COME_BACK.set(true);
}

/// Whether the handler that just ran asked to be called again.
fn wants_to_come_back() -> bool {
    COME_BACK.replace(false)
}

fn current_control() -> Option<Arc<Control>> {
    CONTROL.with_borrow(Clone::clone)
}

/// Whether the worker running on this thread was asked to pause or stop:
/// handlers check it between requests and return to the event loop, so
/// neither waits for more than the request in hand. Always false off a
/// worker thread (in unit tests, say).
pub fn should_yield() -> bool {
    CONTROL.with_borrow(|control| {
        control.as_ref().is_some_and(|c| {
            c.pausing.load(Ordering::Acquire) || c.stopping.load(Ordering::Acquire)
        })
    })
}

/// Runs `write` — an update of a used ring, of a notification hint, or an
/// interrupt — unless the worker running on this thread was told to stop;
/// `None` then. A stop request waits for a `write` in progress, so once
/// [`Worker::request_stop`] has returned, the worker writes nothing more
/// into the rings of a device that may already be reset and set up anew.
/// Off a worker thread `write` always runs.
pub fn publish<T>(write: impl FnOnce() -> T) -> Option<T> {
    let Some(control) = current_control() else {
        return Some(write());
    };
    let _publishing = control.publishing.lock().unwrap_or_else(|p| p.into_inner());
    (!control.stopping.load(Ordering::Acquire)).then(write)
}

/// How a new worker begins.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Start {
    /// Serving its queues at once (a driver set DRIVER_OK).
    #[default]
    Serving,
    /// Parked until [`Worker::resume`], before touching guest memory: a
    /// device restored from a snapshot waits for its VM's resume.
    Parked,
}

/// A running worker thread.
#[derive(Debug)]
pub struct Worker {
    kill: EventFd,
    pause: EventFd,
    control: Arc<Control>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts `handler` on a thread named `name`, woken by `kicks` (one per
    /// queue, in queue order) and the handler's backend fds.
    pub fn spawn<H: WorkerHandler>(
        name: &str,
        start: Start,
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
        if let Some(resample) = interrupt.resample_fd() {
            watch(resample.as_raw_fd(), EventSet::IN, RESAMPLE_TOKEN)?;
        }
        for (i, kick) in kicks.iter().enumerate() {
            watch(kick.as_raw_fd(), EventSet::IN, FIRST_QUEUE_TOKEN + i as u64)?;
        }
        let backends = handler.backend_fds().len();
        for (i, (fd, events)) in handler.backend_fds().into_iter().enumerate() {
            watch(fd, events, FIRST_QUEUE_TOKEN + (kicks.len() + i) as u64)?;
        }
        let control = Arc::new(Control::default());
        if start == Start::Parked {
            control.lock().requested = true;
            control.pausing.store(true, Ordering::Release);
        }
        let kill_for_thread = kill.try_clone()?;
        let pause_for_thread = pause.try_clone()?;
        let control_for_thread = control.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                crate::thread_hook::thread_started(&thread_name());
                let _kill = kill_for_thread;
                let _finish = FinishOnDrop(control_for_thread.clone());
                CONTROL.set(Some(control_for_thread.clone()));
                let mut event_loop = EventLoop {
                    epoll,
                    pause: pause_for_thread,
                    control: control_for_thread,
                    kicks,
                    backends,
                    interrupt,
                    handler,
                };
                if let Err(e) = event_loop.run() {
                    // A stopped worker's failure is nobody's business.
                    publish(|| {
                        FAILED.error(format_args!("virtio worker {}: {e}", thread_name()));
                        event_loop.interrupt.set_needs_reset();
                    });
                }
            })?;
        Ok(Self {
            kill,
            pause,
            control,
            thread: Some(thread),
        })
    }

    /// Fuzzing builds (feature `fuzzing`) only: no thread. The handler's
    /// start-up pass (every queue once, in order) runs on the caller's
    /// thread, and an error sets NEEDS_RESET as the thread would; later
    /// kicks are not served. Deterministic, so a fuzz target can drive a
    /// device through the transport alone.
    ///
    /// The worker it returns has already ended: it pauses at once, a stop
    /// has nothing to wait for, and once a reset retires it
    /// ([`super::device::RetiredWorker`]) the device can be activated again
    /// without waiting.
    fn serve_inline<H: WorkerHandler>(
        queues: usize,
        interrupt: &Interrupt,
        mut handler: H,
    ) -> io::Result<Self> {
        let served = (0..queues)
            .try_for_each(|index| handler.queue_event(index))
            .and_then(|()| handler.flush());
        // Inline there is no later: a budget stop just ends the pass.
        wants_to_come_back();
        if let Err(e) = served {
            debug!("virtio worker (inline): {e}");
            interrupt.set_needs_reset();
        }
        let control = Arc::new(Control::default());
        control.lock().finished = true;
        Ok(Self {
            kill: EventFd::new(EFD_NONBLOCK)?,
            pause: EventFd::new(EFD_NONBLOCK)?,
            control,
            thread: None,
        })
    }

    /// Parks the thread between requests. Returns once it has stopped
    /// touching guest memory, or false if it did not within
    /// [`PAUSE_TIMEOUT`] (it then parks as soon as its current request is
    /// done). A thread that has ended counts as parked.
    pub fn pause(&self) -> bool {
        {
            let mut state = self.control.lock();
            state.requested = true;
            self.control.pausing.store(true, Ordering::Release);
        }
        // A full counter still wakes the loop, so a write error is moot.
        let _ = self.pause.write(1);
        self.control
            .wait_for(PAUSE_TIMEOUT, |state| state.parked || state.finished)
    }

    /// Where each queue stood when the thread parked (see
    /// [`WorkerHandler::queue_positions`]); `None` unless it is parked now
    /// (a thread that has ended, say after failing, left none).
    pub fn parked_positions(&self) -> Option<Vec<QueuePosition>> {
        let state = self.control.lock();
        (state.parked && !state.finished).then(|| state.positions.clone())
    }

    /// Whether a pause is in force ([`Worker::pause`] without a
    /// [`Worker::resume`] since).
    pub fn pause_requested(&self) -> bool {
        self.control.lock().requested
    }

    /// Lets a paused thread go on serving events.
    pub fn resume(&self) {
        let mut state = self.control.lock();
        state.requested = false;
        self.control.pausing.store(false, Ordering::Release);
        self.control.changed.notify_all();
    }

    /// Tells the thread to stop, without waiting for it to end: it finishes
    /// at most the request in hand, and from the moment this returns it
    /// publishes nothing more (no used-ring update, no interrupt).
    pub fn request_stop(&self) {
        {
            let _publishing = self
                .control
                .publishing
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.control.stopping.store(true, Ordering::Release);
        }
        // A full counter still wakes the loop, so a write error is moot.
        let _ = self.kill.write(1);
        // A paused thread must wake up to see the stop.
        self.resume();
    }

    /// Waits up to `timeout` for the thread to end, and joins it if it
    /// did: `Some(false)` if it had panicked, `None` if it still runs.
    pub fn wait_ended(&mut self, timeout: Duration) -> Option<bool> {
        let Some(thread) = self.thread.take() else {
            // Joined already, or never a thread (feature `fuzzing`): ended
            // unless a stop gave up on it and left it running.
            return self.control.lock().finished.then_some(true);
        };
        if !self.control.wait_for(timeout, |state| state.finished) {
            self.thread = Some(thread);
            return None;
        }
        Some(thread.join().is_ok())
    }

    /// Stops the thread and waits up to [`STOP_WAIT`] for it. Returns true
    /// if it ended without panicking.
    pub fn stop(&mut self) -> bool {
        if self.thread.is_none() {
            return true;
        }
        self.request_stop();
        match self.wait_ended(STOP_WAIT) {
            Some(clean) => clean,
            None => {
                warn!(
                    "virtio worker still busy {} ms after a stop: left to end on its own",
                    STOP_WAIT.as_millis()
                );
                // Dropping the handle detaches the thread; it holds its own
                // references to guest memory and ends after its request.
                self.thread = None;
                false
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `deadline` for `workers`, each already told to stop
/// ([`Worker::request_stop`]), to end, and leaves those still busy then to
/// end on their own; returns how many were left. One deadline for all, so
/// stopping a VM with several busy devices waits [`STOP_WAIT`] once, not
/// once per device (dropping them one by one would).
pub fn finish_all(workers: Vec<Worker>, deadline: Instant) -> usize {
    let mut left = 0;
    for mut worker in workers {
        let time = deadline.saturating_duration_since(Instant::now());
        match worker.wait_ended(time) {
            Some(true) => {}
            Some(false) => warn!("a stopped virtio worker had panicked"),
            None => {
                // Detached: it holds its own references to guest memory
                // and ends after its request.
                worker.thread = None;
                left += 1;
            }
        }
    }
    if left > 0 {
        warn!(
            "{left} virtio worker(s) still busy {} ms after a stop: left to end on their own",
            STOP_WAIT.as_millis()
        );
    }
    left
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

struct EventLoop<H> {
    epoll: Epoll,
    pause: EventFd,
    control: Arc<Control>,
    kicks: Vec<EventFd>,
    backends: usize,
    interrupt: Arc<Interrupt>,
    handler: H,
}

impl<H: WorkerHandler> EventLoop<H> {
    fn stopping(&self) -> bool {
        self.control.stopping.load(Ordering::Acquire)
    }

    /// Runs until stopped (Ok) or until the device breaks (Err).
    fn run(&mut self) -> Result<(), WorkerError> {
        if self.control.pausing.load(Ordering::Acquire) {
            // Started parked (`Start::Parked`).
            self.control.park(self.handler.queue_positions());
        }
        if self.stopping() {
            return Ok(());
        }
        for index in 0..self.kicks.len() {
            self.serve_queue(index)?;
        }
        let mut events = vec![EpollEvent::default(); 8 + self.kicks.len()];
        while !self.stopping() {
            let ready = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WorkerError::Backend(e)),
            };
            for event in &events[..ready] {
                let token = event.data();
                if token == KILL_TOKEN || self.stopping() {
                    break;
                }
                if token == PAUSE_TOKEN {
                    // WouldBlock: a pause already served by an earlier wake.
                    let _ = self.pause.read();
                    self.handler.flush()?;
                    self.control.park(self.handler.queue_positions());
                    if !self.stopping() {
                        self.serve_everything()?;
                    }
                    // Events of this batch may be stale after a long pause:
                    // poll again rather than serve them.
                    break;
                }
                if token == RESAMPLE_TOKEN {
                    self.interrupt.resampled();
                    continue;
                }
                let index = (token - FIRST_QUEUE_TOKEN) as usize;
                if let Some(kick) = self.kicks.get(index) {
                    // WouldBlock: a spurious wakeup, the kick was consumed.
                    if let Ok(count) = kick.read() {
                        let stats = self.interrupt.stats();
                        stats.queue_kicks.fetch_add(count, Ordering::Relaxed);
                    }
                    self.serve_queue(index)?;
                } else {
                    let backend = index - self.kicks.len();
                    self.handler.backend_event(backend, event.event_set())?;
                }
            }
        }
        debug!("virtio worker {} stopping", thread_name());
        Ok(())
    }

    /// Serves queue `index`; a handler that stopped at its budget gets a
    /// kick of its own, served after the events already waiting. (It is
    /// counted as a kick in the statistics.)
    fn serve_queue(&mut self, index: usize) -> Result<(), WorkerError> {
        self.handler.queue_event(index)?;
        if wants_to_come_back() {
            // A full counter still wakes the loop, so a write error is moot.
            let _ = self.kicks[index].write(1);
        }
        Ok(())
    }

    /// After a pause: handlers may have yielded with work left, and an
    /// edge-triggered backend will not say so again.
    fn serve_everything(&mut self) -> Result<(), WorkerError> {
        for index in 0..self.kicks.len() {
            self.serve_queue(index)?;
        }
        for index in 0..self.backends {
            self.handler.backend_event(index, EventSet::IN)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
