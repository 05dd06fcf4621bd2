//! Signature verification of one armored SSHSIG over a fixed message, against a fixed
//! allowed_signers line: never panics, accepts the genuine signature, accepts nothing
//! else (see `check_signature`).
//!
//! The first byte picks the mode: even, the rest is the armored text as found in a
//! `.sig` file; odd, the rest is the SSHSIG blob, armored here as OpenSSH does, which gets
//! the mutations past base64 into the SSHSIG fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let armored = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        lockstep_fuzz::armor(rest)
    };
    lockstep_fuzz::check_signature(armored);
});
