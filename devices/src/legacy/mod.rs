//! Legacy devices: the console UART, the i8042 keyboard controller, the
//! ACPI sleep registers, the debug-exit port and the PL031 clock, plus the console escape filter
//! for host input and the non-blocking buffer guest console output goes
//! through (shared with virtio-console). Each device is a
//! [`BusDevice`](crate::BusDevice) addressed by offsets from the base the
//! VMM inserts it at; none knows its base or architecture.

pub mod acpi_sleep;
pub mod console_input;
pub mod console_output;
pub mod debug_exit;
pub mod i8042;
pub mod rtc_pl031;
pub mod serial;

pub use acpi_sleep::AcpiSleep;
pub use console_input::EscapeFilter;
pub use console_output::ConsoleOutput;
pub use debug_exit::DebugExit;
pub use i8042::I8042;
pub use rtc_pl031::Pl031;
pub use serial::Serial;
