//! tandem's control plane: a Firecracker-compatible HTTP API on a Unix
//! socket, independent of the VM core.
//!
//! - [`models`]: the JSON bodies (Firecracker's shapes plus tandem's
//!   extensions) and their validation; also the `--config-file` format.
//! - [`routes`]: method + path + body to a typed [`ApiRequest`] or a fault.
//! - [`http`]: the socket, the threads, and the queue to the main thread.
//! - `connection`: HTTP/1.1 on one connection, with deadlines and limits.
//!
//! The VMM's main thread calls [`start`], adds [`ApiInbox::event_fd`] to its
//! epoll, and on each wake-up drains [`ApiInbox::try_recv`], answering each
//! [`PendingRequest`] with [`PendingRequest::reply`]. Requests reach it
//! routed and validated, one at a time, in arrival order; what is legal in
//! which VM state is for the main thread to decide.

pub mod client;
mod connection;
pub mod convert;
pub mod http;
pub mod models;
pub mod routes;

pub use connection::{MAX_HEAD_BYTES, MAX_PAYLOAD_BYTES};
pub use http::{start, ApiInbox, ApiServer, PendingRequest};
pub use routes::{parse_request, ApiRequest, ApiResponse};
