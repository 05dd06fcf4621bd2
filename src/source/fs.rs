//! The work tree: reading a manifests directory's input files and writing files atomically.
//!
//! Symlinks are refused rather than followed: one could lead outside the directory, and Git
//! stores a symlink as its target path, so the work tree and a commit would disagree about
//! what the "file" is.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    EntryName, FileRole, LimitError, Refusal, RefusedInput, SourceFiles, WalkBudget, check_name,
    classify, join_rel, role_of,
};

/// Reading or writing the manifests directory failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A filesystem operation failed on `path`.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The manifests directory is not a directory.
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    /// A symbolic link inside the manifests directory.
    #[error(
        "{path} is a symbolic link; lockstep refuses symlinks in the manifests directory (they can point outside it, and Git stores them as links, not files)"
    )]
    Symlink { path: PathBuf },
    /// An input file that is not a regular file (a FIFO, a socket, a device).
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// A file name that is not UTF-8, which lockstep cannot record in the lockfile.
    #[error("{path:?} has a name that is not valid UTF-8")]
    NonUtf8Name { path: PathBuf },
    /// A file or directory lockstep refuses to read (a kustomization, JSON, a control
    /// character in the name).
    #[error(transparent)]
    Refused(#[from] RefusedInput),
    /// A path given to [`write_files`] that is not an input file of the directory.
    #[error(
        "refusing to write {path:?}: not a path lockstep writes (a relative path to a *.yaml/*.yml manifest, lockstep.toml, lockstep.lock or a signature, with no '.git' or '..' components)"
    )]
    NotAnInputPath { path: String },
    /// A size limit was exceeded.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A render input above the tree inputs may come from.
    #[error(
        "the input {root:?} lies outside {} (inputs must be inside the Git work tree of the locked directory, or inside the locked directory when it is in no Git work tree)",
        top.display()
    )]
    OutsideTop { root: String, top: PathBuf },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SourceError + use<> {
    let path = path.to_owned();
    move |source| SourceError::Io {
        action,
        path,
        source,
    }
}

/// Read every input file under `dir` (every regular file but those under a `.git` entry,
/// hidden ones included), in a deterministic order. The walk keeps its own stack and stops
/// at [`MAX_DEPTH`](super::MAX_DEPTH) levels and [`MAX_ENTRIES`](super::MAX_ENTRIES)
/// entries; a symlink, a refused name ([`classify`]) or a file that is not a regular file is
/// an error naming its path.
pub fn read_dir(dir: &Path) -> Result<SourceFiles, SourceError> {
    walk(dir, true)
}

/// What a render input path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    File,
    Dir,
}

/// `root` (relative to the canonical directory `dir`, normalized so that `..` is only
/// leading) as a path inside `top` (canonical, `dir` or an ancestor of it), found without
/// following a symlink; `None` when nothing is there. A `..` above `top`, a symlink on the
/// way, or an entry that is neither a file nor a directory is an error naming it.
pub fn resolve_input(
    dir: &Path,
    top: &Path,
    root: &str,
) -> Result<Option<(PathBuf, InputKind)>, SourceError> {
    let mut path = dir.to_owned();
    let mut parts = root.split('/').peekable();
    while let Some(part) = parts.next() {
        if part == ".." {
            if path == top || !path.pop() || !path.starts_with(top) {
                return Err(SourceError::OutsideTop {
                    root: root.to_owned(),
                    top: top.to_owned(),
                });
            }
            continue;
        }
        path.push(part);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error("cannot stat", &path)(err)),
        };
        if meta.file_type().is_symlink() {
            return Err(SourceError::Symlink { path });
        }
        let last = parts.peek().is_none();
        match (meta.is_dir(), meta.is_file(), last) {
            (true, _, _) if last => return Ok(Some((path, InputKind::Dir))),
            (true, _, _) => {}
            (_, true, true) => return Ok(Some((path, InputKind::File))),
            // A file where a directory should be: nothing is at `root`.
            (_, true, false) => return Ok(None),
            _ => return Err(SourceError::NotAFile { path }),
        }
    }
    // Only `..` components: a directory above `dir`, inside `top`.
    Ok(Some((path, InputKind::Dir)))
}

/// Every regular file under the render input root `root` (resolved by [`resolve_input`]; a
/// file root is that file), as (path relative to `dir`, bytes): the same walk as
/// [`read_dir`] — `.git` skipped, symlinks refused, the same limits — but any name is read
/// (a kustomization, a `Chart.yaml`, JSON), as the renderer reads them.
pub fn read_input_root(
    dir: &Path,
    top: &Path,
    root: &str,
) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
    let Some((path, kind)) = resolve_input(dir, top, root)? else {
        let path = dir.join(root);
        return Err(io_error("cannot read", &path)(
            io::ErrorKind::NotFound.into(),
        ));
    };
    if kind == InputKind::File {
        let bytes = read_limited(&path, root, &SourceFiles::default())?;
        return Ok(vec![(root.to_owned(), bytes)]);
    }
    let files = walk(&path, false)?;
    Ok(files
        .files
        .into_iter()
        .map(|(rel, bytes)| (format!("{root}/{rel}"), bytes))
        .collect())
}

/// The walk of [`read_dir`]; `classify`: refuse names lockstep does not read as inputs.
fn walk(dir: &Path, classify_names: bool) -> Result<SourceFiles, SourceError> {
    let meta = fs::metadata(dir).map_err(io_error("cannot read", dir))?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mut files = SourceFiles::default();
    let mut budget = WalkBudget::default();
    // One sorted listing per open directory: the stack of a depth-first walk, visiting
    // entries in the order a recursive walk would, without recursion an input could deepen.
    let mut stack = vec![(String::new(), list(dir, &mut budget)?.into_iter())];
    while let Some((rel_dir, entries)) = stack.last_mut() {
        let Some(entry) = entries.next() else {
            stack.pop();
            continue;
        };
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(SourceError::NonUtf8Name { path });
        };
        let name = match check_name(name) {
            Ok(EntryName::Skip) => continue,
            Ok(EntryName::Read(name)) => name,
            Err(refusal) => return Err(refused(&path, refusal)),
        };
        let rel = join_rel(rel_dir, name);
        let file_type = entry.file_type().map_err(io_error("cannot stat", &path))?;
        if file_type.is_symlink() {
            return Err(SourceError::Symlink { path });
        }
        if file_type.is_dir() {
            budget
                .enter(&path.display().to_string(), stack.len())
                .map_err(SourceError::Limit)?;
            let listing = list(&path, &mut budget)?;
            stack.push((rel, listing.into_iter()));
            continue;
        }
        if classify_names {
            classify(&rel).map_err(|refusal| refused(&path, refusal))?;
        }
        if !file_type.is_file() {
            return Err(SourceError::NotAFile { path });
        }
        let bytes = read_limited(&path, &rel, &files)?;
        files.insert(rel, bytes)?;
    }
    Ok(files)
}

/// The entries of `dir`, sorted by name so that errors and limits hit the same file on every
/// run; each counts against the walk's budget as it is listed, so a directory of millions of
/// entries is refused before they are all held.
fn list(dir: &Path, budget: &mut WalkBudget) -> Result<Vec<fs::DirEntry>, SourceError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("cannot list", dir))? {
        budget.count(&dir.display().to_string())?;
        entries.push(entry.map_err(io_error("cannot list", dir))?);
    }
    entries.sort_by_key(fs::DirEntry::file_name);
    Ok(entries)
}

fn refused(path: &Path, refusal: Refusal) -> SourceError {
    SourceError::Refused(RefusedInput {
        path: path.display().to_string(),
        refusal,
    })
}

/// Read a file, refusing it before loading when it is already too large, and reading at
/// most one byte past the limit in case it grows while being read.
fn read_limited(path: &Path, rel: &str, files: &SourceFiles) -> Result<Vec<u8>, SourceError> {
    let file = File::open(path).map_err(io_error("cannot open", path))?;
    let size = file
        .metadata()
        .map_err(io_error("cannot stat", path))?
        .len();
    files.admit(rel, size)?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(super::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("cannot read", path))?;
    Ok(bytes)
}

/// Write `writes` (relative path, bytes) in the given order, then delete `removals`, under
/// `dir`. Each file is replaced atomically (a temporary file in the same directory, fsync,
/// rename, fsync of the directory), so a crash leaves each file old or new, never torn;
/// callers order `writes` so that any prefix of them fails verification closed. Removing a
/// file that does not exist is not an error. Every path must be an input path that lockstep
/// writes ([`role_of`], [`FileRole::is_written_by_lockstep`]) whose directories exist and
/// are not symlinks.
pub fn write_files(
    dir: &Path,
    writes: &[(String, Vec<u8>)],
    removals: &[String],
) -> Result<(), SourceError> {
    let paths = writes.iter().map(|(rel, _)| rel).chain(removals);
    for rel in paths {
        if !role_of(rel).is_some_and(FileRole::is_written_by_lockstep) {
            return Err(SourceError::NotAnInputPath { path: rel.clone() });
        }
        refuse_symlinked_parents(dir, rel)?;
    }
    for (rel, bytes) in writes {
        write_atomically(&dir.join(rel), bytes)?;
    }
    for rel in removals {
        let path = dir.join(rel);
        match fs::remove_file(&path) {
            Ok(()) => sync_parent(&path)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error("cannot remove", &path)(err)),
        }
    }
    Ok(())
}

/// A symlinked directory between `dir` and the file would send the write outside `dir`.
fn refuse_symlinked_parents(dir: &Path, rel: &str) -> Result<(), SourceError> {
    let mut path = dir.to_owned();
    let mut components = rel.split('/').peekable();
    while let Some(component) = components.next() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(SourceError::Symlink { path }),
            Ok(_) => {}
            // A missing final file is what a write creates; a missing directory fails later
            // with the path named.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(io_error("cannot stat", &path)(err)),
        }
        if components.peek().is_none() {
            break;
        }
    }
    Ok(())
}

/// Replace a render input outside the manifests directory (`lock --pin-sources`) the way
/// lockstep writes its own files: a temporary file beside it, renamed over it.
pub fn rewrite_input(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    if fs::symlink_metadata(path)
        .map_err(io_error("cannot stat", path))?
        .file_type()
        .is_symlink()
    {
        return Err(SourceError::Symlink {
            path: path.to_owned(),
        });
    }
    write_atomically(path, bytes)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // Hidden and named for lockstep, though every file is an input now: a leftover after a
    // crash is read as a bound file, so `verify` fails (closed) naming it until it is removed.
    let tmp = parent.join(format!(
        ".{name}.lockstep-tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_tmp_and_rename(&tmp, path, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_error("cannot create", tmp))?;
    // Keep the permissions of the file being replaced (a rename would otherwise reset them).
    match fs::metadata(path) {
        Ok(meta) => file
            .set_permissions(meta.permissions())
            .map_err(io_error("cannot set permissions of", tmp))?,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error("cannot stat", path)(err)),
    }
    file.write_all(bytes)
        .map_err(io_error("cannot write", tmp))?;
    file.sync_all().map_err(io_error("cannot sync", tmp))?;
    drop(file);
    fs::rename(tmp, path).map_err(io_error("cannot replace", path))?;
    sync_parent(path)
}

/// Make a rename or removal durable: the directory entry lives in the parent directory.
fn sync_parent(path: &Path) -> Result<(), SourceError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("cannot sync directory", parent))
}

#[cfg(test)]
mod tests {
    use super::super::MAX_DEPTH;
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn reads_every_file_but_git_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("apps/web/.git")).unwrap();
        fs::create_dir_all(dir.join(".git")).unwrap();
        fs::write(dir.join("apps/web/deploy.yaml"), "kind: Deployment\n").unwrap();
        fs::write(dir.join("svc.yml"), "kind: Service\n").unwrap();
        fs::write(dir.join("lockstep.lock"), "version = 1\n").unwrap();
        fs::write(dir.join("lockstep.lock.ci.sig"), "sig").unwrap();
        fs::write(dir.join("lockstep.toml"), "").unwrap();
        fs::write(dir.join("README.md"), "hi").unwrap();
        fs::write(dir.join(".gitignore"), "*.bak").unwrap();
        fs::write(dir.join(".git/x.yaml"), "git's own").unwrap();
        fs::write(dir.join("apps/web/.git/HEAD"), "git's own").unwrap();
        fs::write(dir.join("apps/lockstep.lock"), "not at the top").unwrap();

        let files = read_dir(dir).unwrap();
        let paths: Vec<_> = files.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                ".gitignore",
                "README.md",
                "apps/lockstep.lock",
                "apps/web/deploy.yaml",
                "lockstep.lock",
                "lockstep.lock.ci.sig",
                "lockstep.toml",
                "svc.yml"
            ]
        );
        assert_eq!(files.files["svc.yml"], b"kind: Service\n");
        let bound: Vec<_> = files.bound().map(|(path, _)| path).collect();
        assert_eq!(
            bound,
            [
                ".gitignore",
                "README.md",
                "apps/lockstep.lock",
                "apps/web/deploy.yaml",
                "lockstep.toml",
                "svc.yml"
            ]
        );
    }

    #[test]
    fn a_hidden_yaml_file_is_read_as_a_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join(".hidden/sub")).unwrap();
        fs::write(dir.join(".evil.yaml"), "kind: Pod\n").unwrap();
        fs::write(dir.join(".hidden/sub/deep.yml"), "kind: Pod\n").unwrap();
        let files = read_dir(dir).unwrap();
        let manifests: Vec<_> = files.manifests().map(|(path, _)| path).collect();
        assert_eq!(manifests, [".evil.yaml", ".hidden/sub/deep.yml"]);
    }

    #[test]
    fn an_upper_case_yaml_extension_is_a_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("APP.YAML"), "kind: Pod\n").unwrap();
        let files = read_dir(tmp.path()).unwrap();
        let manifests: Vec<_> = files.manifests().map(|(path, _)| path).collect();
        assert_eq!(manifests, ["APP.YAML"]);
    }

    /// The refusal and the path of a [`read_dir`] error that must be a refused input.
    fn refusal_of(err: SourceError) -> (Refusal, String) {
        match err {
            SourceError::Refused(RefusedInput { refusal, path }) => (refusal, path),
            other => panic!("expected a refused input, got {other}"),
        }
    }

    #[test]
    fn a_json_manifest_is_refused_with_a_hint() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("sub")).unwrap();
        fs::write(tmp.path().join("ok.yaml"), "kind: Pod\n").unwrap();
        fs::write(tmp.path().join("sub/pod.json"), "{}").unwrap();
        let err = read_dir(tmp.path()).unwrap_err();
        let message = err.to_string();
        let (refusal, path) = refusal_of(err);
        assert_eq!(refusal, Refusal::Json);
        assert_eq!(path, tmp.path().join("sub/pod.json").display().to_string());
        assert!(message.contains("convert it to YAML"), "{message}");
    }

    #[test]
    fn a_kustomization_is_refused_with_a_hint() {
        for name in ["kustomization.yaml", "Kustomization", "Chart.yaml"] {
            let tmp = tempfile::tempdir().unwrap();
            fs::write(tmp.path().join("deploy.yaml"), "kind: Pod\n").unwrap();
            fs::write(tmp.path().join(name), "resources: [deploy.yaml]\n").unwrap();
            let err = read_dir(tmp.path()).unwrap_err();
            let message = err.to_string();
            let (refusal, path) = refusal_of(err);
            let expected = if name == "Chart.yaml" {
                Refusal::HelmChart
            } else {
                Refusal::Kustomization
            };
            assert_eq!(refusal, expected, "{name}");
            assert_eq!(path, tmp.path().join(name).display().to_string());
            assert!(
                message.contains("render it and lock the output"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_file_name_with_a_newline_is_refused() {
        for rel in [
            "evil\n# Source: ok.yaml",
            "dir\nname/app.yaml",
            "readme\u{2028}",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "kind: Pod\n").unwrap();
            let err = read_dir(tmp.path()).unwrap_err();
            let message = err.to_string();
            let (refusal, refused_path) = refusal_of(err);
            assert_eq!(refusal, Refusal::ControlCharacter, "{rel:?}");
            // The first component with the character is the one named, escaped.
            let first = rel.split('/').next().unwrap();
            assert_eq!(refused_path, tmp.path().join(first).display().to_string());
            assert!(
                !message.contains('\n') && !message.contains('\u{2028}'),
                "{message:?}"
            );
        }
    }

    /// A chain of `depth` directories named `d` under `dir`, built from the inside out by
    /// renames, so no path ever grows longer than `x/d` (the kernel refuses long ones).
    fn deep_chain(dir: &Path, depth: usize) {
        fs::create_dir(dir.join("x")).unwrap();
        fs::write(dir.join("x/app.yaml"), "kind: Pod\n").unwrap();
        for _ in 1..depth {
            fs::create_dir(dir.join("y")).unwrap();
            fs::rename(dir.join("x"), dir.join("y/d")).unwrap();
            fs::rename(dir.join("y"), dir.join("x")).unwrap();
        }
        fs::rename(dir.join("x"), dir.join("d")).unwrap();
    }

    /// Undo [`deep_chain`] the same way: `remove_dir_all` would need a file descriptor per level.
    fn remove_deep_chain(dir: &Path) {
        fs::rename(dir.join("d"), dir.join("x")).unwrap();
        while dir.join("x/d").exists() {
            fs::rename(dir.join("x/d"), dir.join("y")).unwrap();
            fs::remove_dir(dir.join("x")).unwrap();
            fs::rename(dir.join("y"), dir.join("x")).unwrap();
        }
        fs::remove_dir_all(dir.join("x")).unwrap();
    }

    #[test]
    fn a_20000_deep_directory_chain_is_refused_not_a_stack_overflow() {
        let tmp = tempfile::tempdir().unwrap();
        deep_chain(tmp.path(), 20_000);
        let err = read_dir(tmp.path()).unwrap_err();
        let SourceError::Limit(LimitError::TooDeep { path, limit }) = &err else {
            panic!("expected TooDeep, got {err}");
        };
        assert_eq!(*limit, MAX_DEPTH);
        let expected = tmp.path().join(vec!["d"; MAX_DEPTH + 1].join("/"));
        assert_eq!(*path, expected.display().to_string());
        remove_deep_chain(tmp.path());

        // At the limit itself the chain is read.
        deep_chain(tmp.path(), MAX_DEPTH);
        let files = read_dir(tmp.path()).unwrap();
        let manifests: Vec<_> = files.manifests().map(|(path, _)| path.to_owned()).collect();
        assert_eq!(
            manifests,
            [format!("{}/app.yaml", vec!["d"; MAX_DEPTH].join("/"))]
        );
    }

    #[test]
    fn symlinks_are_refused_with_their_path() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.yaml"), "x").unwrap();
        fs::create_dir(tmp.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("sub/linked")).unwrap();
        let err = read_dir(tmp.path()).unwrap_err();
        assert!(matches!(err, SourceError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("sub/linked"), "{err}");
    }

    #[test]
    fn an_oversized_file_is_refused_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let file = File::create(tmp.path().join("huge.yaml")).unwrap();
        file.set_len(super::super::MAX_FILE_BYTES + 1).unwrap();
        let err = read_dir(tmp.path()).unwrap_err();
        assert!(
            matches!(err, SourceError::Limit(LimitError::FileTooLarge { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("huge.yaml"), "{err}");
    }

    #[test]
    fn writes_replace_files_and_leave_no_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/a.yaml"), "old").unwrap();
        fs::write(dir.join("lockstep.lock.old.sig"), "stale").unwrap();
        write_files(
            dir,
            &[
                ("sub/a.yaml".into(), b"new".to_vec()),
                ("lockstep.lock".into(), b"lock".to_vec()),
            ],
            &[
                "lockstep.lock.old.sig".into(),
                "lockstep.lock.absent.sig".into(),
            ],
        )
        .unwrap();
        assert_eq!(fs::read(dir.join("sub/a.yaml")).unwrap(), b"new");
        assert_eq!(fs::read(dir.join("lockstep.lock")).unwrap(), b"lock");
        assert_eq!(names(dir), ["lockstep.lock", "sub"]);
        assert_eq!(names(&dir.join("sub")), ["a.yaml"]);
    }

    #[test]
    fn writes_keep_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.yaml");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_files(tmp.path(), &[("a.yaml".into(), b"new".to_vec())], &[]).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn writes_outside_the_inputs_are_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [
            "../escape.yaml",
            "/etc/x.yaml",
            ".git/x.yaml",
            "notes.txt",
            "app.json",
            "sub/lockstep.lock",
        ] {
            let err = write_files(
                tmp.path(),
                &[
                    ("ok.yaml".into(), b"x".to_vec()),
                    (bad.into(), b"x".to_vec()),
                ],
                &[],
            )
            .unwrap_err();
            assert!(
                matches!(err, SourceError::NotAnInputPath { .. }),
                "{bad}: {err}"
            );
        }
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn writes_through_a_symlinked_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), tmp.path().join("sub")).unwrap();
        let err =
            write_files(tmp.path(), &[("sub/a.yaml".into(), b"x".to_vec())], &[]).unwrap_err();
        assert!(matches!(err, SourceError::Symlink { .. }), "{err}");
        assert!(names(outside.path()).is_empty());
    }

    #[test]
    fn a_write_into_a_missing_directory_names_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let err =
            write_files(tmp.path(), &[("missing/a.yaml".into(), b"x".to_vec())], &[]).unwrap_err();
        assert!(err.to_string().contains("a.yaml"), "{err}");
    }

    #[test]
    fn an_input_is_resolved_inside_its_top_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().canonicalize().unwrap();
        let dir = top.join("deploy/prod");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(top.join("charts/api")).unwrap();
        fs::write(top.join("values.yaml"), "x: 1\n").unwrap();
        let found = |root: &str| resolve_input(&dir, &top, root).map(|f| f.map(|(_, k)| k));
        assert_eq!(found("../../charts").unwrap(), Some(InputKind::Dir));
        assert_eq!(found("../../values.yaml").unwrap(), Some(InputKind::File));
        assert_eq!(found("../..").unwrap(), Some(InputKind::Dir));
        assert_eq!(found("../../missing").unwrap(), None);
        // A file where a directory should be is nothing, not an error.
        assert_eq!(found("../../values.yaml/x").unwrap(), None);
        assert!(matches!(
            found("../../../etc").unwrap_err(),
            SourceError::OutsideTop { .. }
        ));
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(outside.path().join("api")).unwrap();
        std::os::unix::fs::symlink(outside.path(), top.join("linked")).unwrap();
        let err = found("../../linked/api").unwrap_err();
        assert!(
            matches!(&err, SourceError::Symlink { path } if *path == top.join("linked")),
            "{err}"
        );
    }
}
