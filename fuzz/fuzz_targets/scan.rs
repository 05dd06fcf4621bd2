//! The manifest scanner on arbitrary bytes, with the fixtures' scan config: never panics,
//! every image use points inside the file, errors render.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockstep_fuzz::check_scan("fuzz.yaml", data);
});
