//! The control protocol's request parser on arbitrary bytes: must never panic, and whatever it
//! accepts must serialize back to a request it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xvs_switch::control::proto::parse_request;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_request(data) {
        let line = serde_json::to_vec(&req).expect("serializes");
        assert_eq!(parse_request(&line).expect("round trip"), req);
    }
});
