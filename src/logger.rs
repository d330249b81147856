//! A minimal `log` backend: one line per record, prefixed with `tandem:`
//! so it stands apart from the guest's console output, on stderr or — once
//! `PUT /logger` or `--log-path` names one — appended to a file or FIFO.
//! A FIFO whose reader is slow loses lines rather than stalling the VMM.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use log::{LevelFilter, Log, Metadata, Record};

struct Logger {
    options: Mutex<Options>,
}

struct Options {
    /// Where lines go; stderr when none.
    file: Option<File>,
    show_level: bool,
    show_origin: bool,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut options = self.options.lock().unwrap_or_else(|p| p.into_inner());
        let mut line = String::from("tandem: ");
        if options.show_level {
            line.push_str(&record.level().as_str().to_lowercase());
            line.push_str(": ");
        }
        if options.show_origin {
            let file = record.file().unwrap_or("?");
            line.push_str(&format!("{file}:{}: ", record.line().unwrap_or(0)));
        }
        line.push_str(&record.args().to_string());
        match options.file.as_mut() {
            // A full FIFO refuses the write (non-blocking): the line is lost.
            Some(file) => {
                line.push('\n');
                let _ = file.write_all(line.as_bytes());
            }
            // \r keeps lines readable while the terminal is in raw mode.
            None => {
                line.push_str("\r\n");
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger {
    options: Mutex::new(Options {
        file: None,
        show_level: true,
        show_origin: false,
    }),
};

/// Installs the logger at `level` (a second call only changes the level).
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// What `PUT /logger` can change; `None` keeps the current value.
pub struct LogOptions<'a> {
    /// New level.
    pub level: Option<LevelFilter>,
    /// Append to this file or FIFO instead of stderr.
    pub path: Option<&'a Path>,
    /// Prefix lines with their level.
    pub show_level: Option<bool>,
    /// Prefix lines with their source file and line.
    pub show_origin: Option<bool>,
}

/// Changes where and how lines are written.
pub fn configure(change: LogOptions<'_>) -> std::io::Result<()> {
    let file = match change.path {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)?,
        ),
        None => None,
    };
    let mut options = LOGGER.options.lock().unwrap_or_else(|p| p.into_inner());
    if file.is_some() {
        options.file = file;
    }
    if let Some(show) = change.show_level {
        options.show_level = show;
    }
    if let Some(show) = change.show_origin {
        options.show_origin = show;
    }
    if let Some(level) = change.level {
        log::set_max_level(level);
    }
    Ok(())
}
