//! A logger for tests of log rates: it keeps every record at info level
//! and above (tandem's default), with the thread that logged it, so a test
//! can count what it caused while others run in parallel threads.

use std::sync::{Mutex, MutexGuard, Once};
use std::thread::{self, ThreadId};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Entry {
    thread: ThreadId,
    level: Level,
    message: String,
}

struct Collector(Mutex<Vec<Entry>>);

static COLLECTOR: Collector = Collector(Mutex::new(Vec::new()));

impl Collector {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Log for Collector {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.lock().push(Entry {
                thread: thread::current().id(),
                level: record.level(),
                message: format!("[{}] {}", record.target(), record.args()),
            });
        }
    }

    fn flush(&self) {}
}

/// What was logged from the moment [`Capture::start`] was called.
pub struct Capture {
    thread: ThreadId,
    from: usize,
}

impl Capture {
    /// Installs the logger (once per test binary) and starts counting.
    pub fn start() -> Self {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&COLLECTOR).expect("no other logger in tests");
            log::set_max_level(LevelFilter::Info);
        });
        Self {
            thread: thread::current().id(),
            from: COLLECTOR.lock().len(),
        }
    }

    /// Warnings and errors logged since the start by this thread, each
    /// prefixed with its target.
    pub fn warnings_here(&self) -> Vec<String> {
        self.collect(Level::Warn, |entry| entry.thread == self.thread)
    }

    /// Like [`Self::warnings_here`], info lines included.
    pub fn lines_here(&self) -> Vec<String> {
        self.collect(Level::Info, |entry| entry.thread == self.thread)
    }

    /// Warnings and errors logged since the start by any thread whose
    /// message contains `marker`.
    pub fn warnings_containing(&self, marker: &str) -> Vec<String> {
        self.collect(Level::Warn, |entry| entry.message.contains(marker))
    }

    fn collect(&self, level: Level, wanted: impl Fn(&Entry) -> bool) -> Vec<String> {
        COLLECTOR.lock()[self.from..]
            .iter()
            .filter(|entry| entry.level <= level && wanted(entry))
            .map(|entry| entry.message.clone())
            .collect()
    }
}

/// The most lines a guest may cause with 10,000 repetitions of one thing:
/// the first five and the counts at 10, 100, 1000 and 10,000.
pub const FEW_LINES: usize = 10;

/// Fails, showing the first lines, if there are more than [`FEW_LINES`].
pub fn assert_few(lines: &[String], what: &str) {
    assert!(
        lines.len() <= FEW_LINES,
        "{what}: {} lines, starting {:#?}",
        lines.len(),
        &lines[..lines.len().min(3)]
    );
}
