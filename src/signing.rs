//! Signing and verification: the only module that touches ed25519/SSHSIG (stub, owned by the signing task).
