//! The one reading on arbitrary bytes, with the fixtures' scan config: `scan_file` never
//! panics; what it accepts has exact image spans, bodies that survive JSON, and reads the
//! same again from `render_objects`' output (`lockstep_fuzz::check_reader`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockstep_fuzz::check_reader("fuzz.yaml", data);
});
