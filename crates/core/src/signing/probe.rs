//! Reading just the key type out of documents that ssh-key cannot fully decode.
//!
//! ssh-key is built with ed25519 support only, so an ECDSA private key or signature fails to
//! decode with "unknown algorithm" and no hint of what it was. These probes read the
//! envelope far enough to name the key type (and, for signatures, the key's fingerprint), so
//! the error can say "this is an ecdsa-sha2-nistp256 key" instead of "malformed".

use sha2::{Digest as _, Sha256};
use ssh_key::encoding::base64::{Base64Unpadded, Encoding as _};
use ssh_key::encoding::pem::PemLabel;
use ssh_key::encoding::{self, Decode, DecodePem, Reader};

/// The OpenSSH `SHA256:<base64>` fingerprint of a public key blob (wire encoding).
pub(crate) fn fingerprint_of_blob(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        Base64Unpadded::encode_string(&Sha256::digest(blob))
    )
}

/// The key type name at the start of a public key blob.
pub(crate) fn blob_key_type(blob: &[u8]) -> Option<String> {
    String::decode(&mut &*blob).ok()
}

/// The key type of an OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), read
/// from its public half; `None` when the text is not such a key.
pub(crate) fn private_key_type(pem: &str) -> Option<String> {
    super::OpenSshKeyHeader::read(pem).ok()?.key_type
}

/// The key type and fingerprint of the key inside an armored SSHSIG; `None` when the text
/// is not an SSHSIG.
pub(crate) fn signature_key(pem: &[u8]) -> Option<(String, String)> {
    let envelope = SignatureEnvelope::decode_pem(pem).ok()?;
    let key_type = blob_key_type(&envelope.public_key)?;
    Some((key_type, fingerprint_of_blob(&envelope.public_key)))
}

/// SSHSIG up to the signer's public key blob (PROTOCOL.sshsig).
struct SignatureEnvelope {
    public_key: Vec<u8>,
}

impl PemLabel for SignatureEnvelope {
    const PEM_LABEL: &'static str = "SSH SIGNATURE";
}

impl Decode for SignatureEnvelope {
    type Error = encoding::Error;

    fn decode(reader: &mut impl Reader) -> Result<Self, encoding::Error> {
        let mut magic = [0u8; 6];
        reader.read(&mut magic)?;
        if &magic != b"SSHSIG" {
            return Err(encoding::Error::CharacterEncoding);
        }
        let _version = u32::decode(reader)?;
        let public_key = Vec::<u8>::decode(reader)?;
        reader.drain(reader.remaining_len())?;
        Ok(Self { public_key })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Real `ssh-keygen -t ecdsa -N ''` output (a throwaway test key) and an SSHSIG made with
    // it: ssh-key (ed25519 support only) cannot decode either, the probes must name them.
    pub(crate) const ECDSA_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQT/WMMY4PKSet4QnO3uHF75gpoxlg9C
CxbvmU640jNNsrM4Jq6B1lfrr+2iKk2zlbWwntijgMe3xd38IrxqnBoxAAAAqJKlwaeSpc
GnAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBP9Ywxjg8pJ63hCc
7e4cXvmCmjGWD0ILFu+ZTrjSM02yszgmroHWV+uv7aIqTbOVtbCe2KOAx7fF3fwivGqcGj
EAAAAgc9ii4b5Ccs7+nWlhqsTUpFJw+C8/JopIRICPodxiLiwAAAAKdGVzdEBlY2RzYQEC
AwQFBg==
-----END OPENSSH PRIVATE KEY-----
";
    pub(crate) const ECDSA_SIG: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAAGgAAAATZWNkc2Etc2hhMi1uaXN0cDI1NgAAAAhuaXN0cDI1NgAAAE
EE/1jDGODyknreEJzt7hxe+YKaMZYPQgsW75lOuNIzTbKzOCaugdZX66/toipNs5W1sJ7Y
o4DHt8Xd/CK8apwaMQAAAAhsb2Nrc3RlcAAAAAAAAAAGc2hhNTEyAAAAYwAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAASAAAACAf3xNv+bI6FrqkjCBc3O1mQ6u8kJExatLO9LP7PUqE
DgAAACBrtoxFjH7KPdKRyLcXAwPbHqmtzieLYh9O+cV1rmcN2g==
-----END SSH SIGNATURE-----
";
    /// `ssh-keygen -l` of that key.
    pub(crate) const ECDSA_FINGERPRINT: &str = "SHA256:azZo5BWSyTWXyIYkt5kSZAuE3OxYWCvCdMuFTXlNngA";

    #[test]
    fn names_the_type_of_a_key_ssh_key_cannot_decode() {
        assert!(ssh_key::PrivateKey::from_openssh(ECDSA_KEY).is_err());
        assert_eq!(
            private_key_type(ECDSA_KEY).as_deref(),
            Some("ecdsa-sha2-nistp256")
        );
    }

    #[test]
    fn names_the_key_of_a_signature_ssh_key_cannot_decode() {
        assert!(ssh_key::SshSig::from_pem(ECDSA_SIG).is_err());
        assert_eq!(
            signature_key(ECDSA_SIG.as_bytes()),
            Some((
                "ecdsa-sha2-nistp256".to_owned(),
                ECDSA_FINGERPRINT.to_owned()
            ))
        );
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        assert_eq!(private_key_type("ssh-ed25519 AAAA comment"), None);
        assert_eq!(
            signature_key(b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n"),
            None
        );
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // `ssh-keygen -l` printed SHA256:L5g/… for this public key.
        let key = ssh_key::PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEKwMVhMLmvA1S5zAwd7h1wKqZVGMjsLa/VdAF/3UD7+ fixture",
        )
        .unwrap();
        let blob = key.to_bytes().unwrap();
        assert_eq!(
            fingerprint_of_blob(&blob),
            "SHA256:L5g/Ek1/XL6fLY12qpWcIQf/IjTtefyydrLbfvcYH7Q"
        );
        assert_eq!(blob_key_type(&blob).as_deref(), Some("ssh-ed25519"));
    }
}
