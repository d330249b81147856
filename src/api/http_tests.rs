//! Tests of the API server over real Unix sockets in a temp dir, with a
//! thread playing the VMM's main thread (it epolls the inbox's eventfd, so
//! every test also checks the wake-ups). Kept beside http.rs so that file
//! stays readable.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::tempdir::TempDir;

use super::{start, start_with, ApiInbox, ApiServer};
use crate::api::connection::{Limits, MAX_PAYLOAD_BYTES};
use crate::api::models::Action;
use crate::api::routes::{ApiRequest, ApiResponse};

const QUICK: Limits = Limits {
    request_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(10),
    reply_timeout: Duration::from_secs(10),
    max_connections: 8,
};

/// A server plus a fake main thread: GETs are echoed as JSON, other
/// requests get 204, and SendCtrlAltDel is dropped unanswered.
struct Harness {
    path: PathBuf,
    server: Option<ApiServer>,
    stop: Arc<EventFd>,
    vmm: Option<JoinHandle<()>>,
    seen: Arc<AtomicUsize>,
    _dir: TempDir,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let dir = TempDir::new_with_prefix("/tmp/tandem-api-test").unwrap();
        let path = dir.as_path().join("api.sock");
        let (server, inbox) = start_with(&path, limits).unwrap();
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let vmm = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || fake_vmm(inbox, &stop, &seen))
        };
        Harness {
            path,
            server: Some(server),
            stop,
            vmm: Some(vmm),
            seen,
            _dir: dir,
        }
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.take();
        let _ = self.stop.write(1);
        if let Some(vmm) = self.vmm.take() {
            let _ = vmm.join();
        }
    }
}

fn fake_vmm(inbox: ApiInbox, stop: &EventFd, seen: &AtomicUsize) {
    let epoll = Epoll::new().unwrap();
    for (fd, token) in [(inbox.event_fd().as_raw_fd(), 0), (stop.as_raw_fd(), 1)] {
        let event = EpollEvent::new(EventSet::IN, token);
        epoll.ctl(ControlOperation::Add, fd, event).unwrap();
    }
    let mut events = vec![EpollEvent::default(); 2];
    loop {
        let ready = epoll.wait(-1, &mut events).unwrap();
        if events[..ready].iter().any(|e| e.data() == 1) {
            return;
        }
        while let Some(pending) = inbox.try_recv() {
            seen.fetch_add(1, Ordering::SeqCst);
            let response = match &pending.request {
                ApiRequest::Action(Action::SendCtrlAltDel) => continue, // dropped
                request @ (ApiRequest::GetVersion
                | ApiRequest::GetInstanceInfo
                | ApiRequest::GetVmConfig
                | ApiRequest::GetMachineConfig) => {
                    ApiResponse::Json(serde_json::json!({ "echo": format!("{request:?}") }))
                }
                _ => ApiResponse::NoContent,
            };
            pending.reply(response);
        }
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn send(&mut self, raw: &str) {
        self.stream.write_all(raw.as_bytes()).unwrap();
    }

    /// The next response's status and body, or None at end of stream.
    fn response(&mut self) -> Option<(u16, String)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut response = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head) = response.parse(&self.buf).unwrap() {
                let code = response.code.unwrap();
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map_or(0, |h| {
                        std::str::from_utf8(h.value).unwrap().parse().unwrap()
                    });
                if self.buf.len() >= head + length {
                    let body = String::from_utf8(self.buf[head..head + length].to_vec()).unwrap();
                    self.buf.drain(..head + length);
                    return Some((code, body));
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading a response: {e}"),
            }
        }
    }

    fn closed(&mut self) -> bool {
        self.response().is_none()
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn put(path: &str, body: &str) -> String {
    format!(
        "PUT {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn keep_alive_serves_requests_until_close() {
    let harness = Harness::new(QUICK);
    let mut client = harness.connect();
    client.send(&get("/version"));
    let (code, body) = client.response().unwrap();
    assert_eq!((code, body.contains("GetVersion")), (200, true), "{body}");
    client.send(&put("/logger", r#"{"level":"Info"}"#));
    assert_eq!(client.response(), Some((204, String::new())));
    client.send("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(client.response().unwrap().0, 200);
    assert!(client.closed());
    assert_eq!(harness.seen.load(Ordering::SeqCst), 3);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let harness = Harness::new(QUICK);
    let mut client = harness.connect();
    client.send(&format!("{}{}", get("/version"), get("/machine-config")));
    assert!(client.response().unwrap().1.contains("GetVersion"));
    assert!(client.response().unwrap().1.contains("GetMachineConfig"));
}

#[test]
fn half_open_client_does_not_block_others() {
    let harness = Harness::new(QUICK);
    let mut stalled = harness.connect();
    stalled.send("PUT /drives/root HTTP/1.1\r\nContent-Le");
    let mut other = harness.connect();
    other.send(&get("/version"));
    // The client's read timeout (5 s) is shorter than the server's request
    // deadline (10 s): a server blocked on the stalled client fails this.
    assert_eq!(other.response().unwrap().0, 200);
}

#[test]
fn slow_request_times_out_with_400() {
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        ..QUICK
    };
    let harness = Harness::new(limits);
    let mut slow = harness.connect();
    let begun = Instant::now();
    slow.send("GET /version HTTP/1.1\r\n");
    let (code, body) = slow.response().unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("not complete within 200 ms"), "{body}");
    assert!(begun.elapsed() >= Duration::from_millis(200));
    assert!(slow.closed());
}

#[test]
fn idle_keep_alive_connection_is_closed() {
    let limits = Limits {
        idle_timeout: Duration::from_millis(200),
        ..QUICK
    };
    let harness = Harness::new(limits);
    let mut client = harness.connect();
    client.send(&get("/version"));
    assert_eq!(client.response().unwrap().0, 200);
    assert!(client.closed());
}

#[test]
fn oversize_body_is_refused_and_the_server_goes_on() {
    let harness = Harness::new(QUICK);
    let mut client = harness.connect();
    let head = format!(
        "PUT /logger HTTP/1.1\r\nContent-Length: {}\r\n\r\n{{",
        MAX_PAYLOAD_BYTES + 1
    );
    client.send(&head);
    let (code, body) = client.response().unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("larger than the limit of 51200"), "{body}");
    assert!(client.closed());

    // Exactly the limit is read in full and reaches the router.
    let mut next = harness.connect();
    let exactly_the_limit = format!("{{{}", " ".repeat(MAX_PAYLOAD_BYTES - 1));
    next.send(&put("/logger", &exactly_the_limit));
    let (code, body) = next.response().unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("invalid body"), "{body}");
    next.send(&get("/version"));
    assert_eq!(next.response().unwrap().0, 200);
}

#[test]
fn malformed_or_unsupported_http_gets_400_and_close() {
    let harness = Harness::new(QUICK);
    let cases = [
        ("GET /version HTTP/1.1\r\nBad Header\r\n\r\n", "malformed"),
        (
            "GET /version HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "Content-Length",
        ),
        (
            "PUT /logger HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "Transfer-Encoding",
        ),
        ("PUT /logger HTTP/1.1\r\nExpect: magic\r\n\r\n", "Expect"),
    ];
    for (request, expected) in cases {
        let mut client = harness.connect();
        client.send(request);
        let (code, body) = client.response().unwrap();
        assert_eq!(code, 400, "{request}");
        assert!(body.contains(expected), "{request}: {body}");
        assert!(client.closed(), "{request}");
    }
    let mut client = harness.connect();
    client.send(&format!(
        "GET /version HTTP/1.1\r\nX: {}\r\n",
        "a".repeat(9000)
    ));
    let (code, body) = client.response().unwrap();
    assert_eq!(
        (code, body.contains("larger than 8192")),
        (400, true),
        "{body}"
    );
    assert_eq!(harness.seen.load(Ordering::SeqCst), 0);
}

#[test]
fn route_faults_are_answered_without_the_main_thread() {
    let harness = Harness::new(QUICK);
    let mut client = harness.connect();
    client.send(&get("/nowhere"));
    let (code, body) = client.response().unwrap();
    assert_eq!(code, 400);
    let fault: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = fault["fault_message"].as_str().unwrap();
    assert!(
        message.starts_with("Invalid request method and/or path"),
        "{message}"
    );
    client.send(&get("/version"));
    assert_eq!(client.response().unwrap().0, 200);
    assert_eq!(harness.seen.load(Ordering::SeqCst), 1);
}

#[test]
fn expect_100_continue_is_honoured() {
    let harness = Harness::new(QUICK);
    let mut client = harness.connect();
    let body = r#"{"action_type":"FlushMetrics"}"#;
    client.send(&format!(
        "PUT /actions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    assert_eq!(client.response(), Some((100, String::new())));
    client.send(body);
    assert_eq!(client.response(), Some((204, String::new())));
}

#[test]
fn unanswered_request_reports_shutdown() {
    let harness = Harness::new(QUICK);
    let mut client = harness.connect();
    client.send(&put("/actions", r#"{"action_type":"SendCtrlAltDel"}"#));
    let (code, body) = client.response().unwrap();
    assert_eq!(code, 400);
    assert!(body.contains("the VMM is shutting down"), "{body}");
}

#[test]
fn concurrent_clients_are_all_answered() {
    let harness = Harness::new(QUICK);
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let mut client = harness.connect();
            thread::spawn(move || {
                client.send(&get("/vm/config"));
                client.response().map(|(code, _)| code)
            })
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), Some(200));
    }
    assert_eq!(harness.seen.load(Ordering::SeqCst), 2);
}

#[test]
fn connections_over_the_cap_get_503() {
    let harness = Harness::new(Limits {
        max_connections: 2,
        ..QUICK
    });
    let mut open: Vec<Client> = (0..2).map(|_| harness.connect()).collect();
    for client in &mut open {
        client.send(&get("/version")); // answered: its thread is running
        assert_eq!(client.response().unwrap().0, 200);
    }
    let mut third = harness.connect();
    let (code, body) = third.response().unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("too many API connections"), "{body}");
    drop(open);
    // Closed connections free their slots once their threads notice.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = harness.connect();
        // Refused while no slot is free: the server may have answered 503
        // and closed before the request is written (EPIPE), which is fine.
        let _ = client.stream.write_all(get("/version").as_bytes());
        match client.response() {
            Some((200, _)) => break,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            other => panic!("no slot freed: {other:?}"),
        }
    }
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new_with_prefix("/tmp/tandem-api-test").unwrap();
    let path = dir.as_path().join("api.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves the file, nobody listening
    assert!(path.exists());
    let (_server, _inbox) = start(&path).unwrap();
    UnixStream::connect(&path).unwrap();
}

#[test]
fn live_socket_or_other_file_is_refused() {
    let harness = Harness::new(QUICK);
    let err = start(&harness.path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    assert!(err.to_string().contains("another process"), "{err}");
    let mut client = harness.connect();
    client.send(&get("/version"));
    assert_eq!(client.response().unwrap().0, 200);

    let file = harness.path.with_file_name("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = start(&file).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn drop_removes_the_socket_and_stops_accepting() {
    let dir = TempDir::new_with_prefix("/tmp/tandem-api-test").unwrap();
    let path = dir.as_path().join("api.sock");
    let (server, _inbox) = start(&path).unwrap();
    assert_eq!(server.path(), path);
    UnixStream::connect(&path).unwrap();
    drop(server);
    assert!(!path.exists());
    assert!(UnixStream::connect(&path).is_err());
}
