//! Render steps (pure): what `lockstep.toml` declares (`[[render]]`), the exact command each
//! step runs, and the provenance the lockfile records for each rendered output.
//!
//! ```toml
//! [[render]]
//! kustomize = "../overlays/prod"           # kustomize build, relative to the locked directory
//! output = "rendered/shop.yaml"
//!
//! [[render]]
//! helm = { chart = "../charts/api", release = "api", namespace = "shop", values = ["../values/prod.yaml"] }
//! output = "rendered/api.yaml"
//! inputs = ["../charts/common"]           # optional: more input trees the step reads
//! ```
//!
//! Every path is relative to the locked directory and `/`-separated. A step's *input roots*
//! are the trees (or files) copied into the sandbox the tool runs in: the step's source, its
//! values files, the directories a kustomization refers to, and `inputs`. Nothing else exists
//! there, so the digest over the roots' files covers everything the tool could have read.

use crate::lockfile::ManifestBinding;

/// Which tool a step runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Renderer {
    Kustomize,
    Helm,
}

impl Renderer {
    pub fn name(self) -> &'static str {
        match self {
            Renderer::Kustomize => "kustomize",
            Renderer::Helm => "helm",
        }
    }

    pub fn parse(name: &str) -> Option<Renderer> {
        match name {
            "kustomize" => Some(Renderer::Kustomize),
            "helm" => Some(Renderer::Helm),
            _ => None,
        }
    }
}

impl std::fmt::Display for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a step renders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderSource {
    /// `kustomize build DIR`.
    Kustomize { dir: String },
    /// `helm template RELEASE CHART` from a chart directory in the repository.
    Helm {
        chart: String,
        release: String,
        namespace: Option<String>,
        values: Vec<String>,
        kube_version: Option<String>,
    },
}

/// How a Helm chart in an OCI registry is named: `oci://registry/repository:version`.
pub const OCI_SCHEME: &str = "oci://";

/// A chart reference pinned to `digest` (its manifest's), as the lockfile records it: the
/// reference as written, `@digest` appended unless it carries one.
pub fn pinned_chart(written: &str, digest: &crate::model::Digest) -> String {
    if written.contains('@') {
        written.to_owned()
    } else {
        format!("{written}@{digest}")
    }
}

/// One `[[render]]` entry of `lockstep.toml`, its paths normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderStep {
    pub source: RenderSource,
    /// The rendered file, inside the locked directory.
    pub output: String,
    /// More input roots than the ones the step names itself.
    pub inputs: Vec<String>,
}

impl RenderStep {
    pub fn renderer(&self) -> Renderer {
        match self.source {
            RenderSource::Kustomize { .. } => Renderer::Kustomize,
            RenderSource::Helm { .. } => Renderer::Helm,
        }
    }

    /// The tool's arguments (after the program), run from the locked directory. No path
    /// argument starts with `-` ([`RenderStep`]'s paths are checked when parsed), every value
    /// of a flag is joined to it, so nothing in `lockstep.toml` can become a flag. Fixed flags
    /// make the run independent of the tool's defaults and of any cluster: kustomize reads
    /// only inside each kustomization's root, runs no plugin, exec function or Helm;
    /// `helm template` never contacts a cluster and includes the chart's CRDs (a rendered
    /// directory must carry them to apply them).
    pub fn args(&self) -> Vec<String> {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match &self.source {
            RenderSource::Kustomize { dir } => {
                let mut args = owned(&["build"]);
                args.push(dir.clone());
                args.extend(owned(&["--load-restrictor", "LoadRestrictionsRootOnly"]));
                args
            }
            RenderSource::Helm {
                chart,
                release,
                namespace,
                values,
                kube_version,
            } => {
                let mut args = vec!["template".to_owned(), release.clone(), chart.clone()];
                // `--flag=value` in one argument: a value can never be read as a flag.
                if let Some(ns) = namespace {
                    args.push(format!("--namespace={ns}"));
                }
                for v in values {
                    args.push(format!("--values={v}"));
                }
                if let Some(kv) = kube_version {
                    args.push(format!("--kube-version={kv}"));
                }
                args.push("--include-crds".to_owned());
                args
            }
        }
    }

    /// The chart reference (after `oci://`) of a Helm step whose chart is in an OCI
    /// registry.
    pub fn oci_chart(&self) -> Option<&str> {
        match &self.source {
            RenderSource::Helm { chart, .. } => chart.strip_prefix(OCI_SCHEME),
            RenderSource::Kustomize { .. } => None,
        }
    }

    /// The roots the step names itself: its source (unless a chart in a registry), its values
    /// files, `inputs`.
    pub fn named_roots(&self) -> Vec<String> {
        let mut roots = match &self.source {
            RenderSource::Kustomize { dir } => vec![dir.clone()],
            RenderSource::Helm { chart, values, .. } => {
                let mut r = Vec::new();
                if !chart.starts_with(OCI_SCHEME) {
                    r.push(chart.clone());
                }
                r.extend(values.iter().cloned());
                r
            }
        };
        roots.extend(self.inputs.iter().cloned());
        roots
    }
}

/// What the lockfile records of one rendered output: signed with the rest, so the output
/// is bound to the exact command and inputs that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderRecord {
    /// The output file, relative to the locked directory.
    pub output: String,
    pub renderer: Renderer,
    /// The tool's version as it reported it (`v5.7.1`).
    pub version: String,
    /// The tool's arguments, as [`RenderStep::args`].
    pub args: Vec<String>,
    /// The input roots, normalized, sorted, none inside another.
    pub roots: Vec<String>,
    /// Every file under the roots and its sha256 (paths relative to the locked directory).
    pub inputs: ManifestBinding,
    /// A chart from an OCI registry, pinned: `oci://registry/repository:version@sha256:…`
    /// (the digest of its manifest, which names the chart archive's digest).
    pub chart: Option<String>,
}

/// `path` (relative to the locked directory) made lexical: `/`-separated, no `.` or empty
/// components, `..` only leading. Refuses an absolute path, a backslash, a control
/// character, and a path that is the locked directory itself.
pub fn normalize(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("an empty path".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; write it relative to the locked directory"
        ));
    }
    if path.contains('\\') || path.chars().any(char::is_control) {
        return Err(format!("{path:?} holds a backslash or a control character"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ => parts.push(".."),
            },
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(format!("{path:?} is the locked directory itself"));
    }
    Ok(parts.join("/"))
}

/// Whether normalized `path` is `root` or lies below it.
pub fn is_within(path: &str, root: &str) -> bool {
    path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `roots` normalized, sorted and deduplicated, with every root inside another dropped.
pub fn minimal_roots(roots: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut all: Vec<String> = roots.into_iter().collect();
    all.sort();
    all.dedup();
    let mut kept: Vec<String> = Vec::new();
    for root in all {
        if !kept.iter().any(|k| is_within(&root, k)) {
            kept.retain(|k| !is_within(k, &root));
            kept.push(root);
        }
    }
    kept.sort();
    kept
}

/// Reads the input roots of render steps, from the work tree or from a commit: for a
/// directory every regular file below it, for a file that file; paths relative to the locked
/// directory. Symlinks and submodules are refused, sizes bounded like every other input.
pub trait InputReader {
    fn read_root(&self, root: &str) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// The binding (digest and listing) of every file under `roots`.
pub fn input_binding(
    roots: &[String],
    reader: &dyn InputReader,
) -> Result<ManifestBinding, String> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total: u64 = 0;
    for root in roots {
        for (path, bytes) in reader.read_root(root)? {
            // Each root is bounded by its walk; all of them together by the input limits.
            total += bytes.len() as u64;
            if files.len() >= crate::files::MAX_FILES || total > crate::files::MAX_TOTAL_BYTES {
                return Err(format!(
                    "the render inputs reach more than {} files or {} bytes (at {path})",
                    crate::files::MAX_FILES,
                    crate::files::MAX_TOTAL_BYTES
                ));
            }
            files.push((path, bytes));
        }
    }
    Ok(ManifestBinding::compute(
        files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
    ))
}

/// What is wrong between the render steps of `lockstep.toml`, the records of the signed
/// lockfile and the input files as they are now. Hashes only: nothing is parsed.
pub fn check_renders(
    records: &[RenderRecord],
    steps: &[RenderStep],
    reader: &dyn InputReader,
) -> Vec<RenderFinding> {
    let mut findings = Vec::new();
    for step in steps {
        match records.iter().find(|r| r.output == step.output) {
            None => findings.push(RenderFinding::NotLocked {
                output: step.output.clone(),
            }),
            Some(r)
                if r.renderer != step.renderer()
                    || r.args != step.args()
                    || !chart_agrees(r.chart.as_deref(), step.oci_chart()) =>
            {
                findings.push(RenderFinding::CommandDiffers {
                    output: step.output.clone(),
                    locked: format!(
                        "{} {}{}",
                        r.renderer,
                        r.args.join(" "),
                        r.chart
                            .as_ref()
                            .map_or_else(String::new, |c| format!(" (chart {c})"))
                    ),
                    declared: format!("{} {}", step.renderer(), step.args().join(" ")),
                });
            }
            Some(_) => {}
        }
    }
    for record in records {
        if !steps.iter().any(|s| s.output == record.output) {
            findings.push(RenderFinding::NotDeclared {
                output: record.output.clone(),
            });
            continue;
        }
        match input_binding(&record.roots, reader) {
            Err(reason) => findings.push(RenderFinding::InputsUnreadable {
                output: record.output.clone(),
                reason,
            }),
            Ok(now) if now != record.inputs => {
                findings.push(RenderFinding::InputsChanged {
                    output: record.output.clone(),
                    diff: record.inputs.differences(&now),
                });
            }
            Ok(_) => {}
        }
    }
    findings
}

/// Whether a record's pinned chart is the one a step declares (`declared` after `oci://`).
fn chart_agrees(recorded: Option<&str>, declared: Option<&str>) -> bool {
    match (recorded.and_then(|r| r.strip_prefix(OCI_SCHEME)), declared) {
        (None, None) => recorded.is_none(),
        (Some(r), Some(d)) => r == d || r.rsplit_once('@').is_some_and(|(name, _)| name == d),
        _ => false,
    }
}

/// One disagreement found by [`check_renders`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderFinding {
    /// `lockstep.toml` declares a step the lockfile has no record of.
    NotLocked { output: String },
    /// The lockfile records an output no step declares.
    NotDeclared { output: String },
    /// The step's command is not the one recorded.
    CommandDiffers {
        output: String,
        locked: String,
        declared: String,
    },
    /// An input file changed, appeared or went away since the lock.
    InputsChanged {
        output: String,
        diff: crate::lockfile::BindingDiff,
    },
    /// The inputs cannot be read (a root is missing, a symlink, a limit).
    InputsUnreadable { output: String, reason: String },
}

impl std::fmt::Display for RenderFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderFinding::NotLocked { output } => write!(
                f,
                "{output}: the render step is not in the signed lockfile (run `lockstep lock`)"
            ),
            RenderFinding::NotDeclared { output } => write!(
                f,
                "{output}: the signed lockfile records a render step lockstep.toml does not declare"
            ),
            RenderFinding::CommandDiffers {
                output,
                locked,
                declared,
            } => write!(
                f,
                "{output}: rendered by `{locked}`, but lockstep.toml now says `{declared}`"
            ),
            RenderFinding::InputsChanged { output, diff } => {
                write!(
                    f,
                    "{output}: its render inputs are not the ones it was rendered from"
                )?;
                for (what, list) in [
                    ("changed", &diff.changed),
                    ("added", &diff.added),
                    ("removed", &diff.removed),
                ] {
                    if !list.is_empty() {
                        write!(f, "; {what}: {}", list.join(", "))?;
                    }
                }
                Ok(())
            }
            RenderFinding::InputsUnreadable { output, reason } => {
                write!(f, "{output}: its render inputs cannot be read: {reason}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_lexical_and_stay_relative() {
        assert_eq!(normalize("../overlays/prod/").unwrap(), "../overlays/prod");
        assert_eq!(normalize("./a/../b").unwrap(), "b");
        assert_eq!(normalize("a/../../b").unwrap(), "../b");
        assert_eq!(normalize("../../x").unwrap(), "../../x");
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("a/..").is_err());
        assert!(normalize("a\\b").is_err());
        assert!(normalize("a\nb").is_err());
    }

    #[test]
    fn nested_roots_are_folded_into_the_outer_one() {
        let roots = minimal_roots(
            [
                "../base",
                "../base/x",
                "../overlays/prod",
                "../basement",
                "../base",
            ]
            .map(String::from),
        );
        assert_eq!(roots, ["../base", "../basement", "../overlays/prod"]);
    }

    #[test]
    fn the_commands_are_fixed_and_cluster_free() {
        let k = RenderStep {
            source: RenderSource::Kustomize {
                dir: "../overlays/prod".into(),
            },
            output: "out.yaml".into(),
            inputs: vec![],
        };
        assert_eq!(
            k.args(),
            [
                "build",
                "../overlays/prod",
                "--load-restrictor",
                "LoadRestrictionsRootOnly"
            ]
        );
        let h = RenderStep {
            source: RenderSource::Helm {
                chart: "../charts/api".into(),
                release: "api".into(),
                namespace: Some("shop".into()),
                values: vec!["../values/prod.yaml".into()],
                kube_version: None,
            },
            output: "api.yaml".into(),
            inputs: vec!["../lib".into()],
        };
        assert_eq!(
            h.args(),
            [
                "template",
                "api",
                "../charts/api",
                "--namespace=shop",
                "--values=../values/prod.yaml",
                "--include-crds"
            ]
        );
        assert_eq!(
            h.named_roots(),
            ["../charts/api", "../values/prod.yaml", "../lib"]
        );
    }
}
