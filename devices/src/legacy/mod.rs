//! Legacy devices: the console UART, the i8042 keyboard controller, the
//! ACPI sleep registers, the debug-exit port, the PL031 clock and the
//! GICv2m MSI frame, plus the console escape filter for host input and the
//! non-blocking buffer guest console output goes through (shared with
//! virtio-console). Each device is a [`BusDevice`](crate::BusDevice)
//! addressed by offsets from the base the VMM inserts it at; none knows
//! its architecture, and only the v2m frame its base (devices' MSIs name
//! its doorbell by address).

pub mod acpi_sleep;
pub mod console_input;
pub mod console_output;
pub mod debug_exit;
pub mod gic_v2m;
pub mod i8042;
pub mod rtc_pl031;
pub mod serial;

pub use acpi_sleep::AcpiSleep;
pub use console_input::EscapeFilter;
pub use console_output::ConsoleOutput;
pub use debug_exit::DebugExit;
pub use gic_v2m::{GicV2mFrame, V2mWindow};
pub use i8042::I8042;
pub use rtc_pl031::Pl031;
pub use serial::Serial;
