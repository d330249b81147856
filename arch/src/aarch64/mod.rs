//! aarch64 back end (in progress).
