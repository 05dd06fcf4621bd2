//! The signing key: an OpenSSH ed25519 private key, loaded or made, that signs lockfiles.

use std::fmt;

use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
use zeroize::Zeroizing;

use super::{NAMESPACE, SigningError, probe};

/// An ed25519 signing key.
///
/// The secret half lives in ssh-key's `Ed25519PrivateKey`, which zeroizes itself on drop;
/// this type never copies it out except through [`SigningKey::to_openssh`], whose result
/// zeroizes itself too. `Debug` shows the fingerprint only.
pub struct SigningKey {
    key: PrivateKey,
}

impl SigningKey {
    /// Loads an OpenSSH private key (the text `ssh-keygen -t ed25519` writes), decrypting it
    /// with `passphrase` when it is encrypted (a passphrase for an unencrypted key is ignored,
    /// as ssh-keygen does). Keys of any type but ed25519 are refused.
    pub fn from_openssh(text: &str, passphrase: Option<&str>) -> Result<SigningKey, SigningError> {
        // Keys pasted into CI secrets often gain or lose surrounding blank lines.
        let text = text.trim();
        let key = match PrivateKey::from_openssh(text) {
            Ok(key) => key,
            Err(source) => return Err(classify_unreadable_key(text, source)),
        };
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(SigningError::UnsupportedKeyType {
                algorithm: key.algorithm().as_str().to_owned(),
            });
        }
        let key = if key.is_encrypted() {
            let passphrase = passphrase.ok_or(SigningError::PassphraseRequired)?;
            key.decrypt(passphrase).map_err(|source| match source {
                // A wrong passphrase yields garbage whose check integers disagree (or, for
                // AEAD ciphers, a failed tag): both surface as `Crypto`.
                ssh_key::Error::Crypto => SigningError::WrongPassphrase,
                source => SigningError::InvalidPrivateKey { source },
            })?
        } else {
            key
        };
        Ok(SigningKey { key })
    }

    /// Makes a new random ed25519 key (for `lockstep keygen`).
    pub fn generate(comment: &str) -> Result<SigningKey, SigningError> {
        if comment.contains(['\n', '\r']) {
            return Err(SigningError::InvalidComment);
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        ssh_key::getrandom::fill(seed.as_mut_slice())
            .map_err(|source| SigningError::Random { source })?;
        let keypair = Ed25519Keypair::from_seed(&seed);
        let key = PrivateKey::new(KeypairData::from(keypair), comment)
            .map_err(|source| SigningError::InvalidPrivateKey { source })?;
        Ok(SigningKey { key })
    }

    /// The private key in OpenSSH format, unencrypted (what `ssh-keygen -N ''` writes).
    pub fn to_openssh(&self) -> Zeroizing<String> {
        // Encoding an in-memory, unencrypted ed25519 key only fails on length overflow,
        // which a 32-byte key and a one-line comment cannot reach.
        self.key
            .to_openssh(LineEnding::LF)
            .expect("an unencrypted ed25519 key always encodes")
    }

    /// The public key as one OpenSSH line: `ssh-ed25519 AAAA… comment`.
    pub fn public_openssh(&self) -> String {
        self.key
            .public_key()
            .to_openssh()
            .expect("an ed25519 public key always encodes")
    }

    /// An `allowed_signers` line that trusts this key for `principal`, for lockstep only.
    /// The principal is quoted when it holds blanks or commas or starts with `#` (it cannot
    /// hold a double quote: the format has no escape for one there).
    pub fn allowed_signers_line(&self, principal: &str) -> String {
        let needs_quotes = principal.is_empty()
            || principal.starts_with('#')
            || principal.contains([' ', '\t', ',']);
        let principal = if needs_quotes {
            format!("\"{principal}\"")
        } else {
            principal.to_owned()
        };
        format!(
            "{principal} namespaces=\"{NAMESPACE}\" {}",
            self.public_openssh()
        )
    }

    /// The key's comment (often `user@host`; may be empty).
    pub fn comment(&self) -> &str {
        self.key.comment().as_str_lossy()
    }

    /// The OpenSSH fingerprint, `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The default signer name for this key: [`signer_name`] of its comment.
    pub fn signer_name(&self) -> String {
        signer_name(self.comment(), &self.fingerprint())
    }

    /// Signs `message` (the exact lockfile bytes): an armored SSHSIG
    /// (`-----BEGIN SSH SIGNATURE-----`) in namespace `lockstep` with sha512, the same as
    /// `ssh-keygen -Y sign -n lockstep` makes.
    pub fn sign(&self, message: &[u8]) -> Result<String, SigningError> {
        self.sign_in(NAMESPACE, message)
    }

    /// Signs a Git commit object's bytes (without its `gpgsig` header) as `git commit -S`
    /// does with `gpg.format=ssh`: an armored SSHSIG in namespace `git` with sha512, which
    /// `git verify-commit` checks against `gpg.ssh.allowedSignersFile`.
    pub fn sign_git_commit(&self, commit: &[u8]) -> Result<String, SigningError> {
        self.sign_in(super::GIT_NAMESPACE, commit)
    }

    fn sign_in(&self, namespace: &str, message: &[u8]) -> Result<String, SigningError> {
        let sign_error = |source| SigningError::Sign {
            fingerprint: self.fingerprint(),
            source,
        };
        self.key
            .sign(namespace, HashAlg::Sha512, message)
            .map_err(sign_error)?
            .to_pem(LineEnding::LF)
            .map_err(sign_error)
    }
}

#[cfg(test)]
impl SigningKey {
    /// Signs like ssh-keygen would with other `-n` namespaces and hashes (tests only).
    pub(crate) fn sign_with(&self, namespace: &str, hash: HashAlg, message: &[u8]) -> String {
        self.key
            .sign(namespace, hash, message)
            .unwrap()
            .to_pem(LineEnding::LF)
            .unwrap()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Why ssh-key could not read a key: another key type, another format, or corruption.
fn classify_unreadable_key(text: &str, source: ssh_key::Error) -> SigningError {
    if let Some(algorithm) = probe::private_key_type(text)
        && algorithm != Algorithm::Ed25519.as_str()
    {
        return SigningError::UnsupportedKeyType { algorithm };
    }
    if text.starts_with(OPENSSH_BEGIN) {
        return SigningError::InvalidPrivateKey { source };
    }
    let hint = if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
        "this is a public key (a .pub file); give the private key file instead"
    } else if text.starts_with("-----BEGIN") && text.contains("PRIVATE KEY-----") {
        "this is a PEM/PKCS#8 private key; lockstep reads the OpenSSH format \
         (-----BEGIN OPENSSH PRIVATE KEY-----) that `ssh-keygen -t ed25519` writes"
    } else {
        "expected text starting with -----BEGIN OPENSSH PRIVATE KEY-----, \
         as `ssh-keygen -t ed25519` writes"
    };
    SigningError::NotOpenSshPrivateKey { hint }
}

const OPENSSH_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const OPENSSH_END: &str = "-----END OPENSSH PRIVATE KEY-----";

/// What the unencrypted header of an OpenSSH private key (`openssh-key-v1`, PROTOCOL.key)
/// says, read without a passphrase and without decoding the key: whether the private half
/// is encrypted, and the type of the key. The one reader of that header, for signing keys
/// and for deploy keys alike (whatever their type: ECDSA and RSA deploy keys are read too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSshKeyHeader {
    /// The cipher of the private half: `none` when it is not encrypted.
    pub cipher: String,
    /// The type of the first public key (`ssh-ed25519`, `ecdsa-sha2-nistp256`, ...), when
    /// the header holds it whole.
    pub key_type: Option<String>,
}

/// Why a text has no readable OpenSSH private key header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenSshKeyHeaderError {
    #[error("no -----BEGIN OPENSSH PRIVATE KEY----- line at the start")]
    NoBeginLine,
    #[error("no -----END OPENSSH PRIVATE KEY----- line at the end")]
    NoEndLine,
    #[error("the OpenSSH key is not valid base64")]
    NotBase64,
    #[error("not an openssh-key-v1 key")]
    NotKeyV1,
    #[error("the OpenSSH key header is cut short")]
    CutShort,
}

impl OpenSshKeyHeader {
    /// Read the header of the armored key `text` (surrounding whitespace ignored).
    pub fn read(text: &str) -> Result<OpenSshKeyHeader, OpenSshKeyHeaderError> {
        use ssh_key::encoding::base64::{Base64, Encoding as _};
        let rest = text
            .trim()
            .strip_prefix(OPENSSH_BEGIN)
            .ok_or(OpenSshKeyHeaderError::NoBeginLine)?;
        let body = rest
            .trim_end()
            .strip_suffix(OPENSSH_END)
            .ok_or(OpenSshKeyHeaderError::NoEndLine)?;
        let body: String = body.split_whitespace().collect();
        let bytes = Zeroizing::new(
            Base64::decode_vec(&body).map_err(|_| OpenSshKeyHeaderError::NotBase64)?,
        );
        let mut rest = bytes
            .strip_prefix(b"openssh-key-v1\0")
            .ok_or(OpenSshKeyHeaderError::NotKeyV1)?;
        let cipher = ssh_string(&mut rest).ok_or(OpenSshKeyHeaderError::CutShort)?;
        let cipher = String::from_utf8_lossy(cipher).into_owned();
        // kdf name, kdf options, the number of keys, then the first public key, whose blob
        // starts with its type. The private half that follows is never looked at.
        let key_type = (|| {
            ssh_string(&mut rest)?;
            ssh_string(&mut rest)?;
            rest = rest.get(4..)?;
            let mut blob = ssh_string(&mut rest)?;
            let key_type = ssh_string(&mut blob)?;
            String::from_utf8(key_type.to_vec()).ok()
        })();
        Ok(OpenSshKeyHeader { cipher, key_type })
    }

    /// Whether the private half needs a passphrase.
    pub fn is_encrypted(&self) -> bool {
        self.cipher != "none"
    }
}

/// The next SSH `string` (a big-endian u32 length, then that many bytes) of `bytes`.
fn ssh_string<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = bytes.get(..4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let value = bytes.get(4..4usize.checked_add(len)?)?;
    *bytes = &bytes[4 + len..];
    Some(value)
}

/// The longest signer name [`signer_name`] makes.
const MAX_SIGNER_NAME: usize = 64;

/// A file-name-safe signer name for `lockstep.lock.<signer>.sig`, from a key comment.
///
/// Keeps `[A-Za-z0-9._-]`, turns every other character into `-` (runs of `-` collapse to
/// one), trims `-` and `.` from both ends and keeps at most 64 characters. An empty result
/// (no comment, or nothing usable in it) falls back to `key-` and the first 16 characters of
/// the fingerprint's hash, so the name is still stable for the key.
pub fn signer_name(comment: &str, fingerprint: &str) -> String {
    let name = sanitize(comment);
    if !name.is_empty() {
        return name;
    }
    let hash = fingerprint
        .split_once(':')
        .map_or(fingerprint, |(_, hash)| hash);
    let hash: String = hash.chars().take(16).collect();
    let hash = sanitize(&hash);
    if hash.is_empty() {
        "key".to_owned()
    } else {
        format!("key-{hash}")
    }
}

fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SIGNER_NAME));
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed = trim_name(&out);
    // Every kept character is ASCII, so byte positions are character positions.
    let truncated = &trimmed[..trimmed.len().min(MAX_SIGNER_NAME)];
    trim_name(truncated).to_owned()
}

fn trim_name(name: &str) -> &str {
    name.trim_matches(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_name_keeps_safe_characters() {
        assert_eq!(signer_name("ci@example", "SHA256:x"), "ci-example");
        assert_eq!(
            signer_name("release-bot_2.0", "SHA256:x"),
            "release-bot_2.0"
        );
        assert_eq!(
            signer_name("Jane Doe <jane@example.com>", "SHA256:x"),
            "Jane-Doe-jane-example.com"
        );
        assert_eq!(signer_name("  ..ci..  ", "SHA256:x"), "ci");
        assert_eq!(signer_name("zoë/../../etc", "SHA256:x"), "zo-..-..-etc");
    }

    #[test]
    fn signer_name_is_at_most_64_characters_and_never_ends_in_a_separator() {
        let long = format!("{}@{}", "a".repeat(63), "b".repeat(40));
        let name = signer_name(&long, "SHA256:x");
        assert_eq!(name, "a".repeat(63));
        let name = signer_name(&"é".repeat(100), "SHA256:x");
        assert!(name.starts_with("key-"), "{name}");
        let name = signer_name(&"x".repeat(200), "SHA256:x");
        assert_eq!(name.len(), 64);
    }

    #[test]
    fn signer_name_falls_back_to_the_fingerprint() {
        let fp = "SHA256:L5g/Ek1/XL6fLY12qpWcIQf/IjTtefyydrLbfvcYH7Q";
        assert_eq!(signer_name("", fp), "key-L5g-Ek1-XL6fLY12");
        assert_eq!(signer_name("@@@", fp), "key-L5g-Ek1-XL6fLY12");
        assert_eq!(signer_name("", ""), "key");
    }

    #[test]
    fn generated_key_round_trips_through_openssh_text() {
        let key = SigningKey::generate("ci@example").unwrap();
        assert_eq!(key.comment(), "ci@example");
        assert!(key.public_openssh().starts_with("ssh-ed25519 AAAA"));
        assert!(key.public_openssh().ends_with(" ci@example"));
        assert!(key.fingerprint().starts_with("SHA256:"));
        let again = SigningKey::from_openssh(&key.to_openssh(), None).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
        assert_eq!(again.comment(), "ci@example");
        assert_eq!(key.signer_name(), "ci-example");
    }

    #[test]
    fn key_text_survives_crlf_and_surrounding_blank_lines() {
        // What a CI secret pasted from a Windows editor looks like.
        let key = SigningKey::generate("ci").unwrap();
        let text = format!("\r\n  {}\r\n\r\n", key.to_openssh().replace('\n', "\r\n"));
        let again = SigningKey::from_openssh(&text, None).unwrap();
        assert_eq!(again.fingerprint(), key.fingerprint());
    }

    #[test]
    fn allowed_signers_line_parses_back_to_the_principal() {
        let key = SigningKey::generate("ci").unwrap();
        for principal in ["ci@example", "Release Team", "a,b", "#ops"] {
            let line = key.allowed_signers_line(principal);
            let trust = crate::signing::AllowedSigners::parse(&line, "x").unwrap();
            let expected: Vec<&str> = principal.split(',').collect();
            assert_eq!(trust.keys()[0].principals(), expected, "{line}");
            assert_eq!(trust.keys()[0].fingerprint(), key.fingerprint());
            assert_eq!(trust.keys()[0].namespaces(), Some(NAMESPACE));
        }
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = SigningKey::generate("a").unwrap();
        let b = SigningKey::generate("a").unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn comment_with_a_line_break_is_refused() {
        assert!(matches!(
            SigningKey::generate("a\nb"),
            Err(SigningError::InvalidComment)
        ));
    }

    #[test]
    fn debug_shows_only_the_fingerprint() {
        let key = SigningKey::generate("secret-holder").unwrap();
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            format!("SigningKey {{ fingerprint: {:?}, .. }}", key.fingerprint())
        );
        let pem = key.to_openssh();
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        assert!(!debug.contains(&body));
    }

    #[test]
    fn signature_is_armored_sshsig_in_the_lockstep_namespace() {
        let key = SigningKey::generate("ci").unwrap();
        let armored = key.sign(b"lockfile bytes").unwrap();
        assert!(armored.starts_with("-----BEGIN SSH SIGNATURE-----\n"));
        assert!(armored.ends_with("-----END SSH SIGNATURE-----\n"));
        let sig = ssh_key::SshSig::from_pem(&armored).unwrap();
        assert_eq!(sig.namespace(), NAMESPACE);
        assert_eq!(sig.hash_alg(), HashAlg::Sha512);
        key.key
            .public_key()
            .verify(NAMESPACE, b"lockfile bytes", &sig)
            .unwrap();
    }

    #[test]
    fn unreadable_keys_are_named_for_what_they_are() {
        let err = SigningKey::from_openssh("ssh-ed25519 AAAAC3Nza comment", None).unwrap_err();
        assert!(err.to_string().contains("public key"), "{err}");
        let err = SigningKey::from_openssh(
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n",
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
        let err = SigningKey::from_openssh("hello", None).unwrap_err();
        assert!(matches!(err, SigningError::NotOpenSshPrivateKey { .. }));
        let err = SigningKey::from_openssh(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            None,
        )
        .unwrap_err();
        assert!(
            matches!(err, SigningError::InvalidPrivateKey { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn the_header_says_the_cipher_and_the_type_without_decoding_the_key() {
        let key = SigningKey::generate("header").unwrap();
        let header = OpenSshKeyHeader::read(&key.to_openssh()).unwrap();
        assert_eq!(header.cipher, "none");
        assert_eq!(header.key_type.as_deref(), Some("ssh-ed25519"));
        assert!(!header.is_encrypted());
        let ecdsa = OpenSshKeyHeader::read(probe::tests::ECDSA_KEY).unwrap();
        assert_eq!(ecdsa.key_type.as_deref(), Some("ecdsa-sha2-nistp256"));
        for (text, error) in [
            ("ssh-ed25519 AAAA", OpenSshKeyHeaderError::NoBeginLine),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n",
                OpenSshKeyHeaderError::NoEndLine,
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\n!!!\n-----END OPENSSH PRIVATE KEY-----",
                OpenSshKeyHeaderError::NotBase64,
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
                OpenSshKeyHeaderError::NotKeyV1,
            ),
            (
                // "openssh-key-v1\0" and a cipher name longer than what follows.
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAEG5vbmU=\n-----END OPENSSH PRIVATE KEY-----",
                OpenSshKeyHeaderError::CutShort,
            ),
        ] {
            assert_eq!(OpenSshKeyHeader::read(text), Err(error), "{text}");
        }
    }

    #[test]
    fn ecdsa_key_is_refused_by_name() {
        let err = SigningKey::from_openssh(probe::tests::ECDSA_KEY, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("is of type ecdsa-sha2-nistp256; lockstep signs with ed25519 keys only"),
            "{err}"
        );
    }
}
