//! A tandem process serving Firecracker's API in a temp dir, and the
//! client calls the API tests make on it. Not every test file uses every
//! helper.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmm_sys_util::tempdir::TempDir;

pub fn sigterm(pid: u32) {
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// One tandem process serving its API in a temp dir.
pub struct Vmm {
    pub child: Child,
    pub dir: TempDir,
    pub socket: PathBuf,
}

impl Vmm {
    /// tandem with `extra` flags, the guest console discarded.
    pub fn spawn(extra: &[&str]) -> Vmm {
        Vmm::spawn_with_stdout(extra, Stdio::null())
    }

    /// tandem with `extra` flags; its stdout (the guest console) goes to
    /// `stdout`.
    pub fn spawn_with_stdout(extra: &[&str], stdout: Stdio) -> Vmm {
        let dir = TempDir::new().unwrap();
        let socket = dir.as_path().join("api.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--api-sock")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let vmm = Vmm { child, dir, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&vmm.socket).is_err() {
            assert!(Instant::now() < deadline, "the API socket never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        vmm
    }

    /// Sends one request; returns the status and the parsed body.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.raw(&format!("{head}{body}"))
    }

    pub fn raw(&self, request: &str) -> (u16, Value) {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    pub fn ok(&self, method: &str, path: &str, body: Value) {
        let (status, answer) = self.call(method, path, Some(body));
        assert_eq!(status, 204, "{method} {path}: {answer}");
    }

    /// A 400 whose fault_message contains `words`.
    pub fn fault(&self, method: &str, path: &str, body: Option<Value>, words: &str) {
        let (status, answer) = self.call(method, path, body);
        assert_eq!(status, 400, "{method} {path}: {answer}");
        let message = answer["fault_message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{method} {path}: {message}");
    }

    pub fn state(&self) -> String {
        let (status, info) = self.call("GET", "/", None);
        assert_eq!(status, 200);
        info["state"].as_str().unwrap().to_string()
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.as_path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    /// SIGTERM; returns the exit code and stderr.
    pub fn terminate(mut self) -> (Option<i32>, String) {
        sigterm(self.child.id());
        let status = self.child.wait().unwrap();
        let mut stderr = String::new();
        let _ = self
            .child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr);
        assert!(!self.socket.exists(), "the API socket outlived tandem");
        (status.code(), stderr)
    }
}

impl Drop for Vmm {
    /// A failed assertion must not leave a spinning guest behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
