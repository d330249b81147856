//! Both ends of the vsock end-to-end rows (ci/vsock-e2e.sh), one static
//! program for the guest and the emulated host:
//!
//! ```text
//! tandem-vsock-e2e listen-vsock PORT CONNS          guest: accept CONNS on AF_VSOCK PORT
//! tandem-vsock-e2e connect-vsock PORT CONNS BYTES    guest: CONNS connections to host CID 2
//! tandem-vsock-e2e listen-unix PATH CONNS [STALL_S]  host: accept CONNS on PATH (<uds>_<port>)
//! tandem-vsock-e2e connect-unix UDS PORT CONNS BYTES host: CONNS x `CONNECT PORT` on UDS
//! tandem-vsock-e2e refused-vsock PORT                guest: a connect nobody listens for fails
//! tandem-vsock-e2e refused-unix UDS PORT             host: such a CONNECT is closed without OK
//! tandem-vsock-e2e listen-tcp ADDR:PORT CONNS        either: the same over TCP (benchmarks)
//! tandem-vsock-e2e connect-tcp ADDR:PORT CONNS BYTES either: the same over TCP
//! ```
//!
//! Every connection carries BYTES each way at once (stream.rs), checked
//! against the generator on arrival; one `VSOCK-CONN` line per connection
//! and a `VSOCK-DONE` line with the counts. Exit status 0 when all matched.
//! BYTES may be `SENT,BACK` (connector to acceptor, then back; `64M,0` is
//! one way) and take a K or M suffix. After BYTES, `FIRST=SIZES` gives
//! connection 0 other sizes, and `BUF=N` (connect-vsock) sets each
//! socket's buffer (SO_VM_SOCKETS_BUFFER_SIZE). STALL_S: connection 0
//! leaves its data unread for that many seconds after its header (the
//! stalled-reader check).

mod stream;
mod vsock;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use stream::{serve_connection, Conn, Report, Role};

/// How long any one read or write may wait: a stalled transfer fails the
/// row instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&words) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            println!("VSOCK-ERROR {}: {e}", words.join(" "));
            ExitCode::FAILURE
        }
    }
}

fn number<T: std::str::FromStr>(text: Option<&&str>) -> io::Result<T> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "missing or bad number"))
}

/// A byte count with an optional K or M suffix.
fn size(text: &str) -> io::Result<u64> {
    let (digits, unit) = match text.strip_suffix(['K', 'M']) {
        Some(digits) if text.ends_with('K') => (digits, 1 << 10),
        Some(digits) => (digits, 1 << 20),
        None => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("bad size {text:?}")))
}

/// A connector's role for `N` (each way) or `SENT,BACK`.
fn connector(bytes: &str) -> io::Result<Role> {
    let (sent, back) = match bytes.split_once(',') {
        Some((sent, back)) => (size(sent)?, size(back)?),
        None => (size(bytes)?, size(bytes)?),
    };
    Ok(Role::Connector { sent, back })
}

/// What may follow a connect mode's BYTES: `FIRST=SIZES` (connection 0's
/// sizes) and, for AF_VSOCK, `BUF=N` (each socket's buffer size).
struct Extras {
    first: Option<Role>,
    buffer: Option<u64>,
}

fn extras(words: &[&str]) -> io::Result<Extras> {
    let mut extras = Extras {
        first: None,
        buffer: None,
    };
    for word in words {
        match word.split_once('=') {
            Some(("FIRST", sizes)) => extras.first = Some(connector(sizes)?),
            Some(("BUF", n)) => extras.buffer = Some(size(n)?),
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("expected FIRST=SIZES or BUF=N, got {word:?}"),
                ))
            }
        }
    }
    Ok(extras)
}

/// The role of connection `index` for BYTES and the extras.
fn connector_roles(bytes: &str, extras: &Extras) -> io::Result<impl Fn(u32) -> Role> {
    let role = connector(bytes)?;
    let first = extras.first.unwrap_or(role);
    Ok(move |index| if index == 0 { first } else { role })
}

fn acceptor(stall_s: Option<&&str>) -> io::Result<impl Fn(u32) -> Role> {
    let stall = Duration::from_secs(stall_s.map_or(Ok(0), |s| number(Some(s)))?);
    Ok(move |_| Role::Acceptor { stall })
}

fn run(words: &[&str]) -> io::Result<bool> {
    let mode = words.first().copied().unwrap_or("");
    let arg = |i: usize| words.get(i).copied().unwrap_or("");
    match mode {
        "listen-vsock" => {
            let listener = vsock::Listener::bind(number(words.get(1))?)?;
            println!("VSOCK-LISTENING port={}", arg(1));
            serve_all(mode, acceptor(None)?, number(words.get(2))?, |_| {
                Ok(Box::new(listener.accept()?))
            })
        }
        "connect-vsock" => {
            let port = number(words.get(1))?;
            let extras = extras(words.get(4..).unwrap_or_default())?;
            let roles = connector_roles(arg(3), &extras)?;
            serve_all(mode, roles, number(words.get(2))?, |_| {
                let stream = vsock::Stream::connect(vsock::HOST_CID, port, extras.buffer)?;
                Ok(Box::new(stream))
            })
        }
        "listen-unix" => {
            let _ = std::fs::remove_file(arg(1));
            let listener = UnixListener::bind(arg(1))?;
            println!("VSOCK-LISTENING path={}", arg(1));
            let roles = acceptor(words.get(3))?;
            serve_all(mode, roles, number(words.get(2))?, |_| {
                Ok(Box::new(listener.accept()?.0))
            })
        }
        "connect-unix" => {
            let (uds, port) = (arg(1), number::<u32>(words.get(2))?);
            let roles = connector_roles(arg(4), &extras(words.get(5..).unwrap_or_default())?)?;
            serve_all(mode, roles, number(words.get(3))?, |_| {
                Ok(Box::new(connect_through(uds, port)?))
            })
        }
        "listen-tcp" => {
            let listener = TcpListener::bind(arg(1))?;
            println!("VSOCK-LISTENING tcp={}", arg(1));
            serve_all(mode, acceptor(None)?, number(words.get(2))?, |_| {
                Ok(Box::new(listener.accept()?.0))
            })
        }
        "connect-tcp" => {
            let roles = connector_roles(arg(3), &extras(words.get(4..).unwrap_or_default())?)?;
            serve_all(mode, roles, number(words.get(2))?, |_| {
                Ok(Box::new(TcpStream::connect(arg(1))?))
            })
        }
        "refused-vsock" => {
            let start = Instant::now();
            let result = vsock::Stream::connect(vsock::HOST_CID, number(words.get(1))?, None);
            let ms = start.elapsed().as_millis();
            println!(
                "VSOCK-REFUSED mode={mode} refused={} ms={ms}",
                result.is_err()
            );
            Ok(result.is_err())
        }
        "refused-unix" => {
            let (uds, port) = (arg(1), number::<u32>(words.get(2))?);
            let refused = connect_through(uds, port).is_err();
            println!("VSOCK-REFUSED mode={mode} refused={refused}");
            Ok(refused)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unknown mode (see main.rs)",
        )),
    }
}

/// A host-initiated connection: `CONNECT <port>` on tandem's socket, and
/// its `OK <host port>` answer read a byte at a time (data follows it).
fn connect_through(uds: &str, port: u32) -> io::Result<UnixStream> {
    let mut stream = UnixStream::connect(uds)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut reader = BufReader::with_capacity(1, &stream);
    reader.read_until(b'\n', &mut line)?;
    if !line.starts_with(b"OK ") || !line.ends_with(b"\n") {
        let text = String::from_utf8_lossy(&line).into_owned();
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("answer {text:?}"),
        ));
    }
    Ok(stream)
}

/// Opens `conns` connections with `open` (in order: the index each one
/// carries), serves them all at once on threads, prints a line for each
/// and the total; true if every one matched.
fn serve_all(
    mode: &str,
    role_of: impl Fn(u32) -> Role,
    conns: u32,
    mut open: impl FnMut(u32) -> io::Result<Box<dyn Conn>>,
) -> io::Result<bool> {
    let start = Instant::now();
    let mut threads = Vec::new();
    let mut slowest_open = Duration::ZERO;
    for index in 0..conns {
        let opening = Instant::now();
        let conn = open(index)?;
        slowest_open = slowest_open.max(opening.elapsed());
        conn.set_timeouts(IO_TIMEOUT)?;
        let role = role_of(index);
        threads.push(std::thread::spawn(move || {
            serve_connection(conn, role, index)
        }));
    }
    let mut ok = 0;
    let mut total = 0u64;
    for thread in threads {
        let report: io::Result<Report> = thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("connection thread panicked")));
        match report {
            Ok(report) => {
                println!("VSOCK-CONN mode={mode} {report}");
                total += report.sent + report.received;
                ok += u32::from(report.matched());
            }
            Err(e) => println!("VSOCK-CONN mode={mode} error={e}"),
        }
    }
    let ms = start.elapsed().as_millis().max(1);
    println!(
        "VSOCK-DONE mode={mode} conns={conns} ok={ok} bytes={total} kBps={} slowest_open_ms={}",
        u128::from(total) * 1000 / 1024 / ms,
        slowest_open.as_millis()
    );
    Ok(ok == conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes_and_refuse_junk() {
        assert_eq!(size("64M").unwrap(), 64 << 20);
        assert_eq!(size("3K").unwrap(), 3 << 10);
        assert_eq!(size("7").unwrap(), 7);
        for bad in ["", "M", "1G", "-1", "99999999999999999M"] {
            assert!(size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_first_connection_may_carry_its_own_sizes() {
        let extras = extras(&["FIRST=2K,0", "BUF=1M"]).unwrap();
        assert_eq!(extras.buffer, Some(1 << 20));
        let roles = connector_roles("1M", &extras).unwrap();
        assert!(matches!(
            roles(0),
            Role::Connector {
                sent: 2048,
                back: 0
            }
        ));
        assert!(matches!(
            roles(1),
            Role::Connector {
                sent: 1048576,
                back: 1048576
            }
        ));
        assert!(extras_rejects("2K"));
        assert!(extras_rejects("FIRST=x"));
        assert!(extras_rejects("BUF=1,2"));
    }

    fn extras_rejects(word: &str) -> bool {
        extras(&[word]).is_err()
    }
}
