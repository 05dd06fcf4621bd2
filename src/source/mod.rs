//! Reading and writing the manifests directory: work tree and Git (edge).
//!
//! This module owns the answer to "which files are lockstep's inputs" ([`role_of`]), shared
//! by both sources so that the work tree ([`fs`]) and a Git commit ([`git`]) can never
//! disagree about what was read. Both return the same [`SourceFiles`].

pub mod fs;
pub mod git;

use std::collections::BTreeMap;

pub use fs::SourceError;

/// The configuration file, at the top of the manifests directory (named by the scanner
/// that reads it).
pub use crate::manifest::config::CONFIG_FILE;
/// The lockfile, at the top of the manifests directory.
pub const LOCKFILE: &str = crate::lockfile::FILE_NAME;
const SIGNATURE_PREFIX: &str = "lockstep.lock.";
const SIGNATURE_SUFFIX: &str = ".sig";

/// The largest input file accepted, in bytes. Manifests are text; a bigger file is a mistake
/// or an attack, and reading it whole would cost memory for nothing.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// The largest number of input files accepted in one manifests directory.
pub const MAX_FILES: usize = 10_000;
/// Largest total of all input files: far above real manifest sets (a 10 000-image directory
/// is ~7 MB), far below what would exhaust a controller's memory.
pub const MAX_TOTAL_BYTES: u64 = 256 * 1024 * 1024;

/// What an input file is to lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileRole {
    /// A Kubernetes manifest: `*.yaml` or `*.yml`, anywhere below the directory.
    Manifest,
    /// `lockstep.toml` at the top.
    Config,
    /// `lockstep.lock` at the top.
    Lockfile,
    /// `lockstep.lock.<signer>.sig` at the top.
    Signature,
}

/// The role of the file at `rel_path` ('/'-separated, relative to the manifests directory),
/// or `None` when it is not an input. Hidden files and anything under a hidden directory are
/// never inputs (`.git`, editor swap files); neither are malformed paths (empty, `.`, `..`
/// or empty components), so a `Some` also means "a safe relative path".
pub fn role_of(rel_path: &str) -> Option<FileRole> {
    let mut components = rel_path.split('/').peekable();
    let mut top_level = true;
    let mut name = "";
    while let Some(component) = components.next() {
        if component.is_empty() || component.starts_with('.') {
            return None;
        }
        if components.peek().is_some() {
            top_level = false;
        } else {
            name = component;
        }
    }
    if top_level {
        if name == CONFIG_FILE {
            return Some(FileRole::Config);
        }
        if name == LOCKFILE {
            return Some(FileRole::Lockfile);
        }
        if signer_of(name).is_some() {
            return Some(FileRole::Signature);
        }
    }
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        return Some(FileRole::Manifest);
    }
    None
}

/// The signer named by a signature file's path (`lockstep.lock.<signer>.sig` at the top), or
/// `None` when `rel_path` is not a signature file.
pub fn signer_of(rel_path: &str) -> Option<&str> {
    let signer = rel_path
        .strip_prefix(SIGNATURE_PREFIX)?
        .strip_suffix(SIGNATURE_SUFFIX)?;
    let valid = !signer.is_empty() && !signer.starts_with('.') && !signer.contains('/');
    valid.then_some(signer)
}

/// The path of `signer`'s signature file, relative to the manifests directory.
pub fn signature_path(signer: &str) -> String {
    format!("{SIGNATURE_PREFIX}{signer}{SIGNATURE_SUFFIX}")
}

/// A size limit was exceeded while reading the inputs.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// One file is larger than [`MAX_FILE_BYTES`].
    #[error("{path} is {size} bytes; the limit for one input file is {limit} bytes")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    /// The directory holds more than [`MAX_FILES`] input files.
    #[error(
        "more than {limit} input files (at {path}); split the manifests into several directories"
    )]
    TooManyFiles { path: String, limit: usize },
    /// The input files together are larger than [`MAX_TOTAL_BYTES`].
    #[error(
        "the input files reach more than {limit} bytes in all (at {path}); split the manifests into several directories"
    )]
    TooManyBytes { path: String, limit: u64 },
}

/// Refuse a file larger than [`MAX_FILE_BYTES`].
pub(crate) fn check_size(path: &str, size: u64) -> Result<(), LimitError> {
    if size > MAX_FILE_BYTES {
        return Err(LimitError::FileTooLarge {
            path: path.to_owned(),
            size,
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(())
}

/// Every input file of a manifests directory, from the work tree or from a Git commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceFiles {
    /// Relative path ('/'-separated) -> exact bytes, for every input file. Change it through
    /// [`SourceFiles::insert`] and [`SourceFiles::replace`], which keep the byte count.
    pub files: BTreeMap<String, Vec<u8>>,
    /// The total size of `files`.
    total_bytes: u64,
}

impl SourceFiles {
    /// Check the limits for one more file of `size` bytes at `path` before reading it, so that
    /// an oversized file is refused without being loaded.
    pub fn admit(&self, path: &str, size: u64) -> Result<(), LimitError> {
        check_size(path, size)?;
        if self.files.len() >= MAX_FILES && !self.files.contains_key(path) {
            return Err(LimitError::TooManyFiles {
                path: path.to_owned(),
                limit: MAX_FILES,
            });
        }
        let replaced = self.files.get(path).map_or(0, |b| b.len() as u64);
        if self.total_bytes - replaced + size > MAX_TOTAL_BYTES {
            return Err(LimitError::TooManyBytes {
                path: path.to_owned(),
                limit: MAX_TOTAL_BYTES,
            });
        }
        Ok(())
    }

    /// Add a file, enforcing the limits on its actual bytes.
    pub fn insert(&mut self, path: String, bytes: Vec<u8>) -> Result<(), LimitError> {
        self.admit(&path, bytes.len() as u64)?;
        self.replace(path, bytes);
        Ok(())
    }

    /// Put `bytes` at `path` without the input limits: for lockstep's own output (pinning
    /// adds a digest to each image of files already admitted).
    pub fn replace(&mut self, path: String, bytes: Vec<u8>) {
        self.total_bytes += bytes.len() as u64;
        if let Some(old) = self.files.insert(path, bytes) {
            self.total_bytes -= old.len() as u64;
        }
    }

    /// The manifests (`*.yaml`, `*.yml`) in path order.
    pub fn manifests(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.with_role(FileRole::Manifest)
    }

    /// The bytes of `lockstep.toml`, if present.
    pub fn config(&self) -> Option<&[u8]> {
        self.files.get(CONFIG_FILE).map(Vec::as_slice)
    }

    /// The bytes of `lockstep.lock`, if present.
    pub fn lockfile(&self) -> Option<&[u8]> {
        self.files.get(LOCKFILE).map(Vec::as_slice)
    }

    /// The signature files as (signer, bytes), in signer order.
    pub fn signatures(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.with_role(FileRole::Signature)
            .filter_map(|(path, bytes)| Some((signer_of(path)?, bytes)))
    }

    fn with_role(&self, role: FileRole) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.files
            .iter()
            .filter(move |(path, _)| role_of(path) == Some(role))
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_top_level_files() {
        assert_eq!(role_of("lockstep.toml"), Some(FileRole::Config));
        assert_eq!(role_of("lockstep.lock"), Some(FileRole::Lockfile));
        assert_eq!(role_of("lockstep.lock.ci.sig"), Some(FileRole::Signature));
        assert_eq!(
            role_of("lockstep.lock.alice-2.sig"),
            Some(FileRole::Signature)
        );
        assert_eq!(role_of("deploy.yaml"), Some(FileRole::Manifest));
        assert_eq!(role_of("deploy.yml"), Some(FileRole::Manifest));
        assert_eq!(role_of("lockstep.lock.yaml"), Some(FileRole::Manifest));
    }

    #[test]
    fn lockstep_files_count_only_at_the_top() {
        assert_eq!(role_of("sub/lockstep.toml"), None);
        assert_eq!(role_of("sub/lockstep.lock"), None);
        assert_eq!(role_of("sub/lockstep.lock.ci.sig"), None);
        assert_eq!(role_of("sub/deep/app.yaml"), Some(FileRole::Manifest));
    }

    #[test]
    fn other_files_are_not_inputs() {
        for path in [
            "README.md",
            "app.json",
            "app.YAML",
            "app.yaml.bak",
            "lockstep.lock..sig",
            "lockstep.lock.sig",
            "lockstep.toml.orig",
        ] {
            assert_eq!(role_of(path), None, "{path}");
        }
    }

    #[test]
    fn hidden_and_malformed_paths_are_not_inputs() {
        for path in [
            ".hidden.yaml",
            ".git/config.yaml",
            "a/.b/c.yaml",
            "../x.yaml",
            "./x.yaml",
            "a/../x.yaml",
            "/x.yaml",
            "a//x.yaml",
            "",
            "a/",
            ".lockstep.lock",
        ] {
            assert_eq!(role_of(path), None, "{path:?}");
        }
    }

    #[test]
    fn signer_round_trips_through_the_file_name() {
        assert_eq!(signer_of(&signature_path("ci-bot")), Some("ci-bot"));
        assert_eq!(signer_of("lockstep.lock.sig"), None);
        assert_eq!(signer_of("sub/lockstep.lock.x.sig"), None);
    }

    #[test]
    fn helpers_split_files_by_role() {
        let mut files = SourceFiles::default();
        for (path, bytes) in [
            ("b.yaml", "b"),
            ("a/c.yml", "c"),
            ("lockstep.toml", "config"),
            ("lockstep.lock", "lock"),
            ("lockstep.lock.zed.sig", "z"),
            ("lockstep.lock.amy.sig", "a"),
        ] {
            files.insert(path.into(), bytes.into()).unwrap();
        }
        let manifests: Vec<_> = files.manifests().collect();
        assert_eq!(
            manifests,
            vec![("a/c.yml", &b"c"[..]), ("b.yaml", &b"b"[..])]
        );
        assert_eq!(files.config(), Some(&b"config"[..]));
        assert_eq!(files.lockfile(), Some(&b"lock"[..]));
        let sigs: Vec<_> = files.signatures().collect();
        assert_eq!(sigs, vec![("amy", &b"a"[..]), ("zed", &b"z"[..])]);
    }

    #[test]
    fn limits_are_enforced_with_the_path() {
        let mut files = SourceFiles::default();
        let err = files
            .insert("big.yaml".into(), vec![b'x'; MAX_FILE_BYTES as usize + 1])
            .unwrap_err();
        assert!(err.to_string().contains("big.yaml"), "{err}");
        files
            .insert("ok.yaml".into(), vec![b'x'; MAX_FILE_BYTES as usize])
            .unwrap();

        let mut many = SourceFiles::default();
        for i in 0..MAX_FILES {
            many.insert(format!("{i}.yaml"), Vec::new()).unwrap();
        }
        let err = many.insert("one-more.yaml".into(), Vec::new()).unwrap_err();
        assert!(matches!(err, LimitError::TooManyFiles { .. }), "{err}");
        assert!(err.to_string().contains("one-more.yaml"), "{err}");

        // Zeroed buffers: the pages are never touched, so this costs no real memory.
        let mut big = SourceFiles::default();
        let per_file = MAX_FILE_BYTES as usize;
        for i in 0..(MAX_TOTAL_BYTES as usize / per_file) {
            big.insert(format!("{i}.yaml"), vec![0; per_file]).unwrap();
        }
        let err = big.admit("last.yaml", 1).unwrap_err();
        assert!(matches!(err, LimitError::TooManyBytes { .. }), "{err}");
        assert!(err.to_string().contains("last.yaml"), "{err}");
        // Replacing a file counts its new size, not both.
        big.admit("0.yaml", per_file as u64).unwrap();
    }
}
