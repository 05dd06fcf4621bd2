//! Signing and verification: the only module that touches ed25519 and OpenSSH's SSHSIG format.
//!
//! - [`SigningKey`] loads an OpenSSH ed25519 private key (or makes one) and signs the exact
//!   bytes of `lockstep.lock` as an armored SSHSIG in the [`NAMESPACE`] `lockstep`, which
//!   `ssh-keygen -Y verify -n lockstep` accepts.
//! - [`AllowedSigners`] reads the trusted keys from a Git/OpenSSH `allowed_signers` file.
//! - [`verify`] checks detached signatures against those keys *before* anything parses the
//!   lockfile, and hands out the only way to get at verified bytes: [`Verified`].
//!
//! Pure: no file system, no clock (the verification time is an argument), no printing.

mod allowed_signers;
mod key;
mod probe;
mod verify;

pub use allowed_signers::{AllowedSigners, AllowedSignersProblem, SkippedKey, TrustedKey};
pub use key::{OpenSshKeyHeader, OpenSshKeyHeaderError, SigningKey, signer_name};
pub use verify::{
    RejectedSignature, SignatureFile, SignatureProblem, SignerReport, ValidityWindow, Verified,
    VerifyError, approvals_stand, verify,
};

/// The SSHSIG namespace of every lockstep signature: a signature made for another purpose
/// (`git`, `file`) can never be replayed as a lockfile approval.
pub const NAMESPACE: &str = "lockstep";
/// The namespace Git signs commits in with SSH keys (`gpg.format=ssh`): a lockfile
/// signature can never pass for a commit signature, nor the reverse.
pub const GIT_NAMESPACE: &str = "git";

/// Errors from loading, making or using a signing key and from reading `allowed_signers`.
///
/// No variant carries key material: the key text and the passphrase never reach a message.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The text is not an OpenSSH private key at all.
    #[error("the signing key is not an OpenSSH private key: {hint}")]
    NotOpenSshPrivateKey {
        /// What the text looks like instead, and what to do.
        hint: &'static str,
    },
    /// The text is an OpenSSH private key, but it does not decode.
    #[error("the signing key is not a valid OpenSSH private key")]
    InvalidPrivateKey {
        /// What ssh-key found wrong.
        #[source]
        source: ssh_key::Error,
    },
    /// The key is not an ed25519 key.
    #[error(
        "the signing key is of type {algorithm}; lockstep signs with ed25519 keys only \
         (make one with `lockstep keygen` or `ssh-keygen -t ed25519`)"
    )]
    UnsupportedKeyType {
        /// The OpenSSH key type name, e.g. `ssh-rsa`.
        algorithm: String,
    },
    /// The key is encrypted and no passphrase was given.
    #[error("the signing key is encrypted with a passphrase, and none was given")]
    PassphraseRequired,
    /// The passphrase does not decrypt the key.
    #[error("the passphrase does not decrypt the signing key")]
    WrongPassphrase,
    /// A key comment must fit on the one line of an OpenSSH public key.
    #[error("a key comment cannot contain a line break")]
    InvalidComment,
    /// The operating system's random number generator failed while making a key.
    #[error("could not get random bytes for a new key")]
    Random {
        /// The generator's failure.
        #[source]
        source: ssh_key::getrandom::Error,
    },
    /// Signing failed inside the ed25519 implementation.
    #[error("could not sign with the key {fingerprint}")]
    Sign {
        /// Which key.
        fingerprint: String,
        /// The underlying failure.
        #[source]
        source: ssh_key::Error,
    },
    /// A line of an `allowed_signers` file is invalid.
    #[error("{file}:{line}: {problem}")]
    AllowedSigners {
        /// The name the caller gave the file (usually its path).
        file: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        problem: AllowedSignersProblem,
        /// The key decoder's error, when the key itself is broken (it quotes the line's
        /// bytes, so it is kept escaped).
        #[source]
        cause: Option<crate::error_chain::Quoting>,
    },
}
