//! The metrics output: one JSON object per line (docs/metrics.md describes
//! the fields), appended every [`METRICS_INTERVAL`] to a regular file or a
//! FIFO, as Firecracker does.
//!
//! Writing never blocks the VMM: a FIFO is opened non-blocking, and a line
//! the reader has no room for is dropped and counted
//! ([`MetricsSink::dropped`]). A line the FIFO took only part of (possible
//! for lines longer than `PIPE_BUF`) is finished before the next one is
//! started, so the reader never sees two lines interleaved.
//!
//! [`MetricsTimer`] is the periodic tick the main thread polls for, and
//! [`device_entry`] builds one device's entry of the line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use devices::virtio::{IoStatsSnapshot, StatsSnapshot};
use serde_json::{json, Value};
use vmm_sys_util::timerfd::TimerFd;

/// How often a metrics line is written.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(60);

/// Where metrics lines go.
#[derive(Debug)]
pub struct MetricsSink {
    file: File,
    /// The unwritten end of a line the reader took only part of.
    pending: Vec<u8>,
    dropped: u64,
}

impl MetricsSink {
    /// Opens `path`: a regular file is created if needed and appended to; a
    /// FIFO is opened write-only and non-blocking, and must already have a
    /// reader (otherwise: an error saying so).
    pub fn open(path: &Path) -> io::Result<MetricsSink> {
        let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
        let file = if is_fifo {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENXIO) => io::Error::new(
                        e.kind(),
                        format!(
                            "metrics FIFO {} has no reader: start the reader first",
                            path.display()
                        ),
                    ),
                    _ => e,
                })?
        } else {
            OpenOptions::new().create(true).append(true).open(path)?
        };
        Ok(MetricsSink {
            file,
            pending: Vec::new(),
            dropped: 0,
        })
    }

    /// Appends `line` and a newline with one `write`. If the reader of a
    /// FIFO has no room (or is still taking the rest of the previous line),
    /// the line is dropped and counted, and this returns `Ok`. Any other
    /// write error (e.g. `EPIPE`: the reader went away) is returned, and
    /// the line counted as dropped too.
    pub fn write_line(&mut self, line: &Value) -> io::Result<()> {
        let result = self.try_write(line);
        if !matches!(result, Ok(true)) {
            self.dropped += 1;
        }
        result.map(|_| ())
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Writes `line`; false if it was dropped for want of room.
    fn try_write(&mut self, line: &Value) -> io::Result<bool> {
        if !self.pending.is_empty() {
            let written = write_some(&mut self.file, &self.pending)?;
            self.pending.drain(..written);
            if !self.pending.is_empty() {
                return Ok(false);
            }
        }
        let mut bytes = serde_json::to_vec(line)?;
        bytes.push(b'\n');
        let written = write_some(&mut self.file, &bytes)?;
        if written == 0 {
            return Ok(false);
        }
        // The reader has the start of the line: its end goes first next
        // time, and the line counts as written.
        self.pending = bytes.split_off(written);
        Ok(true)
    }
}

impl AsRawFd for MetricsSink {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// One `write`, retried on EINTR; 0 if it would block.
fn write_some(file: &mut File, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match file.write(bytes) {
            Ok(written) => return Ok(written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// A periodic timer (timerfd, CLOCK_MONOTONIC) the main thread polls
/// for: readable once per interval.
#[derive(Debug)]
pub struct MetricsTimer {
    timer: TimerFd,
    interval: Duration,
}

impl MetricsTimer {
    /// A disarmed timer ticking every [`METRICS_INTERVAL`].
    pub fn new() -> io::Result<MetricsTimer> {
        Self::with_interval(METRICS_INTERVAL)
    }

    /// A disarmed timer ticking every `interval` (not zero).
    pub fn with_interval(interval: Duration) -> io::Result<MetricsTimer> {
        if interval.is_zero() {
            let message = "metrics interval must not be zero";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        Ok(MetricsTimer {
            timer: TimerFd::new()?,
            interval,
        })
    }

    /// The interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Starts ticking: first one interval from now, then every interval.
    pub fn arm(&mut self) -> io::Result<()> {
        Ok(self.timer.reset(self.interval, Some(self.interval))?)
    }

    /// Takes the ticks since the last call (at least 1; more if the main
    /// thread fell behind). Call it when the fd polls readable: on a timer
    /// with no tick due, it blocks until the next.
    pub fn consume(&mut self) -> io::Result<u64> {
        Ok(self.timer.wait()?)
    }
}

impl AsRawFd for MetricsTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

/// One device's entry in the line's `devices` object: the transport's
/// queue counters and the device model's I/O counters.
pub fn device_entry(stats: &StatsSnapshot, io: &IoStatsSnapshot) -> Value {
    json!({
        "kicks": stats.queue_kicks,
        "interrupts_sent": stats.interrupts_sent,
        "interrupts_suppressed": stats.interrupts_suppressed,
        "requests": io.requests,
        "bytes_read": io.bytes_read,
        "bytes_written": io.bytes_written,
        "errors": io.errors,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Instant;

    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
    use vmm_sys_util::tempdir::TempDir;

    use super::*;

    fn fifo(dir: &TempDir) -> PathBuf {
        let path = dir.as_path().join("metrics.fifo");
        let status = Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(status.success(), "mkfifo");
        path
    }

    fn reader(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap()
    }

    /// Everything the reader can take now.
    fn drain(reader: &mut File) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return all,
                Ok(n) => all.extend(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return all,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn parse_lines(bytes: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "whole lines only");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn a_regular_file_gets_lines_appended() {
        let dir = TempDir::new().unwrap();
        let path = dir.as_path().join("metrics.json");
        let mut sink = MetricsSink::open(&path).unwrap();
        sink.write_line(&json!({"n": 1})).unwrap();
        sink.write_line(&json!({"n": 2, "s": "x"})).unwrap();
        drop(sink);
        let mut sink = MetricsSink::open(&path).unwrap();
        sink.write_line(&json!({"n": 3})).unwrap();
        let lines = parse_lines(&std::fs::read(&path).unwrap());
        let numbers: Vec<u64> = lines.iter().map(|l| l["n"].as_u64().unwrap()).collect();
        assert_eq!(numbers, [1, 2, 3], "reopening appends");
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn a_fifo_without_a_reader_is_a_clear_error() {
        let dir = TempDir::new().unwrap();
        let path = fifo(&dir);
        let err = MetricsSink::open(&path).unwrap_err();
        assert!(err.to_string().contains("has no reader"), "{err}");
    }

    #[test]
    fn a_fifo_reader_gets_the_line() {
        let dir = TempDir::new().unwrap();
        let path = fifo(&dir);
        let mut reader = reader(&path);
        let mut sink = MetricsSink::open(&path).unwrap();
        sink.write_line(&json!({"vmm": {"state": "Running"}}))
            .unwrap();
        let lines = parse_lines(&drain(&mut reader));
        assert_eq!(lines, [json!({"vmm": {"state": "Running"}})]);
    }

    #[test]
    fn a_stalled_fifo_reader_makes_lines_drop_without_blocking() {
        let dir = TempDir::new().unwrap();
        let path = fifo(&dir);
        let mut reader = reader(&path);
        let mut sink = MetricsSink::open(&path).unwrap();
        // Lines longer than PIPE_BUF, so the FIFO also takes partial ones.
        let line = |n: u64| json!({"n": n, "pad": "x".repeat(5000)});
        let start = Instant::now();
        let (mut n, mut partial) = (0, false);
        while sink.dropped() < 3 {
            sink.write_line(&line(n)).unwrap();
            partial |= !sink.pending.is_empty();
            n += 1;
            assert!(n < 10_000, "the FIFO never filled");
        }
        let dropped = sink.dropped();
        sink.write_line(&line(n)).unwrap();
        assert_eq!(sink.dropped(), dropped + 1, "still full: dropped");
        assert!(start.elapsed() < Duration::from_secs(5), "never blocks");
        assert!(partial, "the FIFO took part of a line");
        // The reader catches up: it sees whole lines only, in order, and
        // writing works again.
        let mut bytes = drain(&mut reader);
        sink.write_line(&line(9999)).unwrap();
        bytes.extend(drain(&mut reader));
        let got = parse_lines(&bytes);
        let numbers: Vec<u64> = got.iter().map(|l| l["n"].as_u64().unwrap()).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        assert_eq!(numbers.last(), Some(&9999));
        assert_eq!(
            numbers.len() as u64 + sink.dropped(),
            n + 2,
            "every line written or counted"
        );
    }

    #[test]
    fn the_timer_ticks_through_epoll() {
        let mut timer = MetricsTimer::with_interval(Duration::from_millis(20)).unwrap();
        assert_eq!(MetricsTimer::new().unwrap().interval(), METRICS_INTERVAL);
        assert!(MetricsTimer::with_interval(Duration::ZERO).is_err());
        let epoll = Epoll::new().unwrap();
        let event = EpollEvent::new(EventSet::IN, 7);
        epoll
            .ctl(ControlOperation::Add, timer.as_raw_fd(), event)
            .unwrap();
        let mut events = [EpollEvent::default(); 1];
        assert_eq!(epoll.wait(50, &mut events).unwrap(), 0, "disarmed");
        timer.arm().unwrap();
        for _ in 0..2 {
            assert_eq!(epoll.wait(2000, &mut events).unwrap(), 1);
            assert_eq!(events[0].data(), 7);
            assert!(timer.consume().unwrap() >= 1);
        }
    }

    #[test]
    fn device_entries_carry_both_counter_sets() {
        let stats = StatsSnapshot {
            queue_kicks: 10,
            interrupts_sent: 8,
            interrupts_suppressed: 2,
        };
        let io = IoStatsSnapshot {
            requests: 9,
            bytes_read: 4096,
            bytes_written: 512,
            errors: 1,
        };
        let expected = json!({
            "kicks": 10, "interrupts_sent": 8, "interrupts_suppressed": 2,
            "requests": 9, "bytes_read": 4096, "bytes_written": 512, "errors": 1,
        });
        assert_eq!(device_entry(&stats, &io), expected);
    }
}
