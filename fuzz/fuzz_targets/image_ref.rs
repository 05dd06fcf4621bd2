//! `ImageRef::parse` on arbitrary UTF-8: never panics, errors render, and what parses
//! round-trips through Display (parse(show(r)) == r, and showing it again is stable).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        lockstep_fuzz::check_ref(text);
    }
});
