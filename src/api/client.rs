//! The client side of the API: `tandem api`, one request to a tandem (or
//! Firecracker) API socket, for scripts and for minimal hosts without
//! curl — the role ch-remote plays for Cloud Hypervisor; and `tandem
//! snapshot`, the requests that save a running VM.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::config::SnapshotArgs;

/// How long one request may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `method path [body]` to the socket at `socket`; returns the
/// status code and the body.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    // Read the head, then exactly Content-Length bytes: a server may keep
    // the connection open whatever the request asked (Firecracker does).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_len, body_len) = loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
        let n = stream.read(&mut chunk).context("reading the answer")?;
        if n == 0 {
            bail!("the answer has no complete HTTP head");
        }
        answer.extend_from_slice(&chunk[..n]);
    };
    while answer.len() < head_len + body_len {
        let n = stream.read(&mut chunk).context("reading the answer")?;
        if n == 0 {
            bail!("the answer ended before its body did");
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&answer[..head_len]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("the answer has no status code")?;
    let body = String::from_utf8_lossy(&answer[head_len..head_len + body_len]);
    Ok((status, body.into_owned()))
}

/// `tandem snapshot`: pauses the VM behind `args.api_sock` if it runs,
/// saves it, and resumes it unless told to keep it paused — also when the
/// save failed, so a failed snapshot leaves the VM as it was. Returns what
/// was done, in one line.
pub fn snapshot(args: &SnapshotArgs) -> Result<String> {
    let socket = &args.api_sock;
    let running = request(socket, "GET", "/", None)?["state"] == "Running";
    if running {
        request(socket, "PATCH", "/vm", Some(json!({"state": "Paused"})))?;
    }
    let kind = if args.diff { "Diff" } else { "Full" };
    let create = json!({
        "snapshot_path": args.snapshot_path,
        "mem_file_path": args.mem_file_path,
        "snapshot_type": kind,
    });
    let created = request(socket, "PUT", "/snapshot/create", Some(create));
    let resumed = match running && !args.keep_paused {
        true => request(socket, "PATCH", "/vm", Some(json!({"state": "Resumed"}))).map(drop),
        false => Ok(()),
    };
    created.context("the snapshot failed")?;
    resumed.context("the snapshot was saved, but resuming the VM failed")?;
    let now = match running && !args.keep_paused {
        true => "running again",
        false => "paused",
    };
    Ok(format!(
        "{kind} snapshot saved to {} and {}; the VM is {now}",
        args.snapshot_path.display(),
        args.mem_file_path.display()
    ))
}

/// One request; its JSON answer, or the fault it carried as the error.
fn request(socket: &Path, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let body = body.map(|body| body.to_string());
    let (status, answer) = call(socket, method, path, body.as_deref())?;
    let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let fault = answer["fault_message"]
            .as_str()
            .unwrap_or("no fault message");
        bail!("{method} {path}: HTTP {status}: {fault}");
    }
    Ok(answer)
}
