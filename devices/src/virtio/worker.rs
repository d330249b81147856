//! Device worker threads: one epoll loop per active device over its queue
//! kicks, its backend fds and a kill `EventFd`. A handler error is logged
//! and turns into NEEDS_RESET; it never reaches the VMM as a panic.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

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

/// A running worker thread; stopping (or dropping) it joins the thread.
#[derive(Debug)]
pub struct Worker {
    kill: EventFd,
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
        let kill = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let watch = |fd: RawFd, events: EventSet, token: u64| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
        };
        watch(kill.as_raw_fd(), EventSet::IN, KILL_TOKEN)?;
        for (i, kick) in kicks.iter().enumerate() {
            watch(kick.as_raw_fd(), EventSet::IN, 1 + i as u64)?;
        }
        for (i, (fd, events)) in handler.backend_fds().into_iter().enumerate() {
            watch(fd, events, 1 + (kicks.len() + i) as u64)?;
        }
        let kill_for_thread = kill.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _kill = kill_for_thread;
                let mut event_loop = EventLoop {
                    epoll,
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
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it. Returns false if it had panicked.
    pub fn stop(&mut self) -> bool {
        let Some(thread) = self.thread.take() else {
            return true;
        };
        // A full counter still wakes the loop, so a write error is moot.
        let _ = self.kill.write(1);
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
                let index = (token - 1) as usize;
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
