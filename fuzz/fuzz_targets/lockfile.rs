//! `Lockfile::parse_unverified` on arbitrary bytes: never panics, errors render, and what
//! parses serializes (`to_bytes`) to bytes that parse to the same lockfile.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockstep_fuzz::check_lockfile(data);
});
