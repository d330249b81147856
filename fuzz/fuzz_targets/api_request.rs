//! Feeds `parse_request(method, path, body)` (src/api/routes.rs), the
//! API's routing table, with an arbitrary method, path and body, the way a
//! connection thread hands them over after HTTP framing. A request that
//! parses must route to the same `ApiRequest` a second time.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tandem::api::parse_request;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: Method<'a>,
    path: &'a str,
    body: &'a [u8],
}

/// Mostly the methods the API knows, so the fuzzer gets past routing.
#[derive(Arbitrary, Debug)]
enum Method<'a> {
    Get,
    Put,
    Patch,
    Other(&'a str),
}

fuzz_target!(|input: Input<'_>| {
    let method = match input.method {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Other(m) => m,
    };
    let first = parse_request(method, input.path, input.body);
    let second = parse_request(method, input.path, input.body);
    assert_eq!(first, second, "routing is not deterministic");
});
