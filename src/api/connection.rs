//! One client connection: read HTTP/1.1 requests off the stream with
//! deadlines and size limits, route each, hand it to the main thread and
//! write the answer back, until the client closes, idles out or errs.
//! Runs on its own thread, so a slow client only ever holds itself.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use vmm_sys_util::eventfd::EventFd;

use super::http::PendingRequest;
use super::routes::{parse_request, ApiResponse};

/// Firecracker's default maximum payload (`--http-api-max-payload-size`).
pub const MAX_PAYLOAD_BYTES: usize = 51_200;
/// Request line plus headers.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// Deadlines and caps of the server, one set for every connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request's head and body must arrive within this of its first byte.
    pub request_timeout: Duration,
    /// A keep-alive connection with no request started is closed after this.
    pub idle_timeout: Duration,
    /// How long a connection waits for the main thread's answer.
    pub reply_timeout: Duration,
    /// Live connections beyond this are answered 503 and closed.
    pub max_connections: usize,
}

impl Limits {
    pub(crate) const DEFAULT: Limits = Limits {
        request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        reply_timeout: Duration::from_secs(30),
        max_connections: 64,
    };
}

/// The way to the main thread: its queue and the eventfd it epolls.
#[derive(Clone)]
pub(crate) struct Queue {
    pub sender: mpsc::Sender<PendingRequest>,
    pub wake: Arc<EventFd>,
    /// The server's count of the main thread's answers not yet written.
    pub unsent: Arc<AtomicUsize>,
}

/// One of the main thread's answers, counted as unsent until dropped
/// (after it was written, or failed to be).
struct Unsent(Option<Arc<AtomicUsize>>);

impl Drop for Unsent {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Why a connection stops reading.
enum Stop {
    /// The client closed, idled out, or the stream failed: nothing to say.
    Quietly,
    /// The client broke the protocol or a limit: answer 400, then close.
    Fault(String),
}

/// A request whose head and body have fully arrived.
struct RawRequest {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// What the head says about the body and the connection.
struct Head {
    len: usize,
    method: String,
    path: String,
    content_length: usize,
    close: bool,
    expect_continue: bool,
}

/// Serves `stream` until it closes; every request is answered in order.
pub(crate) fn serve(stream: UnixStream, queue: Queue, limits: Limits) {
    let mut connection = Connection {
        stream,
        buf: Vec::new(),
        limits,
    };
    // A client that stops reading must not hold the thread for ever.
    if let Err(e) = connection
        .stream
        .set_write_timeout(Some(limits.request_timeout))
    {
        warn!("API connection: cannot set a write timeout: {e}");
        return;
    }
    loop {
        match connection.read_request() {
            Ok(request) => {
                let (response, close_after, _unsent) = answer(&request, &queue, &limits);
                let close = request.close || close_after;
                if write_response(&mut connection.stream, &response, close).is_err() || close {
                    return;
                }
            }
            Err(Stop::Quietly) => return,
            Err(Stop::Fault(message)) => {
                debug!("API connection: {message}");
                let _ = write_response(&mut connection.stream, &ApiResponse::Fault(message), true);
                return;
            }
        }
    }
}

/// Routes the request and, if valid, waits for the main thread's answer.
/// The bool says whether to close the connection afterwards; the
/// [`Unsent`] is to be dropped once the answer is written.
fn answer(request: &RawRequest, queue: &Queue, limits: &Limits) -> (ApiResponse, bool, Unsent) {
    let api_request = match parse_request(&request.method, &request.path, &request.body) {
        Ok(api_request) => api_request,
        Err(fault) => return (ApiResponse::Fault(fault), false, Unsent(None)),
    };
    let shutting_down = || ApiResponse::Fault("the VMM is shutting down".into());
    let (reply, replied) = mpsc::sync_channel(1);
    let pending = PendingRequest {
        request: api_request,
        reply,
        unsent: queue.unsent.clone(),
    };
    if queue.sender.send(pending).is_err() {
        return (shutting_down(), true, Unsent(None));
    }
    if let Err(e) = queue.wake.write(1) {
        warn!("API: cannot wake the main thread: {e}");
    }
    match replied.recv_timeout(limits.reply_timeout) {
        Ok(response) => (response, false, Unsent(Some(queue.unsent.clone()))),
        Err(mpsc::RecvTimeoutError::Disconnected) => (shutting_down(), true, Unsent(None)),
        // The main thread may still act on it later: close, so the client
        // does not mistake a later answer for this one.
        Err(mpsc::RecvTimeoutError::Timeout) => (
            ApiResponse::Fault(format!(
                "timed out after {} s waiting for the VMM to answer",
                limits.reply_timeout.as_secs()
            )),
            true,
            Unsent(None),
        ),
    }
}

struct Connection {
    stream: UnixStream,
    /// Bytes read but not consumed: a partial request or pipelined ones.
    buf: Vec<u8>,
    limits: Limits,
}

impl Connection {
    fn read_request(&mut self) -> Result<RawRequest, Stop> {
        // The request deadline runs from its first byte, which may already
        // be buffered (pipelining).
        let mut started = (!self.buf.is_empty()).then(Instant::now);
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            self.fill(started)?;
            started.get_or_insert_with(Instant::now);
        };
        let end = head.len + head.content_length;
        if self.buf.len() < end && head.expect_continue {
            self.stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .map_err(|_| Stop::Quietly)?;
        }
        while self.buf.len() < end {
            self.fill(started)?;
        }
        let body = self.buf[head.len..end].to_vec();
        self.buf.drain(..end);
        Ok(RawRequest {
            method: head.method,
            path: head.path,
            body,
            close: head.close,
        })
    }

    /// Reads more bytes, within the request deadline if a request has
    /// started, else within the idle timeout.
    fn fill(&mut self, started: Option<Instant>) -> Result<(), Stop> {
        let timeout = match started {
            None => self.limits.idle_timeout,
            Some(start) => {
                (start + self.limits.request_timeout).saturating_duration_since(Instant::now())
            }
        };
        let timed_out = || match started {
            None => Stop::Quietly,
            Some(_) => Stop::Fault(format!(
                "request not complete within {} ms of its first byte",
                self.limits.request_timeout.as_millis()
            )),
        };
        if timeout.is_zero() {
            return Err(timed_out());
        }
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|_| Stop::Quietly)?;
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(Stop::Quietly),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out())
                }
                Err(_) => return Err(Stop::Quietly),
            }
        }
    }
}

/// Parses the head if it has fully arrived; refuses what this server does
/// not speak before any body is read.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Stop> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD_BYTES => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(head_too_large()),
        Err(e) => return Err(Stop::Fault(format!("malformed HTTP request: {e}"))),
    };
    if len > MAX_HEAD_BYTES {
        return Err(head_too_large());
    }
    let fault = |message: String| Err(Stop::Fault(message));
    let mut content_length = None;
    let mut close = request.version == Some(0);
    let mut expect_continue = false;
    for header in request.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        if header.name.eq_ignore_ascii_case("content-length") {
            let Some(length) = value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<usize>().ok())
                .flatten()
            else {
                return fault(format!("invalid Content-Length {value:?}"));
            };
            if content_length.is_some_and(|previous| previous != length) {
                return fault("conflicting Content-Length headers".into());
            }
            content_length = Some(length);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return fault(format!(
                "Transfer-Encoding {value:?} is not supported; send Content-Length"
            ));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    close = false;
                }
            }
        } else if header.name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case("100-continue") {
                return fault(format!("Expect {value:?} is not supported"));
            }
            expect_continue = true;
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_PAYLOAD_BYTES {
        return fault(format!(
            "request payload of {content_length} bytes is larger than the limit of \
             {MAX_PAYLOAD_BYTES} bytes"
        ));
    }
    Ok(Some(Head {
        len,
        // httparse returns Complete only with a method and a path.
        method: request.method.unwrap_or_default().to_string(),
        path: request.path.unwrap_or_default().to_string(),
        content_length,
        close,
        expect_continue,
    }))
}

fn head_too_large() -> Stop {
    Stop::Fault(format!(
        "request line and headers larger than {MAX_HEAD_BYTES} bytes"
    ))
}

/// Writes one response; 204 carries no body and no Content-Length (but
/// the Content-Type the API description promises for every answer).
pub(crate) fn write_response(
    stream: &mut UnixStream,
    response: &ApiResponse,
    close: bool,
) -> io::Result<()> {
    write_status(stream, response.status(), response.body(), close)
}

/// Writes a response with any status, for the few the server sends on its
/// own (503 over the connection cap).
pub(crate) fn write_status(
    stream: &mut UnixStream,
    status: u16,
    body: Option<String>,
    close: bool,
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nServer: tandem\r\n");
    match &body {
        Some(body) => out.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )),
        None if status == 204 => out.push_str("Content-Type: application/json\r\n"),
        None => {}
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if let Some(body) = body {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
