//! Both ends of the vsock end-to-end rows (ci/vsock-e2e.sh), one static
//! program for the guest and the emulated host:
//!
//! ```text
//! tandem-vsock-e2e listen-vsock PORT CONNS          guest: accept CONNS on AF_VSOCK PORT
//! tandem-vsock-e2e connect-vsock PORT CONNS BYTES    guest: CONNS connections to host CID 2
//! tandem-vsock-e2e listen-unix PATH CONNS            host: accept CONNS on PATH (<uds>_<port>)
//! tandem-vsock-e2e connect-unix UDS PORT CONNS BYTES host: CONNS x `CONNECT PORT` on UDS
//! tandem-vsock-e2e refused-vsock PORT                guest: a connect nobody listens for fails
//! tandem-vsock-e2e refused-unix UDS PORT             host: such a CONNECT is closed without OK
//! ```
//!
//! Every connection carries BYTES each way at once (stream.rs), checked
//! against the generator on arrival; one `VSOCK-CONN` line per connection
//! and a `VSOCK-DONE` line with the counts. Exit status 0 when all matched.

mod stream;
mod vsock;

use std::io::{self, BufRead, BufReader, Write};
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

fn run(words: &[&str]) -> io::Result<bool> {
    let mode = words.first().copied().unwrap_or("");
    let arg = |i: usize| words.get(i).copied().unwrap_or("");
    match mode {
        "listen-vsock" => {
            let listener = vsock::Listener::bind(number(words.get(1))?)?;
            println!("VSOCK-LISTENING port={}", arg(1));
            let conns = number(words.get(2))?;
            serve_all(mode, Role::Acceptor, conns, |_| {
                Ok(Box::new(listener.accept()?))
            })
        }
        "connect-vsock" => {
            let port = number(words.get(1))?;
            let bytes = number(words.get(3))?;
            serve_all(
                mode,
                Role::Connector { bytes },
                number(words.get(2))?,
                |_| Ok(Box::new(vsock::Stream::connect(vsock::HOST_CID, port)?)),
            )
        }
        "listen-unix" => {
            let _ = std::fs::remove_file(arg(1));
            let listener = UnixListener::bind(arg(1))?;
            println!("VSOCK-LISTENING path={}", arg(1));
            serve_all(mode, Role::Acceptor, number(words.get(2))?, |_| {
                Ok(Box::new(listener.accept()?.0))
            })
        }
        "connect-unix" => {
            let (uds, port) = (arg(1), number::<u32>(words.get(2))?);
            let bytes = number(words.get(4))?;
            serve_all(
                mode,
                Role::Connector { bytes },
                number(words.get(3))?,
                |_| Ok(Box::new(connect_through(uds, port)?)),
            )
        }
        "refused-vsock" => {
            let start = Instant::now();
            let result = vsock::Stream::connect(vsock::HOST_CID, number(words.get(1))?);
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
    role: Role,
    conns: u32,
    mut open: impl FnMut(u32) -> io::Result<Box<dyn Conn>>,
) -> io::Result<bool> {
    let start = Instant::now();
    let mut threads = Vec::new();
    for index in 0..conns {
        let conn = open(index)?;
        conn.set_timeouts(IO_TIMEOUT)?;
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
        "VSOCK-DONE mode={mode} conns={conns} ok={ok} bytes={total} kBps={}",
        u128::from(total) * 1000 / 1024 / ms
    );
    Ok(ok == conns)
}
