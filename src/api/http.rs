//! The API server: a Unix socket, one accept thread, one thread per
//! connection, and one queue to the VMM's main thread, which takes the
//! requests one at a time in arrival order and answers each.
//!
//! HTTP is parsed with `httparse` and served by hand with std. tiny_http was
//! set aside because on Unix sockets it has no read timeouts and no limit on
//! the head's size, so one slow or hostile client could hold the server;
//! hyper needs an async runtime, which nothing else in tandem uses.
//!
//! Limits (enforced in `connection.rs`): a request's head and body
//! must arrive within 5 s of its first byte, an idle keep-alive connection
//! is closed after 60 s, the head is capped at 8 KiB and the body at
//! Firecracker's 51200 bytes (400, then close, without reading the rest).
//! Beyond 64 live connections a new one is answered 503 and closed, so the
//! client sees why instead of hanging.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{info, warn};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::connection::{self, Limits, Queue};
use super::routes::{ApiRequest, ApiResponse};
use crate::seccomp::ThreadKind;

/// The listening socket and its accept thread. Dropping it stops accepting
/// and removes the socket file. Connections already open are served until
/// they close or idle out; once the [`ApiInbox`] is dropped too, their
/// requests are answered "the VMM is shutting down".
#[derive(Debug)]
pub struct ApiServer {
    path: PathBuf,
    /// (device, inode) of the socket we bound, so Drop never removes a
    /// socket some other process has put at the same path since.
    socket_id: (u64, u64),
    stop: EventFd,
    accept_thread: Option<JoinHandle<()>>,
    /// Answers the main thread gave that no connection has written yet.
    unsent: Arc<AtomicUsize>,
}

/// How long a stopping server waits for answers still being written: the
/// last one (say, `PUT /migrate`'s, right before the process exits) must
/// reach its client.
const UNSENT_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// The main thread's end of the queue.
#[derive(Debug)]
pub struct ApiInbox {
    requests: mpsc::Receiver<PendingRequest>,
    wake: Arc<EventFd>,
}

/// A routed, validated request waiting for the main thread's answer.
#[derive(Debug)]
pub struct PendingRequest {
    /// What the client asked.
    pub request: ApiRequest,
    pub(crate) reply: mpsc::SyncSender<ApiResponse>,
    /// The server's count of answers not yet written.
    pub(crate) unsent: Arc<AtomicUsize>,
}

impl PendingRequest {
    /// Sends the answer to the waiting client. Dropping a request instead
    /// answers it with the fault "the VMM is shutting down".
    pub fn reply(self, response: ApiResponse) {
        // Counted until the connection has written it (`Unsent`).
        self.unsent.fetch_add(1, Ordering::AcqRel);
        if self.reply.send(response).is_err() {
            // The client timed out and went: nothing left to tell.
            self.unsent.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl ApiInbox {
    /// Readable while requests wait; the main thread adds it to its epoll.
    pub fn event_fd(&self) -> &EventFd {
        &self.wake
    }

    /// The next waiting request, if any. Call until `None` after each
    /// wake-up: it also consumes the eventfd, so that it only stays
    /// readable while something arrived after this call.
    pub fn try_recv(&self) -> Option<PendingRequest> {
        // Read the eventfd before the queue: a request sent after the
        // queue check has its write after this read, so it wakes us again.
        let _ = self.wake.read();
        self.requests.try_recv().ok()
    }
}

/// Binds `path` and starts serving it with the default limits.
pub fn start(path: &Path) -> io::Result<(ApiServer, ApiInbox)> {
    start_with(path, Limits::DEFAULT)
}

const LISTENER: u64 = 0;
const STOP: u64 = 1;

pub(crate) fn start_with(path: &Path, limits: Limits) -> io::Result<(ApiServer, ApiInbox)> {
    let listener = bind(path)?;
    let metadata = fs::metadata(path)?;
    let socket_id = (metadata.dev(), metadata.ino());
    let server_error = |e: io::Error| {
        let _ = fs::remove_file(path);
        e
    };
    // Non-blocking, so the accept thread sleeps only in epoll, where the
    // stop eventfd can wake it.
    listener.set_nonblocking(true).map_err(server_error)?;
    let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(server_error)?;
    let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(server_error)?);
    let epoll = Epoll::new().map_err(server_error)?;
    for (fd, token) in [(listener.as_raw_fd(), LISTENER), (stop.as_raw_fd(), STOP)] {
        epoll
            .ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(server_error)?;
    }
    let (sender, requests) = mpsc::channel();
    let unsent = Arc::new(AtomicUsize::new(0));
    let queue = Queue {
        sender,
        wake: wake.clone(),
        unsent: unsent.clone(),
    };
    let stop_for_thread = stop.try_clone().map_err(server_error)?;
    let accept_thread = thread::Builder::new()
        .name("tandem-api".into())
        .spawn(move || {
            crate::seccomp::enter(ThreadKind::Api, "tandem-api");
            let _stop = stop_for_thread; // registered in epoll; keep it open
            accept_loop(&listener, &epoll, &queue, limits);
        })
        .map_err(server_error)?;
    info!("API listening on {}", path.display());
    let server = ApiServer {
        path: path.to_path_buf(),
        socket_id,
        stop,
        accept_thread: Some(accept_thread),
        unsent,
    };
    Ok((server, ApiInbox { requests, wake }))
}

/// Binds a Unix socket at `path`, replacing a stale socket file left by a
/// process that died, and refusing one another process still listens on.
fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        other => return other,
    }
    let in_use = |why: &str| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("API socket {}: {why}", path.display()),
        )
    };
    if !fs::symlink_metadata(path)?.file_type().is_socket() {
        return Err(in_use("the path exists and is not a socket"));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(in_use("another process (another VMM?) listens on it")),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            warn!("replacing stale API socket {}", path.display());
            fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}

fn accept_loop(listener: &UnixListener, epoll: &Epoll, queue: &Queue, limits: Limits) {
    let live = Arc::new(AtomicUsize::new(0));
    let mut events = vec![EpollEvent::default(); 2];
    loop {
        let ready = match epoll.wait(-1, &mut events) {
            Ok(ready) => &events[..ready],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!("API server stopped: epoll failed: {e}");
                return;
            }
        };
        if ready.iter().any(|event| event.data() == STOP) {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => admit(stream, queue, limits, &live),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. out of file descriptors: back off rather than
                    // spin on a listener that stays readable.
                    warn!("API accept failed: {e}");
                    thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}

/// Gives `stream` its own thread, or answers 503 when over the cap.
fn admit(mut stream: UnixStream, queue: &Queue, limits: Limits, live: &Arc<AtomicUsize>) {
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    if live.load(Ordering::Acquire) >= limits.max_connections {
        warn!(
            "API: refusing a connection, {} already open",
            limits.max_connections
        );
        // The answer is small enough for the socket buffer; the timeout
        // only guards against the impossible.
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let body = serde_json::json!({
            "fault_message": format!("too many API connections (limit {})", limits.max_connections)
        });
        let _ = connection::write_status(&mut stream, 503, Some(body.to_string()), true);
        return;
    }
    live.fetch_add(1, Ordering::AcqRel);
    let guard = LiveConnection(live.clone());
    let queue = queue.clone();
    let spawned = thread::Builder::new()
        .name("tandem-api-conn".into())
        .spawn(move || {
            crate::seccomp::enter(ThreadKind::Api, "tandem-api-conn");
            let _guard = guard;
            connection::serve(stream, queue, limits);
        });
    if let Err(e) = spawned {
        warn!("API: cannot start a connection thread: {e}");
    }
}

/// Counts a connection as live until its thread ends.
struct LiveConnection(Arc<AtomicUsize>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ApiServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + UNSENT_WAIT;
        while self.unsent.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            thread::sleep(std::time::Duration::from_millis(1));
        }
        if let Err(e) = self.stop.write(1) {
            warn!("API: cannot stop the accept thread: {e}");
        } else if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        let ours =
            fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.socket_id);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
