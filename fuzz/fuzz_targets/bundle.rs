//! Sigstore bundles and DSSE envelopes, as a registry hands them to `lock`: never panic,
//! stay bounded, and nothing verifies under a key the fuzzer does not hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lockstep_fuzz::check_bundle(data);
});
