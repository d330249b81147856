//! The console output buffer against writers that keep up, stall, fail or
//! say `WouldBlock`; the stalled writer is shared with the devices' tests.

use super::*;
use std::sync::atomic::AtomicBool;
use std::thread;

/// A host reader that stopped reading: every write parks forever.
pub(crate) struct Parked;

impl Write for Parked {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        loop {
            thread::park();
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Collects what it is given; notes when the drain thread lets it go.
#[derive(Clone, Default)]
struct Collect {
    bytes: Arc<Mutex<Vec<u8>>>,
    released: Arc<AtomicBool>,
}

impl Write for Collect {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Collect {
    fn drop(&mut self) {
        self.released.store(true, Ordering::SeqCst);
    }
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn bytes_reach_the_writer_in_order() {
    let sink = Collect::default();
    let mut out = ConsoleOutput::new(Box::new(sink.clone())).unwrap();
    for i in 0..1000u32 {
        out.write_all(&i.to_le_bytes()).unwrap();
    }
    assert!(out.flush_within(SECOND));
    let expected: Vec<u8> = (0..1000u32).flat_map(u32::to_le_bytes).collect();
    assert_eq!(*sink.bytes.lock().unwrap(), expected);
    assert_eq!(out.dropped_bytes(), 0);
}

#[test]
fn a_stuck_writer_costs_output_not_time() {
    let mut out = ConsoleOutput::with_capacity(Box::new(Parked), 1024).unwrap();
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(out.write(&[b'x'; 100]).unwrap(), 100);
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    // At most one chunk went to the writer and one buffer-full waits.
    let dropped = out.dropped_bytes();
    assert!(
        (10_000 - 2 * 1024..=10_000 - 1024).contains(&dropped),
        "{dropped}"
    );

    let started = Instant::now();
    assert!(!out.flush_within(Duration::from_millis(100)));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < SECOND,
        "{waited:?}"
    );
}

#[test]
fn a_failed_writer_drops_and_counts_everything_after() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = ConsoleOutput::new(Box::new(Broken)).unwrap();
    out.write_all(b"lost").unwrap();
    assert!(out.flush_within(SECOND));
    assert_eq!(out.dropped_bytes(), 4);
    out.write_all(b"also lost").unwrap();
    assert_eq!(out.dropped_bytes(), 13);
    assert!(out.flush_within(SECOND));
}

#[test]
fn would_block_and_interrupted_writes_are_retried() {
    #[derive(Clone, Default)]
    struct Moody {
        calls: Arc<Mutex<u32>>,
        inner: Collect,
    }
    impl Write for Moody {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            match *calls % 3 {
                1 => Err(io::ErrorKind::WouldBlock.into()),
                2 => Err(io::ErrorKind::Interrupted.into()),
                _ => self.inner.write(&buf[..1]),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let sink = Moody::default();
    let mut out = ConsoleOutput::new(Box::new(sink.clone())).unwrap();
    out.write_all(b"abc").unwrap();
    assert!(out.flush_within(SECOND));
    assert_eq!(*sink.inner.bytes.lock().unwrap(), b"abc");
    assert_eq!(out.dropped_bytes(), 0);
}

#[test]
fn the_last_clone_gone_the_rest_is_written_and_the_thread_ends() {
    let sink = Collect::default();
    let mut out = ConsoleOutput::new(Box::new(sink.clone())).unwrap();
    let mut other = out.clone();
    out.write_all(b"one ").unwrap();
    drop(out);
    other.write_all(b"two").unwrap();
    drop(other);
    let started = Instant::now();
    while !sink.released.load(Ordering::SeqCst) {
        assert!(started.elapsed() < SECOND, "drain thread still running");
        thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(*sink.bytes.lock().unwrap(), b"one two");
}

#[test]
fn drops_are_reported_first_then_at_most_every_interval() {
    let mut state = State::default();
    assert_eq!(report_due(&mut state), Some(true));
    assert_eq!(report_due(&mut state), None);
    state.last_report = Some(Instant::now() - REPORT_INTERVAL);
    assert_eq!(report_due(&mut state), Some(false));
    assert_eq!(report_due(&mut state), None);
    state.broken = true;
    state.last_report = None;
    assert_eq!(report_due(&mut state), None);
}
