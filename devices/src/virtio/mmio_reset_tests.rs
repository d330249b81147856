//! Reset of a device whose worker is busy: the vCPU writing Status = 0
//! must not wait for the request in flight, and the device starts again
//! only once that request is done.

use super::*;

/// A door the busy device's worker waits at (for at most 3 s).
#[derive(Default)]
struct Door {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Door {
    fn wait(&self) {
        let open = self.open.lock().unwrap();
        let limit = std::time::Duration::from_secs(3);
        drop(self.opened.wait_timeout_while(open, limit, |open| !*open));
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A device whose worker, once started, is busy until the door opens:
/// a request that takes long.
struct BusyDevice {
    door: Arc<Door>,
    started: std::sync::mpsc::Sender<()>,
    worker: Option<Worker>,
}

struct BusyHandler {
    door: Arc<Door>,
    started: std::sync::mpsc::Sender<()>,
}

impl crate::virtio::worker::WorkerHandler for BusyHandler {
    fn queue_positions(&self) -> Vec<crate::virtio::worker::QueuePosition> {
        Vec::new()
    }

    fn queue_event(&mut self, _index: usize) -> Result<(), crate::virtio::worker::WorkerError> {
        let _ = self.started.send(());
        self.door.wait();
        Ok(())
    }
}

impl VirtioDevice for BusyDevice {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn features(&self) -> u64 {
        OFFERED
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let handler = BusyHandler {
            door: self.door.clone(),
            started: self.started.clone(),
        };
        let kicks = ctx.queues.into_iter().map(|q| q.kick).collect();
        let worker = Worker::spawn("busy", ctx.start, kicks, ctx.interrupt, handler);
        self.worker = Some(worker.map_err(ActivateError::Worker)?);
        Ok(())
    }
    fn worker(&mut self) -> &mut Option<Worker> {
        &mut self.worker
    }
}

impl Fixture {
    /// Negotiates, sets up the one queue and writes DRIVER_OK; returns the
    /// status read back.
    fn start_busy(&mut self) -> u32 {
        self.negotiate(feature(VIRTIO_F_VERSION_1));
        self.setup_queue(0, 16, 0x1000);
        self.write(VIRTIO_MMIO_STATUS, DRIVER_OK);
        self.status()
    }
}

#[test]
fn reset_returns_at_once_while_the_worker_is_busy() {
    let door = Arc::new(Door::default());
    let (started, worker_started) = std::sync::mpsc::channel();
    let device = BusyDevice {
        door: door.clone(),
        started,
        worker: None,
    };
    let mut f = fixture_with(Box::new(device), Arc::default());
    assert_eq!(f.start_busy(), DRIVER_OK);
    let wait = std::time::Duration::from_secs(5);
    worker_started.recv_timeout(wait).unwrap();
    // The worker is in the middle of a request: reset must not wait for it.
    let began = std::time::Instant::now();
    f.write(VIRTIO_MMIO_STATUS, 0);
    let took = began.elapsed();
    assert!(
        took < std::time::Duration::from_millis(100),
        "reset took {took:?}"
    );
    assert_eq!(f.status(), 0);
    // The old worker is still busy, so the device does not start again
    // (after a bounded wait) and asks for another reset.
    let began = std::time::Instant::now();
    assert_eq!(f.start_busy(), DRIVER_OK | VIRTIO_CONFIG_S_NEEDS_RESET);
    let took = began.elapsed();
    assert!(
        took < std::time::Duration::from_millis(1500),
        "activation took {took:?}"
    );
    // Once the old request is done, a reset and a new start work.
    door.open();
    f.write(VIRTIO_MMIO_STATUS, 0);
    assert_eq!(f.start_busy(), DRIVER_OK);
    worker_started.recv_timeout(wait).unwrap();
    f.write(VIRTIO_MMIO_STATUS, 0);
}

/// Three devices each in the middle of a long request, as a guest can
/// keep them: stopping them together waits `STOP_WAIT` once. Dropping the
/// transports one by one (what a VM stop did before) waited that long per
/// device, 1.5 s here, beyond a one-second SIGTERM.
#[test]
fn busy_workers_of_several_devices_are_waited_for_together() {
    use crate::virtio::worker::{finish_all, STOP_WAIT};
    let door = Arc::new(Door::default());
    let (started, worker_started) = std::sync::mpsc::channel();
    let mut fixtures: Vec<Fixture> = (0..3)
        .map(|_| {
            let device = BusyDevice {
                door: door.clone(),
                started: started.clone(),
                worker: None,
            };
            fixture_with(Box::new(device), Arc::default())
        })
        .collect();
    for f in &mut fixtures {
        assert_eq!(f.start_busy(), DRIVER_OK);
        worker_started
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
    }
    // One device also has a retired worker, busy too.
    fixtures[0].write(VIRTIO_MMIO_STATUS, 0);
    let began = std::time::Instant::now();
    let workers: Vec<Worker> = fixtures
        .iter_mut()
        .flat_map(|f| f.transport.stop_workers())
        .collect();
    assert_eq!(workers.len(), 3);
    assert_eq!(finish_all(workers, began + STOP_WAIT), 3);
    drop(fixtures);
    let took = began.elapsed();
    assert!(
        took < STOP_WAIT + std::time::Duration::from_millis(300),
        "stopping three busy devices took {took:?}"
    );
    door.open();
}
