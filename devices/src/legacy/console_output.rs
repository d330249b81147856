//! Guest console output on its way to the host: a bounded buffer that the
//! devices (the UART on a vCPU thread, virtio-console on its worker) write
//! into without ever blocking, drained by a thread of its own into the real
//! writer (stdout). A host that stops reading costs guest output, never a
//! stalled vCPU, main loop or shutdown: bytes that do not fit are dropped
//! and counted ([`ConsoleOutput::dropped_bytes`]), with a warning the first
//! time and a running count at most every [`REPORT_INTERVAL`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bytes buffered for a host that is slow to read before output is dropped.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;
/// Least time between two warnings about dropped output.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Most bytes handed to the writer at once.
const CHUNK: usize = 16 * 1024;
/// Pause before retrying a writer that said `WouldBlock`.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The devices' end of the console output. Cheap to clone; writes never
/// block and never fail. The drain thread ends once every clone is gone and
/// what was buffered is written.
#[derive(Clone)]
pub struct ConsoleOutput {
    handle: Arc<Handle>,
}

/// Closes the buffer when the last [`ConsoleOutput`] goes.
struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when there is something to write, or nothing ever will be.
    wake: Condvar,
    /// Signalled when the drain thread finishes a write.
    idle: Condvar,
    dropped: AtomicU64,
    capacity: usize,
}

#[derive(Default)]
struct State {
    queue: VecDeque<u8>,
    /// The drain thread is inside the writer.
    writing: bool,
    /// No more bytes will come.
    closed: bool,
    /// The writer failed: everything is dropped from then on.
    broken: bool,
    /// When dropped output was last reported, if ever.
    last_report: Option<Instant>,
}

impl ConsoleOutput {
    /// Buffers up to [`DEFAULT_CAPACITY`] bytes for `sink`.
    pub fn new(sink: Box<dyn Write + Send>) -> io::Result<Self> {
        Self::with_capacity(sink, DEFAULT_CAPACITY)
    }

    /// Buffers up to `capacity` bytes for `sink`.
    pub fn with_capacity(sink: Box<dyn Write + Send>, capacity: usize) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            dropped: AtomicU64::new(0),
            capacity,
        });
        let drainer = shared.clone();
        std::thread::Builder::new()
            .name("console-out".into())
            .spawn(move || drain(&drainer, sink))?;
        Ok(Self {
            handle: Arc::new(Handle { shared }),
        })
    }

    /// Guest output bytes that never reached the writer: dropped because
    /// the buffer was full or the writer had failed.
    pub fn dropped_bytes(&self) -> u64 {
        self.handle.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything buffered is written, for at most `limit`;
    /// true if it was. A writer that is stuck costs `limit`, no more.
    pub fn flush_within(&self, limit: Duration) -> bool {
        let shared = &self.handle.shared;
        let deadline = Instant::now() + limit;
        let mut state = shared.lock();
        while !state.queue.is_empty() || state.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match shared.idle.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }
}

impl Write for ConsoleOutput {
    /// Takes what fits; the rest is dropped and counted. Always succeeds.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let shared = &self.handle.shared;
        let mut state = shared.lock();
        let room = match state.broken {
            true => 0,
            false => shared.capacity.saturating_sub(state.queue.len()),
        };
        let taken = room.min(buf.len());
        if taken > 0 {
            // The drain thread waits only on an empty queue.
            let was_empty = state.queue.is_empty();
            state.queue.extend(&buf[..taken]);
            if was_empty {
                shared.wake.notify_one();
            }
        }
        let lost = (buf.len() - taken) as u64;
        if lost > 0 {
            let total = shared.dropped.fetch_add(lost, Ordering::Relaxed) + lost;
            let report = report_due(&mut state);
            drop(state);
            match report {
                Some(true) => log::warn!(
                    "console output: the host is not reading; dropping guest output \
                     ({total} bytes so far)"
                ),
                Some(false) => log::warn!("console output: {total} bytes dropped so far"),
                None => {}
            }
        }
        Ok(buf.len())
    }

    /// Nothing to wait for: the drain thread writes as soon as it can.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether to report dropped output now: `Some(true)` the first time,
/// `Some(false)` once [`REPORT_INTERVAL`] has passed since the last report.
/// A broken writer was reported already.
fn report_due(state: &mut State) -> Option<bool> {
    if state.broken {
        return None;
    }
    let now = Instant::now();
    let first = match state.last_report {
        None => true,
        Some(last) if now.duration_since(last) >= REPORT_INTERVAL => false,
        Some(_) => return None,
    };
    state.last_report = Some(now);
    Some(first)
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The drain thread: moves buffered bytes to `sink` until the buffer is
/// closed and empty, or the sink fails.
fn drain(shared: &Shared, mut sink: Box<dyn Write + Send>) {
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let mut state = shared.lock();
        while state.queue.is_empty() {
            if state.closed {
                return;
            }
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let count = state.queue.len().min(CHUNK);
        chunk.clear();
        chunk.extend(state.queue.drain(..count));
        state.writing = true;
        drop(state);

        let result = write_out(&mut *sink, &chunk);
        let mut state = shared.lock();
        state.writing = false;
        if let Err(e) = result {
            let lost = chunk.len() + state.queue.len();
            state.queue.clear();
            state.broken = true;
            shared.dropped.fetch_add(lost as u64, Ordering::Relaxed);
            shared.idle.notify_all();
            drop(state);
            log::warn!("console output: {e}; guest output is discarded from now on");
            return;
        }
        shared.idle.notify_all();
    }
}

/// Writes all of `bytes`, riding out interruptions and a non-blocking
/// writer's `WouldBlock`.
fn write_out(sink: &mut dyn Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match sink.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(RETRY_PAUSE),
            Err(e) => return Err(e),
        }
    }
    sink.flush()
}

#[cfg(test)]
#[path = "console_output_tests.rs"]
pub(crate) mod tests;
