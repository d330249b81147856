//! Legacy devices: the console UART, the i8042 reset line, the ACPI sleep
//! registers and the PL031 clock.
