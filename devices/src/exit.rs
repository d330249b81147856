//! How devices and vCPU threads ask the VMM to end the run: a reason
//! recorded once, and an `EventFd` the main loop waits on.

use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset (tandem does not reboot: it exits).
    Reset,
    /// The host asked us to stop (signal, console escape).
    Stopped(String),
    /// The guest moved to another tandem process, which runs it now.
    Migrated,
    /// An error the guest cannot recover from.
    Fatal(String),
    /// The guest wrote this value to the debug-exit port.
    DebugExit(u32),
}

impl ExitReason {
    /// Whether the run ended the way a guest can legitimately end it.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            ExitReason::PowerOff | ExitReason::Reset | ExitReason::Migrated
        )
    }

    /// The process exit status the guest chose, if it chose one: a
    /// debug-exit write of `v` gives `(v << 1) | 1`, cut to the 8 bits a
    /// process status holds.
    pub fn exit_status(&self) -> Option<i32> {
        match self {
            ExitReason::DebugExit(value) => Some(((value << 1) | 1) as i32 & 0xff),
            _ => None,
        }
    }
}

/// A one-shot stop request shared by everything that can end the run.
#[derive(Debug)]
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    /// A signal nobody has raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Records `reason` unless an earlier one was recorded, and wakes the
    /// main loop. The first reason wins.
    pub fn raise(&self, reason: ExitReason) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        // A full eventfd counter still wakes the reader, so the error is moot.
        let _ = self.evt.write(1);
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The `EventFd` that becomes readable once a reason is raised.
    pub fn event_fd(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_wakes_the_reader() {
        let signal = ExitSignal::new().unwrap();
        assert_eq!(signal.reason(), None);
        signal.raise(ExitReason::PowerOff);
        signal.raise(ExitReason::Fatal("late".into()));
        assert_eq!(signal.reason(), Some(ExitReason::PowerOff));
        assert_eq!(signal.event_fd().read().unwrap(), 2);
    }
}
