//! The file set of a manifests directory, and its limits (pure).
//!
//! This module owns the answer to "which files are lockstep's inputs" ([`role_of`]), shared
//! by both sources (the `lockstep` crate's `source::fs` for the work tree and `source::git`
//! for a commit) so that they can never disagree about what was read. Both return the same
//! [`SourceFiles`].

use std::collections::BTreeMap;

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
/// The deepest a directory may lie below the manifests directory (`a/b` is at depth 2). The
/// walks keep their own stack, so depth costs no call stack; the limit bounds the work and
/// the path lengths that a crafted commit (a chain of 20 000 directories) could ask for.
pub const MAX_DEPTH: usize = 32;
/// The most directory entries (files, directories, anything) read in one walk, counted over
/// every directory visited: bounds the work of a directory full of entries that are not
/// files, which [`MAX_FILES`] does not count.
pub const MAX_ENTRIES: usize = 100_000;
/// The largest Git tree object read, in bytes: a tree is loaded whole before its entries can
/// be counted, so its size is checked first. 100 000 entries with long names fit.
pub const MAX_TREE_BYTES: u64 = 16 * 1024 * 1024;

/// The name of Git's own entry (a directory, or a file in a linked work tree or submodule):
/// the only entry of the manifests directory that is not an input, at any level.
pub const GIT_DIR_NAME: &str = ".git";

/// What an input file is to lockstep. Every regular file of the manifests directory is an
/// input (except under [`GIT_DIR_NAME`]), and each has exactly one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileRole {
    /// A Kubernetes manifest: extension `.yaml` or `.yml` in any letter case, anywhere below
    /// the directory, hidden or not (kubectl reads `.evil.yaml` too).
    Manifest,
    /// `lockstep.toml` at the top.
    Config,
    /// `lockstep.lock` at the top.
    Lockfile,
    /// `lockstep.lock.<signer>.sig` at the top.
    Signature,
    /// Any other file (a README, `.gitignore`, a script): not parsed, but bound by the
    /// lockfile like a manifest, so that no file can change beside the signed ones unseen.
    Bound,
}

impl FileRole {
    /// Whether the lockfile's manifests binding covers files of this role: everything but
    /// the lockfile and its signatures, which cannot bind themselves.
    pub fn is_bound(self) -> bool {
        !matches!(self, FileRole::Lockfile | FileRole::Signature)
    }

    /// Whether lockstep itself writes or commits files of this role (pinned manifests, the
    /// lockfile and signatures; the configuration when asked): never a [`FileRole::Bound`]
    /// file, which is the user's alone.
    pub fn is_written_by_lockstep(self) -> bool {
        self != FileRole::Bound
    }
}

/// Why an entry of the manifests directory cannot be read as an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A control character (a newline, a tab, U+0085) or U+2028/U+2029 in the name: it would
    /// break every line-oriented listing of the path (`# Source:` in `render`, logs).
    ControlCharacter,
    /// An empty, `.` or `..` name, or one holding `/` or NUL: only a crafted Git tree has one.
    InvalidName,
    /// `kustomization.yaml`, `kustomization.yml` or `Kustomization`.
    Kustomization,
    /// `Chart.yaml`: a Helm chart.
    HelmChart,
    /// A `.json` file.
    Json,
    /// A `.jsonnet` or `.libsonnet` file.
    Jsonnet,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const RENDERED: &str = "Argo CD and Flux would render this directory with";
        const INSTEAD: &str = "instead of applying its files; lockstep locks rendered manifests: render it and lock the output (render steps are planned), or move it out of the locked directory";
        match self {
            Refusal::ControlCharacter => f.write_str(
                "has a control character or a line separator in its name; rename it",
            ),
            Refusal::InvalidName => {
                f.write_str("is not a valid file name (empty, '.', '..', or holding '/' or NUL)")
            }
            Refusal::Kustomization => write!(f, "is a kustomization: {RENDERED} kustomize {INSTEAD}"),
            Refusal::HelmChart => write!(f, "is a Helm chart: {RENDERED} Helm {INSTEAD}"),
            Refusal::Json => f.write_str(
                "is a JSON file: kubectl, Argo CD and Flux apply JSON manifests, which lockstep does not read: convert it to YAML or move it out of the locked directory",
            ),
            Refusal::Jsonnet => f.write_str(
                "is a Jsonnet file: Argo CD evaluates Jsonnet and applies the result, which lockstep does not read: render it to YAML and lock the output, or move it out of the locked directory",
            ),
        }
    }
}

/// An entry of the manifests directory that lockstep refuses to read, with its path
/// (relative to the repository in Git, absolute in the work tree).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path:?} {refusal}")]
pub struct RefusedInput {
    pub path: String,
    pub refusal: Refusal,
}

/// What a walk does with one directory entry, judged by its name alone.
pub enum EntryName<'a> {
    /// `.git`: not lockstep's, never opened.
    Skip,
    /// Anything else, as UTF-8 text safe to join into a path.
    Read(&'a str),
}

/// Judge one entry name (of a file or a directory) before anything is opened.
pub fn check_name(name: &str) -> Result<EntryName<'_>, Refusal> {
    if name == GIT_DIR_NAME {
        return Ok(EntryName::Skip);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Refusal::InvalidName);
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        return Err(Refusal::ControlCharacter);
    }
    Ok(EntryName::Read(name))
}

/// Whether `name`'s extension (after the last `.`) is `ext`, in any letter case.
fn has_extension(name: &str, ext: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, found)| found.eq_ignore_ascii_case(ext))
}

/// The role of the regular file at `rel_path` ('/'-separated, relative to the manifests
/// directory), or why it is refused. Every component must pass [`check_name`]; a path
/// under `.git` is refused as not an input.
pub fn classify(rel_path: &str) -> Result<FileRole, Refusal> {
    let mut components = rel_path.split('/').peekable();
    let mut top_level = true;
    let mut name = "";
    while let Some(component) = components.next() {
        match check_name(component)? {
            EntryName::Skip => return Err(Refusal::InvalidName),
            EntryName::Read(component) => name = component,
        }
        if components.peek().is_some() {
            top_level = false;
        }
    }
    if top_level {
        if name == CONFIG_FILE {
            return Ok(FileRole::Config);
        }
        if name == LOCKFILE {
            return Ok(FileRole::Lockfile);
        }
        if signer_of(name).is_some() {
            return Ok(FileRole::Signature);
        }
    }
    // The names exactly as kustomize and Helm look them up (Argo CD, Flux and the reconciler
    // run on Linux, case-sensitive): `chart.yaml` is an ordinary manifest there, and a common
    // name for one (a k3s HelmChart object, say).
    if matches!(
        name,
        "kustomization.yaml" | "kustomization.yml" | "Kustomization"
    ) {
        return Err(Refusal::Kustomization);
    }
    if name == "Chart.yaml" {
        return Err(Refusal::HelmChart);
    }
    if has_extension(name, "json") {
        return Err(Refusal::Json);
    }
    if has_extension(name, "jsonnet") || has_extension(name, "libsonnet") {
        return Err(Refusal::Jsonnet);
    }
    if has_extension(name, "yaml") || has_extension(name, "yml") {
        return Ok(FileRole::Manifest);
    }
    Ok(FileRole::Bound)
}

/// The role of the file at `rel_path`, or `None` when it cannot be an input: a refused name
/// ([`classify`]), a path under `.git`, or a malformed path (empty, `.`, `..` or empty
/// components), so a `Some` also means "a safe relative path".
pub fn role_of(rel_path: &str) -> Option<FileRole> {
    classify(rel_path).ok()
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
    /// A directory lies more than [`MAX_DEPTH`] levels below the manifests directory.
    #[error(
        "{path:?} is more than {limit} directories deep below the manifests directory; lockstep refuses deeper nesting"
    )]
    TooDeep { path: String, limit: usize },
    /// The walk met more than [`MAX_ENTRIES`] directory entries.
    #[error(
        "more than {limit} directory entries (at {path:?}); split the manifests into several directories"
    )]
    TooManyEntries { path: String, limit: usize },
    /// A Git tree object larger than [`MAX_TREE_BYTES`].
    #[error("the Git tree of {path:?} is {size} bytes; the limit for one tree is {limit} bytes")]
    TreeTooLarge { path: String, size: u64, limit: u64 },
}

/// The budget of one walk over a directory tree: depth and entries, checked before a
/// directory is opened or an entry looked at, so no input can make a walk unbounded.
#[derive(Debug, Default)]
pub struct WalkBudget {
    entries: usize,
}

impl WalkBudget {
    /// Refuse entering the directory `path` at `depth` (1 for a directory at the top).
    pub fn enter(&self, path: &str, depth: usize) -> Result<(), LimitError> {
        if depth > MAX_DEPTH {
            return Err(LimitError::TooDeep {
                path: path.to_owned(),
                limit: MAX_DEPTH,
            });
        }
        Ok(())
    }

    /// Count one more entry, met in the directory `dir`.
    pub fn count(&mut self, dir: &str) -> Result<(), LimitError> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(LimitError::TooManyEntries {
                path: dir.to_owned(),
                limit: MAX_ENTRIES,
            });
        }
        Ok(())
    }
}

/// Join a directory's relative path and an entry name ('/'-separated; empty at the top).
pub fn join_rel(rel_dir: &str, name: &str) -> String {
    if rel_dir.is_empty() {
        name.to_owned()
    } else {
        format!("{rel_dir}/{name}")
    }
}

/// Refuse a file larger than [`MAX_FILE_BYTES`].
pub fn check_size(path: &str, size: u64) -> Result<(), LimitError> {
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

    /// Every file the lockfile's manifests binding covers (manifests, `lockstep.toml` and
    /// [`FileRole::Bound`] files: all but the lockfile and its signatures), in path order.
    pub fn bound(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.files
            .iter()
            .filter(|(path, _)| role_of(path).is_some_and(FileRole::is_bound))
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
    }

    /// The manifests (`*.yaml`, `*.yml`, any case) in path order.
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
        assert_eq!(role_of("sub/lockstep.toml"), Some(FileRole::Bound));
        assert_eq!(role_of("sub/lockstep.lock"), Some(FileRole::Bound));
        assert_eq!(role_of("sub/lockstep.lock.ci.sig"), Some(FileRole::Bound));
        assert_eq!(role_of("sub/deep/app.yaml"), Some(FileRole::Manifest));
    }

    #[test]
    fn every_other_file_is_bound() {
        for path in [
            "README.md",
            ".gitignore",
            "docs/.notes",
            "app.yaml.bak",
            "lockstep.lock..sig",
            "lockstep.lock.sig",
            "lockstep.toml.orig",
            ".lockstep.lock",
            "yaml",
            "Chart.yml.txt",
        ] {
            assert_eq!(role_of(path), Some(FileRole::Bound), "{path}");
        }
        assert!(FileRole::Bound.is_bound());
        assert!(!FileRole::Bound.is_written_by_lockstep());
        assert!(!FileRole::Lockfile.is_bound() && !FileRole::Signature.is_bound());
    }

    #[test]
    fn a_hidden_yaml_file_is_read_as_a_manifest() {
        for path in [".evil.yaml", "a/.b/c.yaml", ".argocd-source.yaml", ".yml"] {
            assert_eq!(role_of(path), Some(FileRole::Manifest), "{path}");
        }
    }

    #[test]
    fn an_upper_case_yaml_extension_is_a_manifest() {
        for path in ["app.YAML", "app.Yml", "sub/.x.yAmL"] {
            assert_eq!(classify(path), Ok(FileRole::Manifest), "{path}");
        }
    }

    #[test]
    fn a_json_manifest_is_refused_with_a_hint() {
        for path in ["app.json", "sub/.hidden.JSON"] {
            assert_eq!(classify(path), Err(Refusal::Json), "{path}");
        }
        for path in ["lib/app.jsonnet", "x.LibSonnet"] {
            assert_eq!(classify(path), Err(Refusal::Jsonnet), "{path}");
        }
        let hint = Refusal::Json.to_string();
        assert!(hint.contains("convert it to YAML or move it out"), "{hint}");
    }

    #[test]
    fn a_kustomization_is_refused_with_a_hint() {
        for path in [
            "kustomization.yaml",
            "overlays/prod/kustomization.yml",
            "Kustomization",
        ] {
            assert_eq!(classify(path), Err(Refusal::Kustomization), "{path}");
        }
        assert_eq!(classify("chart/Chart.yaml"), Err(Refusal::HelmChart));
        for refusal in [Refusal::Kustomization, Refusal::HelmChart] {
            let hint = refusal.to_string();
            assert!(
                hint.contains("render it and lock the output") && hint.contains("Argo CD"),
                "{hint}"
            );
        }
        // Only those names, spelled as the tools look them up on Linux.
        for path in ["kustomization-job.yaml", "Kustomization.yaml", "chart.yaml"] {
            assert_eq!(classify(path), Ok(FileRole::Manifest), "{path}");
        }
    }

    #[test]
    fn a_file_name_with_a_newline_is_refused() {
        for path in [
            "evil\n# Source: ok.yaml",
            "dir\r/app.yaml",
            "tab\there.yaml",
            "nel\u{85}.yaml",
            "ls\u{2028}.yaml",
            "ps\u{2029}/x.md",
            "del\u{7f}.yaml",
        ] {
            assert_eq!(classify(path), Err(Refusal::ControlCharacter), "{path:?}");
            assert_eq!(role_of(path), None, "{path:?}");
        }
        let err = RefusedInput {
            path: "a\nb.yaml".into(),
            refusal: Refusal::ControlCharacter,
        };
        assert!(err.to_string().starts_with(r#""a\nb.yaml" "#), "{err}");
    }

    #[test]
    fn git_entries_and_malformed_paths_are_not_inputs() {
        for path in [
            ".git",
            ".git/config.yaml",
            "sub/.git/HEAD",
            "../x.yaml",
            "./x.yaml",
            "a/../x.yaml",
            "/x.yaml",
            "a//x.yaml",
            "",
            "a/",
            "nul\0.yaml",
        ] {
            assert_eq!(role_of(path), None, "{path:?}");
        }
        assert!(matches!(check_name(".git"), Ok(EntryName::Skip)));
        // Only Git's own name: other spellings are read (and bound) like any file.
        assert!(matches!(check_name(".GIT"), Ok(EntryName::Read(_))));
        assert!(matches!(check_name(".gitignore"), Ok(EntryName::Read(_))));
        for name in ["", ".", "..", "a/b", "a\0b"] {
            assert!(
                matches!(check_name(name), Err(Refusal::InvalidName)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_walk_budget_refuses_depth_and_entries() {
        let mut budget = WalkBudget::default();
        budget.enter("deep", MAX_DEPTH).unwrap();
        let err = budget.enter("deeper", MAX_DEPTH + 1).unwrap_err();
        assert!(
            matches!(&err, LimitError::TooDeep { path, .. } if path == "deeper"),
            "{err}"
        );
        for _ in 0..MAX_ENTRIES {
            budget.count("dir").unwrap();
        }
        let err = budget.count("full").unwrap_err();
        assert!(
            matches!(&err, LimitError::TooManyEntries { path, .. } if path == "full"),
            "{err}"
        );
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
            ("README.md", "r"),
        ] {
            files.insert(path.into(), bytes.into()).unwrap();
        }
        let bound: Vec<_> = files.bound().map(|(path, _)| path).collect();
        assert_eq!(bound, ["README.md", "a/c.yml", "b.yaml", "lockstep.toml"]);
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
