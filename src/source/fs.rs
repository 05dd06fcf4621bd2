//! The work tree: reading a manifests directory's input files and writing files atomically.
//!
//! Symlinks are refused rather than followed: one could lead outside the directory, and Git
//! stores a symlink as its target path, so the work tree and a commit would disagree about
//! what the "file" is.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{LimitError, SourceFiles, role_of};

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
    #[error("{path} has a name that is not valid UTF-8")]
    NonUtf8Name { path: PathBuf },
    /// A path given to [`write_files`] that is not an input file of the directory.
    #[error(
        "refusing to write {path:?}: not a lockstep input path (a relative path to a *.yaml/*.yml manifest, lockstep.toml, lockstep.lock or a signature, with no hidden or '..' components)"
    )]
    NotAnInputPath { path: String },
    /// A size limit was exceeded.
    #[error(transparent)]
    Limit(#[from] LimitError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SourceError + use<> {
    let path = path.to_owned();
    move |source| SourceError::Io {
        action,
        path,
        source,
    }
}

/// Read every input file under `dir`, recursively and in a deterministic order. Hidden files
/// and directories are skipped without being opened; a symlink anywhere else is an error.
pub fn read_dir(dir: &Path) -> Result<SourceFiles, SourceError> {
    let meta = fs::metadata(dir).map_err(io_error("cannot read", dir))?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let mut files = SourceFiles::default();
    walk(dir, "", &mut files)?;
    Ok(files)
}

fn walk(dir: &Path, rel_dir: &str, files: &mut SourceFiles) -> Result<(), SourceError> {
    let mut entries = fs::read_dir(dir)
        .map_err(io_error("cannot list", dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error("cannot list", dir))?;
    // Sorted so that errors and limits hit the same file on every run.
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        // Hidden entries first: a `.git` or `.cache` is skipped whatever its name encoding.
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let Some(name) = name.to_str() else {
            return Err(SourceError::NonUtf8Name { path });
        };
        let rel = if rel_dir.is_empty() {
            name.to_owned()
        } else {
            format!("{rel_dir}/{name}")
        };
        let file_type = entry.file_type().map_err(io_error("cannot stat", &path))?;
        if file_type.is_symlink() {
            return Err(SourceError::Symlink { path });
        }
        if file_type.is_dir() {
            walk(&path, &rel, files)?;
            continue;
        }
        if role_of(&rel).is_none() {
            continue;
        }
        if !file_type.is_file() {
            return Err(SourceError::NotAFile { path });
        }
        let bytes = read_limited(&path, &rel, files)?;
        files.insert(rel, bytes)?;
    }
    Ok(())
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
/// file that does not exist is not an error. Every path must be an input path
/// ([`role_of`]) whose directories exist and are not symlinks.
pub fn write_files(
    dir: &Path,
    writes: &[(String, Vec<u8>)],
    removals: &[String],
) -> Result<(), SourceError> {
    let paths = writes.iter().map(|(rel, _)| rel).chain(removals);
    for rel in paths {
        if role_of(rel).is_none() {
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

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // Hidden, so that a leftover after a crash is never read as an input.
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
    fn reads_inputs_recursively_and_skips_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("apps/web")).unwrap();
        fs::create_dir_all(dir.join(".git")).unwrap();
        fs::write(dir.join("apps/web/deploy.yaml"), "kind: Deployment\n").unwrap();
        fs::write(dir.join("svc.yml"), "kind: Service\n").unwrap();
        fs::write(dir.join("lockstep.lock"), "version = 1\n").unwrap();
        fs::write(dir.join("lockstep.lock.ci.sig"), "sig").unwrap();
        fs::write(dir.join("lockstep.toml"), "").unwrap();
        fs::write(dir.join("README.md"), "hi").unwrap();
        fs::write(dir.join(".git/x.yaml"), "hidden").unwrap();
        fs::write(dir.join("apps/lockstep.lock"), "not at the top").unwrap();

        let files = read_dir(dir).unwrap();
        let paths: Vec<_> = files.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "apps/web/deploy.yaml",
                "lockstep.lock",
                "lockstep.lock.ci.sig",
                "lockstep.toml",
                "svc.yml"
            ]
        );
        assert_eq!(files.files["svc.yml"], b"kind: Service\n");
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
            ".hidden.yaml",
            "notes.txt",
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
}
