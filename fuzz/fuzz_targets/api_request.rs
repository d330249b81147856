//! Feeds `parse_request(method, path, body)` (src/api/routes.rs), the
//! API's routing table, the way a connection thread hands a request over
//! after HTTP framing. Input: `METHOD PATH` on the first line, the body
//! after the newline (seeds: one real request per endpoint). A request
//! must route the same way twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem::api::parse_request;

fuzz_target!(|data: &[u8]| {
    let (line, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let line = String::from_utf8_lossy(line);
    let (method, path) = line.split_once(' ').unwrap_or((&line, ""));
    let first = parse_request(method, path, body);
    let second = parse_request(method, path, body);
    assert_eq!(first, second, "routing is not deterministic");
});
