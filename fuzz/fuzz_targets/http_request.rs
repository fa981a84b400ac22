//! Requests into `BayeuxService::handle`: long-poll JSON and form bodies, JSONP query
//! parameters, cookies, origins, methods and paths. The input is a raw request (request line,
//! headers, empty line, body) so the seeds are readable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bayeux_fuzz::http::harness().check_raw(data));
