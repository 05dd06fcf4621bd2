//! `AllowedSigners::parse` on arbitrary text (bytes read lossily as UTF-8, as the
//! callers refuse invalid UTF-8 before it): never panics, errors render, keys and skipped
//! lines are no more than the lines, every key has a line in range and a principal.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockstep_fuzz::check_signers(&String::from_utf8_lossy(data));
});
