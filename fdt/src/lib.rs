//! Device tree for aarch64 guests (in progress).
