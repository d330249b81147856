//! Worker thread tests: kicks, pause and resume, handler failures, and
//! stops that end a busy or stuck worker in bounded time.

use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use super::*;
use crate::test_log::{assert_few, Capture};
use crate::IrqTrigger;

/// Reports each queue event; fails on queue 1.
struct Probe(Sender<usize>);

impl WorkerHandler for Probe {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        Vec::new()
    }

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
    let worker = Worker::spawn(
        "test-worker",
        Start::Serving,
        clones,
        interrupt.clone(),
        Probe(tx),
    )
    .unwrap();
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
    // Every queue is served again on resume, then the kick that waited.
    assert_eq!(events.recv_timeout(wait), Ok(0), "served on resume");
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
    // The handler reports queue 1 before it fails: a stop right away
    // could come before the failure is published.
    assert!(eventually(|| interrupt.needs_reset()));
    assert!(worker.stop(), "the thread ended without panicking");
    assert_ne!(interrupt.status() & crate::virtio::INT_CONFIG_CHANGE, 0);
}

#[test]
fn handler_errors_on_worker_after_worker_leave_few_lines() {
    let log = Capture::start();
    for _ in 0..1000 {
        let (mut worker, _kicks, interrupt, _events) = spawn(2);
        assert!(eventually(|| interrupt.needs_reset()), "queue 1 failed");
        worker.stop();
    }
    assert_few(
        &log.warnings_containing("queue 1 is broken"),
        "worker errors",
    );
}

/// Whether `condition` holds within 5 s.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(50));
    }
    condition()
}

/// Serves a queue whose every chain takes 100 ms, reporting each head.
struct Slow {
    queue: virtio_queue::Queue,
    mem: guest_memory::GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    served: Sender<u16>,
}

impl WorkerHandler for Slow {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        vec![QueuePosition::of(&self.queue)]
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        let served = &self.served;
        crate::virtio::drain_queue(
            index,
            &mut self.queue,
            &self.mem,
            &self.interrupt,
            |chain| {
                let _ = served.send(chain.head);
                std::thread::sleep(Duration::from_millis(100));
                1
            },
        )
        .map_err(|source| WorkerError::Queue { index, source })
    }
}

/// A [`Slow`] worker started on a ring of 16 queued chains; the receiver
/// gets each head it serves.
fn slow_worker() -> (
    Worker,
    crate::virtio::testing::TestRing,
    std::sync::mpsc::Receiver<u16>,
) {
    use crate::virtio::testing::{test_memory, TestRing};
    let mem = test_memory();
    let mut ring = TestRing::new(&mem, 0, 16);
    for _ in 0..16 {
        ring.add_chain(&[(0x8000, 0x10, true)]);
    }
    let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().unwrap()));
    let (tx, served) = channel();
    let handler = Slow {
        queue: ring.queue(false),
        mem,
        interrupt: interrupt.clone(),
        served: tx,
    };
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let worker = Worker::spawn("slow", Start::Serving, vec![kick], interrupt, handler).unwrap();
    (worker, ring, served)
}

#[test]
fn a_stop_ends_a_busy_worker_after_the_request_in_hand() {
    let (worker, ring, served) = slow_worker();
    assert_eq!(served.recv_timeout(Duration::from_secs(5)), Ok(0));
    let started = std::time::Instant::now();
    drop(worker);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(500), "stop took {took:?}");
    assert!(served.try_iter().count() <= 1, "kept serving");
    assert!(ring.used().is_empty(), "published after the stop");
}

#[test]
fn a_parked_worker_tells_where_its_queue_stands() {
    let (worker, ring, served) = slow_worker();
    assert_eq!(worker.parked_positions(), None, "running, not parked");
    assert_eq!(served.recv_timeout(Duration::from_secs(5)), Ok(0));
    assert!(worker.pause());
    let done = ring.used().len() as u16;
    assert!(
        (1..16).contains(&done),
        "{done} chains served before the pause"
    );
    let position = QueuePosition {
        next_avail: done,
        next_used: done,
    };
    assert_eq!(worker.parked_positions(), Some(vec![position]));
    worker.resume();
    assert!(
        eventually(|| ring.used().len() == 16),
        "went on after resume"
    );
    assert_eq!(worker.parked_positions(), None, "running again");
}

/// Counts queue events as served but publishes them only on flush, as
/// virtio-net's transmit batches do; its position is what it published.
struct Batching {
    held: u16,
    published: u16,
    served: Sender<usize>,
}

impl WorkerHandler for Batching {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        let published = self.published;
        vec![QueuePosition {
            next_avail: published + self.held,
            next_used: published,
        }]
    }

    fn queue_event(&mut self, index: usize) -> Result<(), WorkerError> {
        self.held += 1;
        let _ = self.served.send(index);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WorkerError> {
        self.published += std::mem::take(&mut self.held);
        Ok(())
    }
}

#[test]
fn a_worker_flushes_its_handler_before_it_parks() {
    let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().unwrap()));
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let (served, events) = channel();
    let handler = Batching {
        held: 0,
        published: 0,
        served,
    };
    let kicks = vec![kick.try_clone().unwrap()];
    let worker = Worker::spawn("batching", Start::Serving, kicks, interrupt, handler).unwrap();
    let wait = Duration::from_secs(5);
    assert_eq!(events.recv_timeout(wait), Ok(0), "initial pass");
    kick.write(1).unwrap();
    assert_eq!(events.recv_timeout(wait), Ok(0), "the kick");
    assert!(worker.pause());
    let position = QueuePosition {
        next_avail: 2,
        next_used: 2,
    };
    assert_eq!(
        worker.parked_positions(),
        Some(vec![position]),
        "the start-up pass and the kick, both published before parking"
    );
}

/// Blocks in its first queue event for 10 s.
struct Stuck;

impl WorkerHandler for Stuck {
    fn queue_positions(&self) -> Vec<QueuePosition> {
        Vec::new()
    }

    fn queue_event(&mut self, _index: usize) -> Result<(), WorkerError> {
        std::thread::sleep(Duration::from_secs(10));
        Ok(())
    }
}

#[test]
fn dropping_a_stuck_worker_gives_up_in_bounded_time() {
    let interrupt = Arc::new(Interrupt::new(IrqTrigger::new().unwrap()));
    let kick = EventFd::new(EFD_NONBLOCK).unwrap();
    let worker = Worker::spawn("stuck", Start::Serving, vec![kick], interrupt, Stuck).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    drop(worker);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "drop took {took:?}");
}

/// The thread-less worker of fuzzing builds (feature `fuzzing`): its one
/// pass serves every queue, a failure sets NEEDS_RESET, and as a worker
/// that has already ended it pauses, stops and retires without waiting.
#[test]
fn an_inline_worker_serves_once_and_has_already_ended() {
    let interrupt = Interrupt::new(IrqTrigger::new().unwrap());
    let (tx, events) = channel();
    let mut worker = Worker::serve_inline(2, &interrupt, Probe(tx)).unwrap();
    assert_eq!(events.try_iter().collect::<Vec<_>>(), vec![0, 1]);
    assert!(interrupt.needs_reset(), "queue 1 failed");
    assert!(worker.pause(), "an ended worker counts as parked");
    worker.resume();
    worker.request_stop();
    assert_eq!(worker.wait_ended(Duration::ZERO), Some(true));
    let mut retired = crate::virtio::device::RetiredWorker::default();
    retired.retire(worker);
    assert!(retired.pause());
    retired.resume();
    assert!(retired.wait_ended(Duration::ZERO));
    let (tx, _events) = channel();
    let mut worker = Worker::serve_inline(1, &interrupt, Probe(tx)).unwrap();
    assert!(worker.stop());
}
