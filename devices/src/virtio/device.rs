//! What a virtio device model implements to sit behind a transport, and
//! what the transport hands it when the driver sets DRIVER_OK.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use guest_memory::GuestMemoryMmap;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use super::worker::{Start, Worker};
use super::Interrupt;
use crate::LogLimit;

/// Stopped workers found to have panicked.
static PANICKED: LogLimit = LogLimit::new();

/// One virtqueue as the driver configured it, with the `EventFd` its
/// kicks arrive on (signalled by KVM_IOEVENTFD or by the transport).
#[derive(Debug)]
pub struct ActiveQueue {
    /// Ring addresses, size, EVENT_IDX state.
    pub queue: Queue,
    /// Becomes readable when the driver notifies this queue.
    pub kick: EventFd,
}

/// Everything a device needs to start serving its queues.
#[derive(Debug)]
pub struct ActivateContext {
    /// Guest memory the rings and buffers live in.
    pub mem: GuestMemoryMmap,
    /// Features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub features: u64,
    /// The queues, in the device's queue-index order.
    pub queues: Vec<ActiveQueue>,
    /// How the device signals used buffers, config changes and failures.
    pub interrupt: Arc<Interrupt>,
    /// How its worker begins (pass it to [`Worker::spawn`]).
    pub start: Start,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver set up a different number of queues than the device has.
    #[error("the device has {expected} queues, the driver set up {got}")]
    QueueCount {
        /// Queues the device serves.
        expected: usize,
        /// Queues handed over.
        got: usize,
    },
    /// The worker thread or its epoll set could not be created.
    #[error("cannot start the device worker: {0}")]
    Worker(#[source] io::Error),
    /// The backend refused the negotiated configuration.
    #[error("backend setup failed: {0}")]
    Backend(#[source] io::Error),
}

/// A virtio device model, independent of the transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`VIRTIO_ID_*`).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered, including `VIRTIO_F_VERSION_1`.
    fn features(&self) -> u64;
    /// Reads device configuration space at `offset`; bytes past its end
    /// read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space. None of tandem's devices has a
    /// writable field, so by default the write is logged and ignored.
    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!(
            "virtio device {}: config write at {offset:#x} ignored",
            self.device_type()
        );
    }
    /// Starts serving the queues (spawns the worker).
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// The worker serving the queues while the device is active: where
    /// reset, pause and resume act.
    fn worker(&mut self) -> &mut Option<Worker>;
    /// Forgets the queues and tells the worker to stop, without waiting
    /// for it: the caller (a vCPU holding the device's bus lock) must not
    /// wait for a request in flight. Returns the stopping worker, which
    /// publishes nothing more but may still be finishing its request; the
    /// transport keeps it and does not activate the device again until it
    /// has ended.
    fn reset(&mut self) -> Option<Worker> {
        let worker = self.worker().take()?;
        worker.request_stop();
        Some(worker)
    }
    /// Stops touching guest memory and queues until [`Self::resume`].
    /// Returns false if the worker did not park in time.
    fn pause(&mut self) -> bool {
        self.worker().as_ref().is_none_or(Worker::pause)
    }
    /// Goes on from where [`Self::pause`] stopped.
    fn resume(&mut self) {
        if let Some(worker) = self.worker() {
            worker.resume();
        }
    }
    /// Lets another process take the device's host resources that allow
    /// one user only — a disk's lock — for a migration to this same host
    /// (`release`), or takes them back after one that failed. Devices
    /// without any do nothing.
    fn hand_over(&mut self, _release: bool) -> io::Result<()> {
        Ok(())
    }
    /// Replaces the host file behind the device with `path`, live, and
    /// tells an active driver through a config-change interrupt. On error
    /// the old file stays in use. Only a device with a backing file (the
    /// disk) supports it.
    fn update_backend(&mut self, _path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this device has no backing file to change",
        ))
    }
}

/// How long an activation waits for the worker a reset stopped. The
/// vCPU writing DRIVER_OK waits this long at most, and a VM stop waits for
/// that vCPU: 250 ms plus the stop's own 500 ms keeps SIGTERM under 1 s.
/// A bounded request on a healthy backend ends well within it.
pub const RETIRE_WAIT: Duration = Duration::from_millis(250);

/// The worker a reset stopped ([`VirtioDevice::reset`]), kept by the
/// transport until it has ended. Any transport (MMIO now, PCI later) uses
/// it the same way: reset retires without waiting, pause and resume reach
/// it too (it may still touch guest memory), and DRIVER_OK activates the
/// device only once it has ended ([`Self::wait_ended`] with
/// [`RETIRE_WAIT`]), so there is never more than one per device.
#[derive(Debug, Default)]
pub struct RetiredWorker(Option<Worker>);

impl RetiredWorker {
    /// Keeps `worker`, already told to stop.
    pub fn retire(&mut self, worker: Worker) {
        // A previous one has ended (activation waited for it); dropping it
        // joins it.
        self.0 = Some(worker);
    }

    /// Waits up to `timeout` for the retired worker to end; true once
    /// none is left.
    pub fn wait_ended(&mut self, timeout: Duration) -> bool {
        let Some(worker) = &mut self.0 else {
            return true;
        };
        match worker.wait_ended(timeout) {
            None => false,
            Some(clean) => {
                if !clean {
                    PANICKED.error(format_args!("a stopped virtio worker had panicked"));
                }
                self.0 = None;
                true
            }
        }
    }

    /// Tells the retired worker, if any, to stop (again) and hands it over
    /// (to wait for it together with others: `worker::finish_all`).
    pub fn take(&mut self) -> Option<Worker> {
        let worker = self.0.take()?;
        worker.request_stop();
        Some(worker)
    }

    /// Parks the retired worker (or sees that it ended); see
    /// [`Worker::pause`].
    pub fn pause(&self) -> bool {
        self.0.as_ref().is_none_or(Worker::pause)
    }

    /// Undoes [`Self::pause`].
    pub fn resume(&self) {
        if let Some(worker) = &self.0 {
            worker.resume();
        }
    }
}

/// The feature mask of bit `bit`.
pub const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// Copies `config[offset..]` into `data`, zero-filling what lies past the
/// end of `config`: the common body of [`VirtioDevice::read_config`].
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// Checks that `ctx` carries `expected` queues.
pub fn check_queue_count(ctx: &ActivateContext, expected: usize) -> Result<(), ActivateError> {
    if ctx.queues.len() == expected {
        Ok(())
    } else {
        Err(ActivateError::QueueCount {
            expected,
            got: ctx.queues.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_zero_fill_past_the_end() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_bytes(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_bytes(&config, 9, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_bytes(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
    }
}
