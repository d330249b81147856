//! x86_64 back end (in progress).
