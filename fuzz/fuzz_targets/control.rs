//! The control socket's request parser: one line of JSON, as `control::serve` reads it. A
//! request that parses must serialize and parse back to the same thing.
#![no_main]

use guard_user::control::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(req) = serde_json::from_str::<Request>(line) {
        let again = serde_json::to_string(&req).expect("a parsed request serializes");
        let back: Request = serde_json::from_str(&again).expect("a serialized request parses");
        assert_eq!(format!("{req:?}"), format!("{back:?}"));
    }
});
