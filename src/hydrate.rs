//! EDGE: render steps run with the real tools (`kustomize build`, `helm template`) in a
//! sandbox, and the readers of their input files (work tree or commit).
//!
//! A step runs in a fresh temporary directory holding only copies of its input roots, laid
//! out as in the repository, so the digest the lockfile records over those files covers
//! everything the tool could read. The tool runs with an empty environment (a private
//! `HOME`, Helm's homes inside it, no `PATH` — kustomize cannot run `git` for a remote base —
//! and an HTTP proxy that refuses every connection), no cluster, a deadline and a bounded
//! output; whatever it writes stays in the sandbox, which is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::files::MAX_FILE_BYTES;
use crate::render::{
    InputReader, RenderRecord, RenderSource, RenderStep, Renderer, input_binding, is_within,
    minimal_roots, normalize,
};
use crate::source::{fs, git};

/// The longest one render may take.
pub const RENDER_DEADLINE: Duration = Duration::from_secs(300);
/// The most of a failing tool's error output shown.
const MAX_STDERR: u64 = 64 * 1024;
/// The most kustomization roots one step may reach.
const MAX_ROOTS: usize = 256;

/// A render step could not be run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum HydrateError {
    #[error("{renderer} is needed for {output} but was not found: {hint}")]
    ToolMissing {
        renderer: Renderer,
        output: String,
        hint: String,
    },
    #[error(
        "{path} does not report a usable {renderer} version ({found:?}): {renderer} {wanted} is needed"
    )]
    ToolVersion {
        renderer: Renderer,
        path: PathBuf,
        found: String,
        wanted: &'static str,
    },
    #[error("{output}: `{command}` failed:\n{stderr}")]
    Failed {
        output: String,
        command: String,
        stderr: String,
    },
    #[error("{output}: `{command}` did not finish within {} s", RENDER_DEADLINE.as_secs())]
    TimedOut { output: String, command: String },
    #[error("{output}: the rendered output is over {MAX_FILE_BYTES} bytes")]
    TooLarge { output: String },
    #[error(
        "{output}: {file} refers to {entry:?}, which would make rendering depend on the network; vendor it into the repository (copy the base, or `helm pull --untar` the chart) and refer to it by path"
    )]
    Remote {
        output: String,
        file: String,
        entry: String,
    },
    #[error(
        "{output}: {file} uses helmCharts, which kustomize inflates by downloading charts; render the chart with a `helm` render step instead"
    )]
    KustomizeHelm { output: String, file: String },
    #[error("{output}: the input {root:?} cannot be read: {reason}")]
    Inputs {
        output: String,
        root: String,
        reason: String,
    },
    #[error("{output}: {reason}")]
    Invalid { output: String, reason: String },
    #[error(
        "{output} exists and is not a rendered output of the lockfile on disk: lockstep will not overwrite a hand-written manifest; remove it or choose another output"
    )]
    HandWritten { output: String },
    #[error("the render sandbox: {0}")]
    Sandbox(#[source] std::io::Error),
    #[error("the Git work tree of the locked directory: {0}")]
    WorkTree(String),
    #[error("{output}: the chart {reference} cannot be fetched: {source}")]
    Chart {
        output: String,
        reference: String,
        #[source]
        source: Box<crate::registry::ResolveError>,
    },
}

impl HydrateError {
    /// Whether the environment is at fault (a missing or wrong tool, the sandbox): exit 2.
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            HydrateError::ToolMissing { .. }
                | HydrateError::ToolVersion { .. }
                | HydrateError::Sandbox(_)
                | HydrateError::WorkTree(_)
        ) || matches!(self, HydrateError::Chart { source, .. } if !source.is_finding())
    }
}

/// Where the tools are: given by flag or environment, else found on `PATH`.
#[derive(Clone, Debug, Default)]
pub struct Tools {
    pub kustomize: Option<PathBuf>,
    pub helm: Option<PathBuf>,
}

/// One tool, found and asked for its version.
#[derive(Clone, Debug)]
pub struct Tool {
    pub path: PathBuf,
    pub version: String,
}

impl Tools {
    /// The tool for `renderer`, its version checked (kustomize v5, helm v3 or v4).
    pub fn find(&self, renderer: Renderer, output: &str) -> Result<Tool, HydrateError> {
        let (given, install) = match renderer {
            Renderer::Kustomize => (
                &self.kustomize,
                "install it (`go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1`) or pass --kustomize PATH",
            ),
            Renderer::Helm => (
                &self.helm,
                "install it (`go install helm.sh/helm/v3/cmd/helm@v3.21.4`) or pass --helm PATH",
            ),
        };
        let missing = || HydrateError::ToolMissing {
            renderer,
            output: output.to_owned(),
            hint: install.to_owned(),
        };
        let path = match given {
            Some(p) => p.clone(),
            None => on_path(renderer.name()).ok_or_else(missing)?,
        };
        // The tool runs from inside the sandbox: a relative path would not find it there.
        let path = std::path::absolute(&path).map_err(|_| missing())?;
        let args: &[&str] = match renderer {
            Renderer::Kustomize => &["version"],
            Renderer::Helm => &["version", "--template", "{{.Version}}"],
        };
        let out = Command::new(&path)
            .args(args)
            .env_clear()
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .map_err(|_| missing())?;
        let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let wanted = match renderer {
            Renderer::Kustomize => "v5",
            Renderer::Helm => "v3 or v4",
        };
        let ok = out.status.success()
            && match renderer {
                Renderer::Kustomize => found.starts_with("v5."),
                Renderer::Helm => found.starts_with("v3.") || found.starts_with("v4."),
            };
        if !ok {
            return Err(HydrateError::ToolVersion {
                renderer,
                path,
                found,
                wanted,
            });
        }
        Ok(Tool {
            path,
            version: found,
        })
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt as _;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// Where a locked directory's render inputs may come from: the Git work tree it is in.
#[derive(Debug)]
pub struct Frame {
    /// The locked directory, canonical.
    dir: PathBuf,
    /// The tree no input may leave: the Git work tree's root.
    top: PathBuf,
    /// The locked directory's path components below `top`.
    anchor: Vec<String>,
    /// The paths (relative to `top`) Git tracks, when every input must be one of them.
    tracked: Option<BTreeSet<String>>,
}

impl Frame {
    /// The frame `lock` renders in: the Git work tree of `dir`, every input a file Git
    /// tracks (a commit holds nothing else, so an ignored or new file would make the lockfile
    /// fail `verify --rev` and the reconciler — or carry a secret into a rendered output).
    /// Outside Git the locked directory itself is the top: nothing would bound what `..`
    /// reaches, and no one else could verify inputs that no repository holds.
    pub fn for_lock(dir: &Path) -> Result<Frame, HydrateError> {
        let dir = dir.canonicalize().map_err(HydrateError::Sandbox)?;
        Ok(match git::work_tree_of(&dir).map_err(work_tree_error)? {
            Some(tree) => Frame {
                dir,
                top: tree.root,
                anchor: components(&tree.prefix),
                tracked: Some(tree.tracked),
            },
            None => Frame {
                top: dir.clone(),
                dir,
                anchor: Vec::new(),
                tracked: None,
            },
        })
    }

    /// The frame `verify` reads a tree as it is in: the Git work tree, or (an exported tree
    /// in no repository) the whole filesystem, the paths hashed whether tracked or not.
    pub fn for_reading(dir: &Path) -> Result<Frame, HydrateError> {
        let dir = dir.canonicalize().map_err(HydrateError::Sandbox)?;
        Ok(match git::work_tree_of(&dir).map_err(work_tree_error)? {
            Some(tree) => Frame {
                dir,
                top: tree.root,
                anchor: components(&tree.prefix),
                tracked: None,
            },
            None => Frame {
                anchor: dir
                    .components()
                    .filter_map(|c| match c {
                        std::path::Component::Normal(name) => {
                            Some(name.to_string_lossy().into_owned())
                        }
                        _ => None,
                    })
                    .collect(),
                top: PathBuf::from("/"),
                dir,
                tracked: None,
            },
        })
    }

    /// The locked directory's path components below the top.
    pub fn anchor(&self) -> &[String] {
        &self.anchor
    }

    /// `path` (relative to the locked directory, normalized) relative to the top; `None`
    /// above it, empty for the top itself.
    fn in_top(&self, path: &str) -> Option<String> {
        let mut parts: Vec<&str> = self.anchor.iter().map(String::as_str).collect();
        for part in path.split('/') {
            if part == ".." {
                parts.pop()?;
            } else {
                parts.push(part);
            }
        }
        Some(parts.join("/"))
    }

    /// Every root inside the top and apart from the locked directory: every file in the
    /// locked directory is a manifest or a bound file of its lockfile (rewritten by `lock`),
    /// so an input there, or one holding it, would be an input of its own output.
    fn check_roots(&self, step: &RenderStep, roots: &[String]) -> Result<(), HydrateError> {
        let locked = self.anchor.join("/");
        for root in roots {
            let Some(in_top) = self.in_top(root) else {
                let place = if self.tracked.is_some() || self.top != self.dir {
                    "outside the Git work tree the locked directory is in"
                } else {
                    "outside the locked directory, which is in no Git work tree (run `lockstep lock` in the repository that holds the sources)"
                };
                return Err(invalid(step, format!("the input {root:?} lies {place}")));
            };
            if in_top.is_empty() || is_within(&locked, &in_top) {
                return Err(invalid(
                    step,
                    format!(
                        "the input {root:?} holds the locked directory, whose files (the lockfile, the outputs) cannot be inputs of themselves; name the directories the step reads"
                    ),
                ));
            }
            if !root.starts_with("..") {
                return Err(invalid(
                    step,
                    format!(
                        "the input {root:?} lies inside the locked directory, where every file is a manifest or bound by the lockfile; keep sources outside it (e.g. ../charts, ../overlays)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn components(prefix: &str) -> Vec<String> {
    prefix
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn work_tree_error(e: git::GitError) -> HydrateError {
    HydrateError::WorkTree(crate::error_chain::one_line(&e))
}

/// Render inputs in the work tree, inside the frame of the locked directory.
pub struct FsInputs<'a> {
    pub frame: &'a Frame,
}

impl FsInputs<'_> {
    /// What `root` names, found without following a symlink.
    fn kind(&self, root: &str) -> Result<Option<fs::InputKind>, String> {
        fs::resolve_input(&self.frame.dir, &self.frame.top, root)
            .map(|found| found.map(|(_, kind)| kind))
            .map_err(|e| crate::error_chain::one_line(&e))
    }
}

impl InputReader for FsInputs<'_> {
    fn read_root(&self, root: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let files = fs::read_input_root(&self.frame.dir, &self.frame.top, root)
            .map_err(|e| crate::error_chain::one_line(&e))?;
        if let Some(tracked) = &self.frame.tracked {
            for (path, _) in &files {
                if !self
                    .frame
                    .in_top(path)
                    .is_some_and(|p| tracked.contains(&p))
                {
                    return Err(format!(
                        "{path} is not tracked by Git (new, or ignored): a commit would not hold it; `git add` it, or remove it from the input"
                    ));
                }
            }
        }
        Ok(files)
    }
}

/// The reader for a lockfile without render records, which is never asked for a root.
pub struct NoInputs;

impl InputReader for NoInputs {
    fn read_root(&self, root: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        Err(format!("{root}: the lockfile records no render step"))
    }
}

/// Render inputs as they are in commit `rev` of the repository holding `dir`.
pub struct GitInputs<'a> {
    pub dir: &'a Path,
    pub rev: &'a str,
}

impl InputReader for GitInputs<'_> {
    fn read_root(&self, root: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        git::read_input_root_at_rev(self.dir, self.rev, root)
            .map_err(|e| crate::error_chain::one_line(&e))
    }
}

/// Render inputs as they are in `commit` of the reconciler's cache repository, for the
/// manifests directory `path`.
pub struct CacheInputs<'a> {
    pub cache: &'a Path,
    pub commit: &'a str,
    pub path: &'a str,
}

impl InputReader for CacheInputs<'_> {
    fn read_root(&self, root: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        git::read_input_root_in_cache(self.cache, self.commit, self.path, root)
            .map_err(|e| crate::error_chain::one_line(&e))
    }
}

/// The input roots of `step`: the ones it names and, for kustomize, every local path its
/// kustomizations refer to (resources, bases, components, generators, transformers,
/// validators), directories followed transitively. A reference that is not a path in the
/// repository (a URL, `github.com/…`, `?ref=`) or names nothing is refused before anything
/// runs, and so is a root outside the frame or holding the locked directory. The sandbox,
/// not this walk, guarantees that nothing else is read: a root it misses makes the render
/// fail.
pub fn roots_of(inputs: &FsInputs<'_>, step: &RenderStep) -> Result<Vec<String>, HydrateError> {
    let mut roots = step.named_roots();
    inputs.frame.check_roots(step, &roots)?;
    if let RenderSource::Kustomize { dir: start } = &step.source {
        let mut queue = vec![start.clone()];
        let mut seen = BTreeSet::new();
        while let Some(kdir) = queue.pop() {
            if !seen.insert(kdir.clone()) {
                continue;
            }
            if seen.len() > MAX_ROOTS {
                return Err(invalid(
                    step,
                    format!("the kustomizations reach more than {MAX_ROOTS} directories"),
                ));
            }
            let (file, refs) = kustomization_refs(inputs, step, &kdir)?;
            for entry in refs {
                let target = normalize(&format!("{kdir}/{entry}")).map_err(|r| invalid(step, r))?;
                inputs
                    .frame
                    .check_roots(step, std::slice::from_ref(&target))?;
                match inputs
                    .kind(&target)
                    .map_err(|reason| HydrateError::Inputs {
                        output: step.output.clone(),
                        root: target.clone(),
                        reason,
                    })? {
                    Some(fs::InputKind::Dir) => {
                        roots.push(target.clone());
                        queue.push(target);
                    }
                    Some(fs::InputKind::File) => roots.push(target),
                    None => {
                        return Err(invalid(
                            step,
                            format!("{file} refers to {entry:?}, which does not exist"),
                        ));
                    }
                }
            }
        }
    }
    let roots = minimal_roots(roots);
    inputs.frame.check_roots(step, &roots)?;
    Ok(roots)
}

fn invalid(step: &RenderStep, reason: String) -> HydrateError {
    HydrateError::Invalid {
        output: step.output.clone(),
        reason,
    }
}

/// The kustomization in `kdir` and the local paths it refers to. Read only to find more
/// input roots and refuse what would reach the network; the tool itself reads it for
/// rendering.
fn kustomization_refs(
    inputs: &FsInputs<'_>,
    step: &RenderStep,
    kdir: &str,
) -> Result<(String, Vec<String>), HydrateError> {
    let unreadable = |root: String| {
        move |reason| HydrateError::Inputs {
            output: step.output.clone(),
            root,
            reason,
        }
    };
    let mut name = None;
    for candidate in ["kustomization.yaml", "kustomization.yml", "Kustomization"] {
        let path = format!("{kdir}/{candidate}");
        if inputs.kind(&path).map_err(unreadable(path.clone()))? == Some(fs::InputKind::File) {
            name = Some(path);
            break;
        }
    }
    let Some(file) = name else {
        return Err(invalid(step, format!("{kdir} has no kustomization.yaml")));
    };
    let bytes = inputs
        .read_root(&file)
        .map_err(unreadable(file.clone()))?
        .pop()
        .map(|(_, b)| b)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let doc: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|e| invalid(step, format!("{file} is not a kustomization: {e}")))?;
    if doc.get("helmCharts").is_some() || doc.get("helmChartInflationGenerator").is_some() {
        return Err(HydrateError::KustomizeHelm {
            output: step.output.clone(),
            file,
        });
    }
    let remote = |entry: &str| HydrateError::Remote {
        output: step.output.clone(),
        file: file.clone(),
        entry: entry.to_owned(),
    };
    // Files kustomize loads by path, which its loader would also fetch from an http(s) URL.
    for entry in file_entries(&doc) {
        if is_url(entry) {
            return Err(remote(entry));
        }
    }
    let mut refs = Vec::new();
    for key in [
        "resources",
        "bases",
        "components",
        "generators",
        "transformers",
        "validators",
    ] {
        for entry in strings(doc.get(key)) {
            // A generator or transformer given inline, as YAML, is no path.
            if entry.contains('\n') {
                continue;
            }
            if is_remote(entry) {
                return Err(remote(entry));
            }
            refs.push(entry.to_owned());
        }
    }
    Ok((file, refs))
}

/// The strings of a list (other entries skipped).
fn strings(value: Option<&serde_json::Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
}

/// The file paths a kustomization names outside `resources` and its kin: CRDs,
/// configurations, patches, replacements, the OpenAPI schema, generator sources.
fn file_entries(doc: &serde_json::Value) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for key in ["crds", "configurations", "patchesStrategicMerge"] {
        out.extend(strings(doc.get(key)).filter(|s| !s.contains('\n')));
    }
    for key in ["patchesJson6902", "patches", "replacements"] {
        for item in doc
            .get(key)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(item.get("path").and_then(serde_json::Value::as_str));
        }
    }
    out.extend(
        doc.get("openapi")
            .and_then(|o| o.get("path"))
            .and_then(serde_json::Value::as_str),
    );
    for key in ["configMapGenerator", "secretGenerator"] {
        for item in doc
            .get(key)
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(
                strings(item.get("files")).map(|f| f.split_once('=').map_or(f, |(_, path)| path)),
            );
            out.extend(strings(item.get("envs")));
            out.extend(item.get("env").and_then(serde_json::Value::as_str));
        }
    }
    out
}

/// An http(s) URL, in any case.
fn is_url(entry: &str) -> bool {
    let lower = entry.trim_start().to_ascii_lowercase();
    lower.starts_with("http:") || lower.starts_with("https:")
}

/// A kustomize reference to something outside the repository.
fn is_remote(entry: &str) -> bool {
    is_url(entry)
        || entry.contains("://")
        || entry.starts_with("git@")
        || entry.contains("?ref=")
        || entry.contains("?version=")
        || ["github.com/", "gitlab.com/", "bitbucket.org/"]
            .iter()
            .any(|host| entry.starts_with(host))
}

/// One output rendered: its bytes as the tool wrote them (before pinning) and its record.
#[derive(Debug)]
pub struct Rendered {
    pub output: String,
    pub bytes: Vec<u8>,
    pub record: RenderRecord,
}

/// Render `step` from the files of `roots`, read by `reader`. `anchor` is the locked
/// directory's path components (from the filesystem root, or the repository root): enough of
/// them to place every `..` of the roots.
pub fn render(
    step: &RenderStep,
    roots: Vec<String>,
    reader: &dyn InputReader,
    anchor: &[String],
    tool: &Tool,
    chart: Option<&FetchedChart>,
) -> Result<Rendered, HydrateError> {
    if step.oci_chart().is_some() != chart.is_some() {
        return Err(invalid(
            step,
            "the chart from the OCI registry was not fetched".into(),
        ));
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for root in &roots {
        files.extend(
            reader
                .read_root(root)
                .map_err(|reason| HydrateError::Inputs {
                    output: step.output.clone(),
                    root: root.clone(),
                    reason,
                })?,
        );
        // Each root is bounded by its walk; all of them together, before more are held.
        let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        if files.len() > crate::files::MAX_FILES || total > crate::files::MAX_TOTAL_BYTES {
            return Err(invalid(
                step,
                format!(
                    "the render inputs reach more than {} files or {} bytes (at {root})",
                    crate::files::MAX_FILES,
                    crate::files::MAX_TOTAL_BYTES
                ),
            ));
        }
    }
    if let Some(inside) = roots.iter().find(|r| is_within(&step.output, r)) {
        return Err(invalid(
            step,
            format!("the output lies inside its own input {inside:?}"),
        ));
    }
    let inputs = input_binding(&roots, &Preloaded(&files)).map_err(|r| invalid(step, r))?;
    let sandbox = Sandbox::new(anchor, &roots, step).map_err(HydrateError::Sandbox)?;
    for (path, bytes) in &files {
        sandbox.place(path, bytes).map_err(HydrateError::Sandbox)?;
    }
    let archive = match chart {
        Some(chart) => Some(
            sandbox
                .place_chart(&chart.archive)
                .map_err(HydrateError::Sandbox)?,
        ),
        None => None,
    };
    let bytes = sandbox.run(step, tool, archive.as_deref())?;
    Ok(Rendered {
        output: step.output.clone(),
        bytes,
        record: RenderRecord {
            output: step.output.clone(),
            renderer: step.renderer(),
            version: tool.version.clone(),
            args: step.args(),
            roots,
            inputs,
            chart: chart.map(|c| c.pinned.clone()),
        },
    })
}

/// Fetch the charts `wanted` names (output → `oci://` reference, by version or pinned) from
/// their registries, one at a time (a directory has a few).
pub async fn fetch_charts(
    registry: &crate::resolve::oci::OciRegistry,
    wanted: Vec<(String, String)>,
) -> Result<BTreeMap<String, FetchedChart>, HydrateError> {
    let mut charts = BTreeMap::new();
    for (output, reference) in wanted {
        let written = reference
            .strip_prefix(crate::render::OCI_SCHEME)
            .unwrap_or(&reference);
        let image = crate::model::ImageRef::parse(written).map_err(|e| HydrateError::Invalid {
            output: output.clone(),
            reason: format!("chart {reference:?}: {}", e.reason),
        })?;
        let (digest, archive) =
            registry
                .fetch_chart(&image)
                .await
                .map_err(|source| HydrateError::Chart {
                    output: output.clone(),
                    reference: reference.clone(),
                    source: Box::new(source),
                })?;
        let pinned = crate::render::pinned_chart(&reference, &digest);
        charts.insert(output, FetchedChart { pinned, archive });
    }
    Ok(charts)
}

/// A Helm chart fetched from an OCI registry, its digests checked.
#[derive(Clone, Debug)]
pub struct FetchedChart {
    /// `oci://registry/repository:version@sha256:…`, as the lockfile records it.
    pub pinned: String,
    /// The chart archive (`.tgz`).
    pub archive: Vec<u8>,
}

/// Files already read, served again (so a render hashes exactly the bytes it copies).
struct Preloaded<'a>(&'a [(String, Vec<u8>)]);

impl InputReader for Preloaded<'_> {
    fn read_root(&self, root: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        Ok(self
            .0
            .iter()
            .filter(|(p, _)| is_within(p, root))
            .cloned()
            .collect())
    }
}

/// `unshare` arguments that run a program in new user and network namespaces: no network
/// interface but a loopback of its own, so no connection leaves the sandbox — not to the
/// internet, not to a service on the machine's loopback (which a proxy setting cannot stop).
const UNSHARE_ARGS: &[&str] = &["--user", "--map-root-user", "--net", "--"];

/// The `unshare` program, when this machine lets an unprivileged process make the
/// namespaces (probed once). Without it the tool runs with only the refusing proxy and the
/// reference checks between it and the network.
fn network_isolation() -> Option<&'static Path> {
    static UNSHARE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    UNSHARE
        .get_or_init(|| {
            ["/usr/bin/unshare", "/bin/unshare"]
                .into_iter()
                .map(PathBuf::from)
                .find(|unshare| {
                    Command::new(unshare)
                        .args(UNSHARE_ARGS)
                        .arg(unshare)
                        .arg("--version")
                        .env_clear()
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                })
        })
        .as_deref()
}

/// Whether render steps run without a network on this machine.
pub fn network_isolated() -> bool {
    network_isolation().is_some()
}

/// The temporary tree a step runs in.
struct Sandbox {
    temp: tempfile::TempDir,
    /// The locked directory's place in the tree, relative to `tree`.
    locked: String,
}

impl Sandbox {
    fn new(anchor: &[String], roots: &[String], step: &RenderStep) -> std::io::Result<Sandbox> {
        let up = roots
            .iter()
            .map(|r| r.split('/').take_while(|c| *c == "..").count())
            .max()
            .unwrap_or(0);
        if up > anchor.len() {
            return Err(std::io::Error::other(format!(
                "{}: an input lies {up} directories above the locked directory, outside the repository",
                step.output
            )));
        }
        // Named after the locked directory's own path, so that what the tool sees of the
        // layout is what the repository has.
        let locked = anchor[anchor.len() - up..].join("/");
        let temp = tempfile::Builder::new()
            .prefix("lockstep-render-")
            .tempdir()?;
        for sub in ["home", "tmp", "tree"] {
            std::fs::create_dir_all(temp.path().join(sub))?;
        }
        std::fs::create_dir_all(temp.path().join("tree").join(&locked))?;
        Ok(Sandbox { temp, locked })
    }

    fn place(&self, path: &str, bytes: &[u8]) -> std::io::Result<()> {
        let joined = if self.locked.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.locked)
        };
        let rel = normalize(&joined).map_err(std::io::Error::other)?;
        if rel.starts_with("..") {
            return Err(std::io::Error::other(format!(
                "{path} lies outside the sandbox"
            )));
        }
        let target = self.temp.path().join("tree").join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(target, bytes)
    }

    /// Put a fetched chart archive beside the tree; its path, for the tool.
    fn place_chart(&self, archive: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.temp.path().join("chart.tgz");
        std::fs::write(&path, archive)?;
        Ok(path)
    }

    /// Run the tool from the locked directory's place (a fetched chart given as its archive
    /// in place of its reference); its standard output, bounded.
    fn run(
        &self,
        step: &RenderStep,
        tool: &Tool,
        archive: Option<&Path>,
    ) -> Result<Vec<u8>, HydrateError> {
        let home = self.temp.path().join("home");
        let command = format!("{} {}", step.renderer(), step.args().join(" "));
        let mut args = step.args();
        if let (Some(archive), Some(reference)) = (archive, step.oci_chart()) {
            let declared = format!("{}{reference}", crate::render::OCI_SCHEME);
            for arg in args.iter_mut().filter(|a| **a == declared) {
                *arg = archive.display().to_string();
            }
        }
        let mut cmd = match network_isolation() {
            Some(unshare) => {
                let mut cmd = Command::new(unshare);
                cmd.args(UNSHARE_ARGS).arg(&tool.path);
                cmd
            }
            None => Command::new(&tool.path),
        };
        cmd.args(&args)
            .current_dir(self.temp.path().join("tree").join(&self.locked))
            .env_clear()
            .env("HOME", &home)
            .env("TMPDIR", self.temp.path().join("tmp"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("KUBECONFIG", home.join("no-kubeconfig"))
            .env("PATH", "")
            .env("LC_ALL", "C")
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("HTTPS_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .env("https_proxy", "http://127.0.0.1:9")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(HydrateError::Sandbox)?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stdout).take(MAX_FILE_BYTES + 1).read_to_end(&mut buf);
            // Drain the rest so the tool is never blocked on a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            buf
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR).read_to_end(&mut buf);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            buf
        });
        let deadline = Instant::now() + RENDER_DEADLINE;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(HydrateError::Sandbox)? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HydrateError::TimedOut {
                    output: step.output.clone(),
                    command,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            return Err(HydrateError::Failed {
                output: step.output.clone(),
                command,
                stderr: String::from_utf8_lossy(&stderr).trim_end().to_owned(),
            });
        }
        if stdout.len() as u64 > MAX_FILE_BYTES {
            return Err(HydrateError::TooLarge {
                output: step.output.clone(),
            });
        }
        Ok(stdout)
    }
}

/// `verify --rerender` found an output that is not what its step renders.
#[derive(Debug, thiserror::Error)]
pub enum RerenderError {
    #[error(transparent)]
    Hydrate(#[from] HydrateError),
    #[error("{} rendered output(s) differ from what their sources render:\n{}", .0.len(), .0.iter().map(|d| format!("  {d}")).collect::<Vec<_>>().join("\n"))]
    Differs(Vec<String>),
}

impl RerenderError {
    pub fn is_environment(&self) -> bool {
        matches!(self, RerenderError::Hydrate(e) if e.is_environment())
    }
}

/// Re-run every recorded render step of a verified directory from the inputs `reader` reads
/// (the same source the directory was read from), pin the result to the lockfile's digests,
/// and require the signed output's exact bytes. Returns the outputs checked.
pub fn rerender(
    verified: &crate::verify::VerifiedDir<'_>,
    files: &crate::files::SourceFiles,
    reader: &dyn InputReader,
    anchor: &[String],
    tools: &Tools,
    charts: &BTreeMap<String, FetchedChart>,
) -> Result<Vec<String>, RerenderError> {
    let lock = verified.lockfile();
    let mut differs = Vec::new();
    let mut checked = Vec::new();
    for step in verified.scan().config.renders() {
        let Some(record) = lock.renders.iter().find(|r| r.output == step.output) else {
            continue;
        };
        let tool = tools.find(step.renderer(), &step.output)?;
        let rendered = render(
            step,
            record.roots.clone(),
            reader,
            anchor,
            &tool,
            charts.get(&step.output),
        )?;
        let signed = files.files.get(&step.output).map(Vec::as_slice);
        let version_note = if tool.version == record.version {
            String::new()
        } else {
            format!(
                " (rendered with {} {}, re-rendered with {})",
                record.renderer, record.version, tool.version
            )
        };
        match pinned_like(lock, files, &step.output, rendered.bytes) {
            Err(why) => differs.push(format!("{}: {why}{version_note}", step.output)),
            Ok(bytes) if Some(bytes.as_slice()) != signed => differs.push(format!(
                "{}: the signed file is not what `{} {}` renders from its inputs{}{version_note}",
                step.output,
                step.renderer(),
                step.args().join(" "),
                signed.map_or_else(
                    || " (the file is missing)".to_owned(),
                    |s| first_difference(s, &bytes)
                ),
            )),
            Ok(_) => checked.push(step.output.clone()),
        }
    }
    if differs.is_empty() {
        Ok(checked)
    } else {
        Err(RerenderError::Differs(differs))
    }
}

/// `bytes` rendered for `output`, pinned exactly as `lock` records (no registry).
fn pinned_like(
    lock: &crate::lockfile::Lockfile,
    files: &crate::files::SourceFiles,
    output: &str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut one = crate::files::SourceFiles::default();
    if let Some(config) = files.config() {
        one.replace(crate::files::CONFIG_FILE.to_owned(), config.to_vec());
    }
    one.replace(output.to_owned(), bytes);
    let scan = crate::verify::scan_dir(&one).map_err(|e| crate::error_chain::one_line(&e))?;
    let pinned = crate::lock::pin_files(
        &one,
        &scan,
        Some(lock),
        &lock.known_resolutions(),
        &crate::lock::Holds::default(),
    )
    .map_err(|e| {
        format!(
            "cannot be pinned to the lockfile's digests: {}",
            crate::error_chain::one_line(&e)
        )
    })?;
    Ok(pinned.files.files[output].clone())
}

/// Where two renderings first differ, as " (first difference at line N)".
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let line = a[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    format!(" (first difference at line {line})")
}
