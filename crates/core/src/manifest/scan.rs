//! bytes → objects and image uses: the one reading of a manifest file.
//!
//! Pure: one file's bytes in, a [`FileScan`] out. [`super::yaml`] reads the file the way
//! Kubernetes does (or refuses it); this module walks the decoded objects. Each object is kept
//! as the JSON body that `render` prints and the reconciler applies ([`DecodedObject`]), and its
//! images are found on that same decoded value, so what is pinned, verified and applied is one
//! reading. What counts as an image:
//! - pod specs of the built-in workload kinds — Pod (`spec`), PodTemplate (`template.spec`),
//!   ReplicationController (core), Deployment, ReplicaSet, DaemonSet (`apps`, `extensions`),
//!   StatefulSet (`apps`), Job (`batch`) (all `spec.template.spec`) and CronJob (`batch`,
//!   `spec.jobTemplate.spec.template.spec`) — matched on API group and kind, so a custom
//!   resource that happens to be called `Deployment` is not mistaken for one;
//! - in each pod spec, the `image` of every entry of `containers`, `initContainers` and
//!   `ephemeralContainers`, and `volumes[].image.reference` (image volumes);
//! - the items of any kind ending in `List` (recursively); an object of another kind with
//!   `items` is refused, since kubectl would apply its items instead of it;
//! - the pod specs and image paths that [`ScanConfig`] declares for custom resources.
//!
//! Objects of other kinds that hold `image` strings get a [`Notice`] (`--strict` refuses
//! them until `lockstep.toml` declares where their images are).
//!
//! **Pinning in place.** Each decoded string remembers its scalar node, so an image's exact
//! byte range is known; a span is only returned when the bytes it covers are the value, with
//! the quotes (if any) right outside it. An image reached through an alias or carrying an
//! anchor is refused (pinning it would change every use of the anchor), as are block scalars,
//! escapes and folded lines. Helm templates are refused: a `{{` outside comments and outside
//! string values (a Prometheus rule's `"{{ $labels.job }}"` is a legitimate string), or
//! anywhere in an image, is taken as template syntax. Documents without apiVersion/kind are
//! skipped with a [`Notice`]; empty documents silently.

use std::fmt;
use std::ops::Range;

use saphyr_parser::ScalarStyle;
use serde_json::{Map, Value};

use super::config::{FieldPath, ScanConfig};
use super::yaml::{
    Budget, Construct, Data, Decoded, Node, NodeKind, Tree, YamlError, YamlErrorKind, position_of,
};
use crate::model::{ImageRef, ImageUse, ObjectRef, RefError};

/// The fields of a pod spec that hold containers, in the order they are scanned.
pub const CONTAINER_FIELDS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Deepest nesting of `List`s followed; deeper is a cycle or an attack.
const MAX_DEPTH: usize = 64;
/// Notices kept per file (a file of 100 000 documents without `kind` says so once in a while,
/// not 100 000 times).
const MAX_NOTICES: usize = 50;

/// What one manifest file contains.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileScan {
    /// Every image use, in file order.
    pub uses: Vec<ImageUse>,
    /// Every object, `List` items one by one, in file order.
    pub objects: Vec<DecodedObject>,
    /// Documents (or `List` items) that were skipped, and why.
    pub notices: Vec<Notice>,
}

/// One Kubernetes object as lockstep reads it: decoded once, the way Kubernetes' reader does.
/// `body` is exactly what `verify` checked, `render` prints and the reconciler applies.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedObject {
    pub file: String,
    /// 0-based index of the document in the file (`List` items share their List's).
    pub document: usize,
    /// 1-based line where the object starts.
    pub line: usize,
    pub object: ObjectRef,
    pub body: Map<String, Value>,
}

/// Something skipped that the user may want to know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub file: String,
    /// 0-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the skipped document (or list item) starts.
    pub line: usize,
    pub reason: NoticeReason,
}

/// Why a document was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeReason {
    /// A mapping without `apiVersion` and/or `kind`: not a Kubernetes object.
    MissingTypeMeta { missing: &'static str },
    /// The document is a scalar or a sequence, not an object.
    NotAMapping,
    /// An object of a kind lockstep has no image paths for holds `image` fields: they are
    /// neither pinned nor checked (`--strict` refuses them).
    UnscannedImages { object: String, paths: Vec<String> },
    /// More notices in the file than are shown.
    Suppressed { count: usize },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: document {}", self.file, self.line, self.document)?;
        match &self.reason {
            NoticeReason::MissingTypeMeta { missing } => {
                write!(f, " skipped: it has no {missing}")
            }
            NoticeReason::NotAMapping => f.write_str(" skipped: it is not a mapping"),
            NoticeReason::Suppressed { count } => {
                write!(f, ": and {count} more notices in this file")
            }
            NoticeReason::UnscannedImages { object, paths } => write!(
                f,
                ": {object} is of a kind lockstep has no image paths for, but has images at {}: they are not pinned or checked; declare the kind in {} ([[custom]] pod-specs or images)",
                paths.join(", "),
                super::CONFIG_FILE
            ),
        }
    }
}

/// A manifest file that cannot be scanned; nothing may be written when this happens.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{file}:{line}: the file is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        file: String,
        line: usize,
        offset: usize,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error(
        "{file}:{line}:{column}: this is a Helm template (`{{{{`), not a manifest: render the chart first (helm template …) and lock the output"
    )]
    HelmTemplate {
        file: String,
        line: usize,
        column: usize,
    },
    #[error("{file}:{line}:{column}: malformed YAML: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}:{column}: {construct}")]
    Refused {
        file: String,
        line: usize,
        column: usize,
        construct: Construct,
    },
    #[error(
        "{file}:{line}:{column}: a {kind} with `items`: kubectl would apply its items instead of the object; only kinds ending in List may have items"
    )]
    ItemsOutsideList {
        file: String,
        line: usize,
        column: usize,
        kind: String,
    },
    #[error(
        "{file}:{line}:{column}: an object with `items` but no {missing}: kubectl applies its items anyway; give it apiVersion and a kind ending in List"
    )]
    ListWithoutTypeMeta {
        file: String,
        line: usize,
        column: usize,
        missing: &'static str,
    },
    #[error(
        "{file}:{line}:{column}: a List inside a List: kubectl refuses it; put the inner List's items in the outer one"
    )]
    NestedList {
        file: String,
        line: usize,
        column: usize,
    },
    #[error("{file}:{line}:{column}: duplicate key {key:?} in a mapping")]
    DuplicateKey {
        file: String,
        line: usize,
        column: usize,
        key: String,
    },
    #[error("{file}:{line}:{column}: `{field}` must be {expected}")]
    BadField {
        file: String,
        line: usize,
        column: usize,
        field: &'static str,
        expected: &'static str,
    },
    #[error("{file}:{line}:{column}: {object} {container}")]
    InvalidReference {
        file: String,
        line: usize,
        column: usize,
        object: Box<ObjectRef>,
        container: String,
        #[source]
        source: RefError,
    },
    #[error("{file}:{line}:{column}: {object} {container}: the image is {found}, not a string")]
    NotAString {
        file: String,
        line: usize,
        column: usize,
        object: Box<ObjectRef>,
        container: String,
        found: &'static str,
    },
    #[error(
        "{file}:{line}:{column}: {object} {container}: the image {problem}; lockstep pins images by rewriting their exact bytes, so write it as one plain or quoted scalar"
    )]
    NotVerbatim {
        file: String,
        line: usize,
        column: usize,
        object: Box<ObjectRef>,
        container: String,
        problem: &'static str,
    },
    #[error(
        "{file}:{line}:{column}: {object} {container}: the image is reached through an alias (*…); pinning it would change every use of the anchor, so write the image out"
    )]
    ThroughAlias {
        file: String,
        line: usize,
        column: usize,
        object: Box<ObjectRef>,
        container: String,
    },
}

/// Find every image use in one manifest file, and decode every object in it — the one
/// reading that `verify`, `render` and the reconciler share. `file` is the path relative to
/// the manifests directory (used in the results and errors).
pub fn scan_file(file: &str, bytes: &[u8], config: &ScanConfig) -> Result<FileScan, ScanError> {
    let text = std::str::from_utf8(bytes).map_err(|source| ScanError::NotUtf8 {
        file: file.to_owned(),
        line: line_of(bytes, source.valid_up_to()),
        offset: source.valid_up_to(),
        source,
    })?;
    let tree = match Tree::parse(text) {
        Ok(tree) => tree,
        Err(e) => {
            // A template usually fails to parse; say "Helm" rather than the parser's
            // confusion about `{{`.
            let confused = matches!(
                e.kind,
                YamlErrorKind::Syntax(_) | YamlErrorKind::Refused(Construct::NotJson(_))
            );
            if confused && let Some(at) = template_marks(text, &[]).first() {
                return Err(helm_error(file, text, *at));
            }
            return Err(yaml_error(file, e));
        }
    };
    if let Some(at) = template_marks(text, &tree.scalar_ranges).first() {
        return Err(helm_error(file, text, *at));
    }
    let mut budget = Budget::for_tree(&tree);
    let mut scanner = Scanner {
        file,
        tree: &tree,
        config,
        scan: FileScan::default(),
        suppressed: 0,
    };
    for (document, piece) in tree.documents.iter().enumerate() {
        let Some(root) = piece.root else { continue };
        let value = tree
            .decode(root, &mut budget)
            .map_err(|e| yaml_error(file, e))?;
        scanner.document(document, &value, 0, None)?;
    }
    if scanner.suppressed > 0 {
        let count = scanner.suppressed;
        scanner.scan.notices.push(Notice {
            file: file.to_owned(),
            document: tree.documents.len().saturating_sub(1),
            line: position_of(text, text.len()).line,
            reason: NoticeReason::Suppressed { count },
        });
    }
    let mut scan = scanner.scan;
    scan.uses.sort_by_key(|u| u.span.start);
    // A configured path may repeat a built-in one: one scalar is one use.
    scan.uses.dedup_by_key(|u| u.span.start);
    Ok(scan)
}

fn yaml_error(file: &str, e: YamlError) -> ScanError {
    let (line, column) = (e.at.line, e.at.column);
    match e.kind {
        YamlErrorKind::Syntax(message) => ScanError::Syntax {
            file: file.to_owned(),
            line,
            column,
            message,
        },
        YamlErrorKind::DuplicateKey(key) => ScanError::DuplicateKey {
            file: file.to_owned(),
            line,
            column,
            key,
        },
        YamlErrorKind::Refused(construct) => ScanError::Refused {
            file: file.to_owned(),
            line,
            column,
            construct,
        },
    }
}

fn helm_error(file: &str, text: &str, at: usize) -> ScanError {
    ScanError::HelmTemplate {
        file: file.to_owned(),
        line: position_of(text, at).line,
        column: text[..at]
            .rsplit('\n')
            .next()
            .unwrap_or("")
            .trim_start_matches('\u{feff}')
            .chars()
            .count()
            + 1,
    }
}

/// 1-based line of byte offset `at`.
fn line_of(bytes: &[u8], at: usize) -> usize {
    bytes[..at.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Byte offsets of `{{` that are neither inside a scalar (`scalars`: sorted byte ranges of
/// every scalar, quotes included) nor in a comment. One pass over the text.
fn template_marks(text: &str, scalars: &[Range<usize>]) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut marks = Vec::new();
    let mut next_scalar = 0;
    let mut in_comment = false;
    let mut i = 0;
    while i < bytes.len() {
        while next_scalar < scalars.len() && scalars[next_scalar].end <= i {
            next_scalar += 1;
        }
        let in_scalar = scalars
            .get(next_scalar)
            .is_some_and(|r| r.start <= i && i < r.end);
        match bytes[i] {
            b'\n' => in_comment = false,
            // A comment starts at a `#` that begins the line or follows a blank, outside scalars.
            b'#' if !in_scalar && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n')) => {
                in_comment = true;
            }
            b'{' if !in_scalar && !in_comment && bytes.get(i + 1) == Some(&b'{') => {
                marks.push(i);
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    marks
}

/// Built-in workload kinds: the path from the object to its pod spec.
fn builtin_pod_spec(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    const TEMPLATE: &[&str] = &["spec", "template", "spec"];
    match (group, kind) {
        ("", "Pod") => Some(&["spec"]),
        ("", "PodTemplate") => Some(&["template", "spec"]),
        ("", "ReplicationController") => Some(TEMPLATE),
        ("apps" | "extensions", "Deployment" | "ReplicaSet" | "DaemonSet") => Some(TEMPLATE),
        ("apps", "StatefulSet") => Some(TEMPLATE),
        ("batch", "Job") => Some(TEMPLATE),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// What Kubernetes can map: `[group/]version` and a kind, without blanks or line breaks
/// (kubectl refuses `example.com//v1` or `Widget\n`).
fn well_formed_type_meta(text: &str, field: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
    match field {
        "kind" => text.chars().all(|c| c.is_ascii_alphanumeric()),
        _ => {
            text.split('/').count() <= 2
                && text.split('/').all(|p| !p.is_empty() && p.chars().all(ok))
        }
    }
}

/// Walks decoded documents: objects, their identity, their images.
struct Scanner<'a> {
    file: &'a str,
    tree: &'a Tree<'a>,
    config: &'a ScanConfig,
    scan: FileScan,
    /// Notices beyond [`MAX_NOTICES`].
    suppressed: usize,
}

impl<'a> Scanner<'a> {
    /// Keep a notice, up to [`MAX_NOTICES`] per file; count the rest.
    fn note(&mut self, notice: Notice) {
        if self.scan.notices.len() < MAX_NOTICES {
            self.scan.notices.push(notice);
        } else {
            self.suppressed += 1;
        }
    }

    /// [`Self::note`] a notice about the document at `line`.
    fn note_at(&mut self, document: usize, line: usize, reason: NoticeReason) {
        let notice = Notice {
            file: self.file.to_owned(),
            document,
            line,
            reason,
        };
        self.note(notice);
    }

    fn position(&self, node: u32) -> (usize, usize) {
        let at = self.tree.node(node).at;
        (at.line, at.column)
    }

    /// A field that is not what Kubernetes decodes there, refused at `node`.
    fn bad_field(&self, node: u32, field: &'static str, expected: &'static str) -> ScanError {
        let (line, column) = self.position(node);
        ScanError::BadField {
            file: self.file.to_owned(),
            line,
            column,
            field,
            expected,
        }
    }

    /// A string field of an object (`apiVersion`, `metadata.name`, ...): absent or null is
    /// `None`; anything but a string is an error.
    fn string_field(
        &self,
        value: Option<&Decoded>,
        field: &'static str,
    ) -> Result<Option<String>, ScanError> {
        match value.map(|v| (v, &v.data)) {
            None | Some((_, Data::Null)) => Ok(None),
            Some((_, Data::Str(s))) => Ok(Some(s.clone())),
            Some((v, _)) => Err(self.bad_field(v.node, field, "a string")),
        }
    }

    /// One object (or List) of a document, in kubectl's order: its type meta, its metadata's
    /// types, then a List's items or the object itself. `list_type` is what kubectl gives a
    /// List item that names neither apiVersion nor kind: the List's apiVersion and its kind
    /// without `List`.
    fn document(
        &mut self,
        document: usize,
        root: &Decoded,
        depth: usize,
        list_type: Option<(&str, &str)>,
    ) -> Result<(), ScanError> {
        let line = self.tree.node(root.node).at.line;
        match &root.data {
            Data::Map(_) => {}
            Data::Null => return Ok(()),
            _ => {
                self.note_at(document, line, NoticeReason::NotAMapping);
                return Ok(());
            }
        }
        let (api_version, kind, inherited) = self.type_meta(root, list_type)?;
        // kubectl decodes a document's metadata before it looks at its apiVersion: a badly
        // typed field fails the file even where lockstep skips the document with a notice.
        if let Some((bad, field, expected)) = root.get("metadata").and_then(object_meta_mismatch) {
            return Err(self.bad_field(bad.node, field, expected));
        }
        let (api_version, kind) = match (api_version, kind) {
            (Some(a), Some(k)) => (a, k),
            (a, k) => {
                let missing = match (a, k) {
                    (None, None) => "apiVersion and kind",
                    (None, _) => "apiVersion",
                    _ => "kind",
                };
                // kubectl applies the items of anything with `items`, type meta or not.
                if let Some(items) = root.get("items") {
                    let (line, column) = self.position(items.node);
                    return Err(ScanError::ListWithoutTypeMeta {
                        file: self.file.to_owned(),
                        line,
                        column,
                        missing,
                    });
                }
                self.note_at(document, line, NoticeReason::MissingTypeMeta { missing });
                return Ok(());
            }
        };
        match root.get("items") {
            Some(items) => self.list(document, items, depth, &api_version, kind),
            None => self.object(document, root, line, (api_version, kind), inherited),
        }
    }

    /// The document's apiVersion and kind, each absent or well formed, and whether they were
    /// inherited from the List around it.
    fn type_meta(
        &self,
        root: &Decoded,
        list_type: Option<(&str, &str)>,
    ) -> Result<(Option<String>, Option<String>, bool), ScanError> {
        let api_version = self.string_field(root.get("apiVersion"), "apiVersion")?;
        let kind = self.string_field(root.get("kind"), "kind")?;
        for (value, field) in [(&api_version, "apiVersion"), (&kind, "kind")] {
            let Some(text) = value else { continue };
            let at = root.get(field).map_or(root.node, |v| v.node);
            if text.is_empty() {
                return Err(self.bad_field(at, field, "a non-empty string"));
            }
            if !well_formed_type_meta(text, field) {
                let expected = if field == "kind" {
                    "a kind (letters and digits)"
                } else {
                    "a [group/]version (letters, digits, '.', '-')"
                };
                return Err(self.bad_field(at, field, expected));
            }
        }
        Ok(match (api_version, kind, list_type) {
            (None, None, Some((a, k))) => (Some(a.to_owned()), Some(k.to_owned()), true),
            (a, k, _) => (a, k, false),
        })
    }

    /// kubectl takes any object with `items` for a List and applies its items, not the
    /// object: lockstep expands `…List` kinds and refuses the rest.
    fn list(
        &mut self,
        document: usize,
        items: &Decoded,
        depth: usize,
        api_version: &str,
        kind: String,
    ) -> Result<(), ScanError> {
        let (line, column) = self.position(items.node);
        if !kind.ends_with("List") {
            return Err(ScanError::ItemsOutsideList {
                file: self.file.to_owned(),
                line,
                column,
                kind,
            });
        }
        if !matches!(items.data, Data::Seq(_) | Data::Null) || depth >= MAX_DEPTH {
            return Err(self.bad_field(items.node, "items", "a sequence"));
        }
        if depth > 0 {
            return Err(ScanError::NestedList {
                file: self.file.to_owned(),
                line,
                column,
            });
        }
        let item_kind = kind.strip_suffix("List").unwrap_or_default();
        let list_type = (!item_kind.is_empty()).then_some((api_version, item_kind));
        for item in items.items() {
            self.document(document, item, depth + 1, list_type)?;
        }
        Ok(())
    }

    /// One object: its identity, its images, and the body that is verified and applied.
    fn object(
        &mut self,
        document: usize,
        root: &Decoded,
        line: usize,
        (api_version, kind): (String, String),
        inherited: bool,
    ) -> Result<(), ScanError> {
        let metadata = root.get("metadata");
        let field = |key| metadata.and_then(|m| m.get(key));
        let object = ObjectRef {
            name: self
                .string_field(field("name"), "metadata.name")?
                .unwrap_or_default(),
            namespace: self
                .string_field(field("namespace"), "metadata.namespace")?
                .unwrap_or_default(),
            api_version,
            kind,
        };
        let mut known = false;
        if let Some(path) = builtin_pod_spec(&object.api_version, &object.kind) {
            known = true;
            if let Some(spec) = path.iter().try_fold(root, |at, key| at.get(key)) {
                self.pod_spec(spec, document, &object)?;
            }
        }
        let config = self.config;
        for custom in config.matching(&object.api_version, &object.kind) {
            known = true;
            for path in &custom.pod_specs {
                for (spec, _) in follow(root, path) {
                    self.pod_spec(spec, document, &object)?;
                }
            }
            for path in &custom.images {
                for (image, container) in follow(root, path) {
                    self.image(image, document, &object, container)?;
                }
            }
        }
        if !known {
            let mut paths = Vec::new();
            unscanned_images(root, &mut String::new(), &mut paths);
            if !paths.is_empty() {
                let reason = NoticeReason::UnscannedImages {
                    object: object.to_string(),
                    paths,
                };
                self.note_at(document, line, reason);
            }
        }
        let Value::Object(mut body) = root.to_json() else {
            unreachable!("the document is a mapping")
        };
        if inherited {
            let type_meta = [("apiVersion", &object.api_version), ("kind", &object.kind)];
            for (key, value) in type_meta {
                body.insert(key.into(), Value::String(value.clone()));
            }
        }
        // kubectl drops an empty namespace (the object lands in the applier's default).
        if let Some(Value::Object(meta)) = body.get_mut("metadata")
            && meta.get("namespace").is_some_and(|ns| ns == "")
        {
            meta.remove("namespace");
        }
        self.scan.objects.push(DecodedObject {
            file: self.file.to_owned(),
            document,
            line,
            object,
            body,
        });
        Ok(())
    }

    fn pod_spec(
        &mut self,
        spec: &Decoded,
        document: usize,
        object: &ObjectRef,
    ) -> Result<(), ScanError> {
        for field in CONTAINER_FIELDS {
            let Some(list) = spec.get(field) else {
                continue;
            };
            for (i, container) in list.items().iter().enumerate() {
                let label = match container.get("name").and_then(Decoded::as_str) {
                    Some(name) if !name.is_empty() => {
                        format!("{field}/{}", crate::error_chain::escape(name, false))
                    }
                    _ => format!("{field}/[{i}]"),
                };
                if let Some(image) = container.get("image") {
                    self.image(image, document, object, label)?;
                }
            }
        }
        // Image volumes (Kubernetes 1.31+): an OCI image mounted as a volume runs too.
        if let Some(volumes) = spec.get("volumes") {
            for (i, volume) in volumes.items().iter().enumerate() {
                let Some(reference) = volume.get("image").and_then(|v| v.get("reference")) else {
                    continue;
                };
                let label = match volume.get("name").and_then(Decoded::as_str) {
                    Some(name) if !name.is_empty() => {
                        format!("volumes/{}", crate::error_chain::escape(name, false))
                    }
                    _ => format!("volumes/[{i}]"),
                };
                self.image(reference, document, object, label)?;
            }
        }
        Ok(())
    }

    fn image(
        &mut self,
        at: &Decoded,
        document: usize,
        object: &ObjectRef,
        container: String,
    ) -> Result<(), ScanError> {
        let file = self.file.to_owned();
        let value = match &at.data {
            Data::Str(s) => s,
            _ => {
                let (line, column) = self.position(at.node);
                return Err(ScanError::NotAString {
                    file,
                    line,
                    column,
                    object: Box::new(object.clone()),
                    container,
                    found: at.describe(),
                });
            }
        };
        if let Some(alias) = at.alias {
            let (line, column) = self.position(alias);
            return Err(ScanError::ThroughAlias {
                file,
                line,
                column,
                object: Box::new(object.clone()),
                container,
            });
        }
        let node = self.tree.node(at.node);
        let (line, column) = (node.at.line, node.at.column);
        let not_verbatim = |problem| ScanError::NotVerbatim {
            file: file.clone(),
            line,
            column,
            object: Box::new(object.clone()),
            container: container.clone(),
            problem,
        };
        let NodeKind::Scalar(scalar) = &node.kind else {
            unreachable!("strings are read from scalars")
        };
        if node.anchored {
            return Err(not_verbatim("carries an anchor (&…)"));
        }
        let span = exact_span(self.tree.text, node, value, scalar.style).map_err(not_verbatim)?;
        let column = if scalar.style == ScalarStyle::Plain {
            column
        } else {
            column + 1
        };
        if value.contains("{{") {
            return Err(ScanError::HelmTemplate { file, line, column });
        }
        let reference = ImageRef::parse(value).map_err(|source| ScanError::InvalidReference {
            file: file.clone(),
            line,
            column,
            object: Box::new(object.clone()),
            container: container.clone(),
            source,
        })?;
        self.scan.uses.push(ImageUse {
            file,
            document,
            line,
            column,
            span,
            object: object.clone(),
            container,
            written: value.clone(),
            reference,
        });
        Ok(())
    }
}

/// Where `metadata` is not what Kubernetes decodes into its ObjectMeta (which refuses the
/// object): the value, the field and what it must be.
/// The shape Kubernetes' ObjectMeta gives a field; `null` fits every shape.
#[derive(Clone, Copy)]
enum MetaShape {
    Str,
    Int,
    Time,
    StringMap,
    StringList,
    MapList,
}

/// ObjectMeta's typed fields, in the order they are checked.
const OBJECT_META: [(&str, &str, MetaShape); 15] = [
    ("name", "metadata.name", MetaShape::Str),
    ("generateName", "metadata.generateName", MetaShape::Str),
    ("namespace", "metadata.namespace", MetaShape::Str),
    ("selfLink", "metadata.selfLink", MetaShape::Str),
    ("uid", "metadata.uid", MetaShape::Str),
    (
        "resourceVersion",
        "metadata.resourceVersion",
        MetaShape::Str,
    ),
    ("generation", "metadata.generation", MetaShape::Int),
    (
        "deletionGracePeriodSeconds",
        "metadata.deletionGracePeriodSeconds",
        MetaShape::Int,
    ),
    (
        "creationTimestamp",
        "metadata.creationTimestamp",
        MetaShape::Time,
    ),
    (
        "deletionTimestamp",
        "metadata.deletionTimestamp",
        MetaShape::Time,
    ),
    ("labels", "metadata.labels", MetaShape::StringMap),
    ("annotations", "metadata.annotations", MetaShape::StringMap),
    ("finalizers", "metadata.finalizers", MetaShape::StringList),
    (
        "ownerReferences",
        "metadata.ownerReferences",
        MetaShape::MapList,
    ),
    (
        "managedFields",
        "metadata.managedFields",
        MetaShape::MapList,
    ),
];

impl MetaShape {
    fn expected(self) -> &'static str {
        match self {
            MetaShape::Str => "a string",
            MetaShape::Int => "an integer",
            MetaShape::Time => "an RFC 3339 time",
            MetaShape::StringMap => "a mapping of strings",
            MetaShape::StringList => "a list of strings",
            MetaShape::MapList => "a list of mappings",
        }
    }

    /// The node that does not fit: `value` itself, or the entry of a map or list that does not.
    fn misfit(self, value: &Decoded) -> Option<&Decoded> {
        let fits = |ok: bool| if ok { None } else { Some(value) };
        match (&value.data, self) {
            (Data::Null, _) => None,
            (Data::Str(_), MetaShape::Str) => None,
            (Data::Int(_), MetaShape::Int) => None,
            (Data::Str(s), MetaShape::Time) => fits(s.parse::<jiff::Timestamp>().is_ok()),
            (Data::Map(m), MetaShape::StringMap) => m
                .values()
                .find(|x| !matches!(x.data, Data::Str(_) | Data::Null)),
            (Data::Seq(items), MetaShape::StringList | MetaShape::MapList) => {
                let want_strings = matches!(self, MetaShape::StringList);
                items.iter().find(|x| match &x.data {
                    Data::Str(_) => !want_strings,
                    Data::Map(_) => want_strings,
                    Data::Null => false,
                    _ => true,
                })
            }
            _ => Some(value),
        }
    }
}

fn object_meta_mismatch(metadata: &Decoded) -> Option<(&Decoded, &'static str, &'static str)> {
    let entries = match &metadata.data {
        Data::Null => return None,
        Data::Map(entries) => entries,
        _ => return Some((metadata, "metadata", "a mapping")),
    };
    OBJECT_META.iter().find_map(|&(key, field, shape)| {
        let bad = shape.misfit(entries.get(key)?)?;
        Some((bad, field, shape.expected()))
    })
}

/// Every value the configured path leads to, with the concrete path (`spec.a[2].image`).
fn follow<'d>(root: &'d Decoded, path: &FieldPath) -> Vec<(&'d Decoded, String)> {
    let mut found = vec![(root, String::new())];
    for segment in path.segments() {
        let mut next = Vec::new();
        for (at, text) in found {
            let Some(value) = at.get(&segment.key) else {
                continue;
            };
            let text = if text.is_empty() {
                segment.key.clone()
            } else {
                format!("{text}.{}", segment.key)
            };
            if segment.each {
                next.extend(
                    value
                        .items()
                        .iter()
                        .enumerate()
                        .map(|(i, item)| (item, format!("{text}[{i}]"))),
                );
            } else {
                next.push((value, text));
            }
        }
        found = next;
    }
    found
}

/// Paths of string `image` fields and container lists' images anywhere in an object of a
/// kind lockstep does not know (bounded by the decoder's nesting limit).
fn unscanned_images(value: &Decoded, path: &mut String, found: &mut Vec<String>) {
    const SHOWN: usize = 8;
    match &value.data {
        Data::Map(entries) => {
            for (key, child) in entries {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&crate::error_chain::escape(key, false));
                if key == "image" && matches!(child.data, Data::Str(_)) && found.len() < SHOWN {
                    found.push(path.clone());
                }
                unscanned_images(child, path, found);
                path.truncate(len);
            }
        }
        Data::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                unscanned_images(item, path, found);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The byte range of the scalar's content, if the file's bytes there are its value: the text
/// equals the value (no escapes, no folding) and, when quoted, the quotes sit right around it.
pub(crate) fn exact_span(
    text: &str,
    node: &Node<'_>,
    value: &str,
    style: ScalarStyle,
) -> Result<Range<usize>, &'static str> {
    let start = node.at.offset;
    let (content, quote, problem) = match style {
        ScalarStyle::Plain => (
            start..start + value.len(),
            None,
            "is a plain scalar folded over several lines",
        ),
        ScalarStyle::SingleQuoted => (
            start + 1..start + 1 + value.len(),
            Some(b'\''),
            "is single-quoted with text that differs from its value ('' escapes or line folding)",
        ),
        ScalarStyle::DoubleQuoted => (
            start + 1..start + 1 + value.len(),
            Some(b'"'),
            "is double-quoted with text that differs from its value (escape sequences or line folding)",
        ),
        ScalarStyle::Literal | ScalarStyle::Folded => return Err("is a block scalar (| or >)"),
    };
    let bytes = text.as_bytes();
    let text_matches = text.get(content.clone()) == Some(value);
    let quotes_match = match quote {
        None => node.end >= content.end,
        Some(q) => {
            bytes.get(start) == Some(&q)
                && bytes.get(content.end) == Some(&q)
                && !value.as_bytes().contains(&q)
                && (q != b'"' || !value.contains('\\'))
        }
    };
    if text_matches && quotes_match {
        Ok(content)
    } else {
        Err(problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan(text: &str) -> Result<FileScan, ScanError> {
        scan_file("m.yaml", text.as_bytes(), &ScanConfig::default())
    }

    fn images(text: &str) -> Vec<(String, String, String)> {
        let s = scan(text).unwrap();
        for u in &s.uses {
            assert_eq!(&text[u.span.clone()], u.written, "span of {u:?}");
        }
        s.uses
            .into_iter()
            .map(|u| (u.object.to_string(), u.container, u.written))
            .collect()
    }

    fn triple(object: &str, container: &str, written: &str) -> (String, String, String) {
        (object.to_owned(), container.to_owned(), written.to_owned())
    }

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  template:
    spec:
      initContainers:
        - name: migrate
          image: r.io/migrate:1.0
      containers:
        - name: api
          image: r.io/api:1.4   # the app
        - name: side
          image: 'r.io/side:2'
";

    #[test]
    fn finds_containers_and_init_containers_in_file_order() {
        assert_eq!(
            images(DEPLOYMENT),
            vec![
                triple(
                    "Deployment/shop/api",
                    "initContainers/migrate",
                    "r.io/migrate:1.0"
                ),
                triple("Deployment/shop/api", "containers/api", "r.io/api:1.4"),
                triple("Deployment/shop/api", "containers/side", "r.io/side:2"),
            ]
        );
    }

    #[test]
    fn fills_every_field_of_an_image_use() {
        let s = scan(DEPLOYMENT).unwrap();
        let u = &s.uses[2];
        assert_eq!(u.file, "m.yaml");
        assert_eq!(u.document, 0);
        assert_eq!((u.line, u.column), (16, 19));
        assert_eq!(&DEPLOYMENT[u.span.clone()], "r.io/side:2");
        assert_eq!(
            u.object,
            ObjectRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "api".into()
            }
        );
        assert_eq!(u.reference, ImageRef::parse("r.io/side:2").unwrap());
        assert_eq!(
            s.objects
                .iter()
                .map(|o| (o.document, o.object.clone()))
                .collect::<Vec<_>>(),
            vec![(0, u.object.clone())]
        );
        assert!(s.notices.is_empty());
    }

    #[test]
    fn every_workload_kind() {
        let pod = |path: &str| {
            let mut doc = String::new();
            let keys: Vec<&str> = path.split('.').collect();
            for (depth, key) in keys.iter().enumerate() {
                doc.push_str(&format!("{}{key}:\n", "  ".repeat(depth)));
            }
            let indent = "  ".repeat(keys.len());
            doc.push_str(&format!(
                "{indent}containers:\n{indent}- name: c\n{indent}  image: app:1\n"
            ));
            doc
        };
        let cases = [
            ("v1", "Pod", "spec"),
            ("v1", "PodTemplate", "template.spec"),
            ("v1", "ReplicationController", "spec.template.spec"),
            ("apps/v1", "Deployment", "spec.template.spec"),
            ("extensions/v1beta1", "Deployment", "spec.template.spec"),
            ("apps/v1", "ReplicaSet", "spec.template.spec"),
            ("apps/v1", "StatefulSet", "spec.template.spec"),
            ("apps/v1", "DaemonSet", "spec.template.spec"),
            ("batch/v1", "Job", "spec.template.spec"),
            ("batch/v1", "CronJob", "spec.jobTemplate.spec.template.spec"),
        ];
        for (api, kind, path) in cases {
            let text = format!(
                "apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n{}",
                pod(path)
            );
            assert_eq!(
                images(&text),
                vec![triple(&format!("{kind}/x"), "containers/c", "app:1")],
                "{text}"
            );
        }
        // Same kind, another group: a custom resource, not a workload.
        let text = format!(
            "apiVersion: example.com/v1\nkind: Deployment\nmetadata: {{name: x}}\n{}",
            pod("spec.template.spec")
        );
        assert!(images(&text).is_empty());
    }

    #[test]
    fn ephemeral_containers_and_unnamed_containers() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - image: a:1\n  ephemeralContainers:\n  - {name: dbg, image: \"b:2\"}\n";
        assert_eq!(
            images(text),
            vec![
                triple("Pod/p", "containers/[0]", "a:1"),
                triple("Pod/p", "ephemeralContainers/dbg", "b:2")
            ]
        );
    }

    #[test]
    fn list_items_are_objects() {
        let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: one}
  spec: {containers: [{name: c, image: a:1}]}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: two, namespace: ns}
  spec: {template: {spec: {containers: [{name: c, image: b:2}]}}}
- kind: Orphan
";
        let s = scan(text).unwrap();
        let found: Vec<_> = s
            .uses
            .iter()
            .map(|u| (u.object.to_string(), u.written.clone(), u.document))
            .collect();
        assert_eq!(
            found,
            vec![
                ("Pod/one".into(), "a:1".into(), 0),
                ("Deployment/ns/two".into(), "b:2".into(), 0)
            ]
        );
        assert_eq!(s.objects.len(), 2);
        assert_eq!(
            s.notices,
            vec![Notice {
                file: "m.yaml".into(),
                document: 0,
                line: 12,
                reason: NoticeReason::MissingTypeMeta {
                    missing: "apiVersion"
                }
            }]
        );
    }

    #[test]
    fn metadata_name_a_number_in_a_document_without_apiversion_is_refused() {
        // Found by a long differential run: kubectl fails the file on the metadata before it
        // notices the missing apiVersion; lockstep skipped the document and read the rest.
        let text = "kind: Job\nmetadata:\n  name: 0x1F\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
        assert!(
            matches!(
                error(text),
                ScanError::BadField {
                    field: "metadata.name",
                    line: 3,
                    ..
                }
            ),
            "{:?}",
            error(text)
        );
    }

    #[test]
    fn items_of_an_object_without_type_meta_are_refused_as_kubectl_applies_them() {
        let text = "kind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n  spec: {containers: [{name: c, image: 'evil:1'}]}\n";
        assert!(
            matches!(
                error(text),
                ScanError::ListWithoutTypeMeta {
                    missing: "apiVersion",
                    line: 3,
                    ..
                }
            ),
            "{:?}",
            error(text)
        );
    }

    #[test]
    fn a_list_inside_a_list_is_refused_as_kubectl_refuses_it() {
        let text =
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: PodList\n  items: []\n";
        assert!(
            matches!(error(text), ScanError::NestedList { line: 6, .. }),
            "{:?}",
            error(text)
        );
    }

    #[test]
    fn an_object_of_another_kind_with_items_is_refused_as_kubectl_would_apply_its_items() {
        let text = "apiVersion: example.com/v1\nkind: Bundle\nmetadata: {name: b}\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n";
        assert!(
            matches!(&error(text), ScanError::ItemsOutsideList { kind, line: 5, .. } if kind == "Bundle"),
            "{:?}",
            error(text)
        );
    }

    #[test]
    fn labels_and_annotations_must_be_string_maps_as_kubernetes_decodes_them() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {a: 1}\n";
        assert!(
            matches!(
                error(text),
                ScanError::BadField {
                    field: "metadata.labels",
                    line: 5,
                    ..
                }
            ),
            "{:?}",
            error(text)
        );
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations: [x]\n";
        assert!(matches!(
            error(text),
            ScanError::BadField {
                field: "metadata.annotations",
                ..
            }
        ));
    }

    #[test]
    fn notices_are_capped_per_file() {
        let text = "a: 1\n---\n".repeat(500);
        let s = scan(&text).unwrap();
        assert_eq!(s.notices.len(), MAX_NOTICES + 1);
        assert_eq!(
            s.notices.last().unwrap().reason,
            NoticeReason::Suppressed {
                count: 500 - MAX_NOTICES
            }
        );
    }

    #[test]
    fn items_of_a_typed_list_without_type_meta_are_of_its_kind_as_kubectl_reads_them() {
        let text = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p}\n  spec: {containers: [{name: c, image: 'evil.example/x:1'}]}\n";
        let s = scan(text).unwrap();
        assert_eq!(
            images(text),
            vec![triple("Pod/p", "containers/c", "evil.example/x:1")]
        );
        assert_eq!(s.objects[0].body["kind"], "Pod");
        assert_eq!(s.objects[0].body["apiVersion"], "v1");
        // In an untyped List, kubectl refuses such an item; lockstep skips it with a note.
        let text = "apiVersion: v1\nkind: List\nitems:\n- metadata: {name: p}\n";
        assert!(scan(text).unwrap().objects.is_empty());
    }

    #[test]
    fn type_meta_that_kubernetes_cannot_map_is_refused() {
        for (text, field) in [
            (
                "apiVersion: example.com//v1\nkind: Widget\nmetadata: {name: w}\n",
                "apiVersion",
            ),
            (
                "apiVersion: v1\nkind: \"Pod\\n\"\nmetadata: {name: w}\n",
                "kind",
            ),
            (
                "apiVersion: v1\nkind: Config Map\nmetadata: {name: w}\n",
                "kind",
            ),
        ] {
            assert!(
                matches!(error(text), ScanError::BadField { field: f, .. } if f == field),
                "{text:?}: {:?}",
                error(text)
            );
        }
        assert!(
            scan("apiVersion: apps.example.com/v1beta1\nkind: Widget2\nmetadata: {name: w}\n")
                .is_ok()
        );
    }

    #[test]
    fn image_volumes_are_images() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: a:1}]\n  volumes:\n  - name: models\n    image: {reference: 'r.io/models:v2', pullPolicy: IfNotPresent}\n  - name: data\n    emptyDir: {}\n";
        assert_eq!(
            images(text),
            vec![
                triple("Pod/p", "containers/c", "a:1"),
                triple("Pod/p", "volumes/models", "r.io/models:v2"),
            ]
        );
    }

    #[test]
    fn objects_of_unknown_kinds_with_images_get_a_notice() {
        let text = "apiVersion: example.com/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  templates:\n  - container: {image: 'r.io/step:1'}\n  schema: {image: {type: string}}\n";
        let s = scan(text).unwrap();
        assert!(s.uses.is_empty());
        assert_eq!(
            s.notices
                .iter()
                .map(|n| n.reason.clone())
                .collect::<Vec<_>>(),
            vec![NoticeReason::UnscannedImages {
                object: "Workflow/w".into(),
                paths: vec!["spec.templates[0].container.image".into()]
            }]
        );
    }

    #[test]
    fn multiple_documents_empty_ones_and_notices() {
        let text = "---\n---\n# only a comment\n---\nfoo: bar\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: a:1}]}\n---\n- a list\n";
        let s = scan(text).unwrap();
        assert_eq!(s.uses.len(), 1);
        assert_eq!(s.uses[0].document, 3);
        assert_eq!(
            s.objects
                .iter()
                .map(|o| (o.document, o.object.clone()))
                .collect::<Vec<_>>(),
            vec![(3, s.uses[0].object.clone())]
        );
        assert_eq!(
            s.notices,
            vec![
                Notice {
                    file: "m.yaml".into(),
                    document: 2,
                    line: 5,
                    reason: NoticeReason::MissingTypeMeta {
                        missing: "apiVersion and kind"
                    }
                },
                Notice {
                    file: "m.yaml".into(),
                    document: 4,
                    line: 12,
                    reason: NoticeReason::NotAMapping
                },
            ]
        );
        assert_eq!(
            s.notices[0].to_string(),
            "m.yaml:5: document 2 skipped: it has no apiVersion and kind"
        );
        assert!(scan("").unwrap() == FileScan::default());
        assert!(scan("# nothing\n").unwrap() == FileScan::default());
    }

    #[test]
    fn custom_paths_from_the_config() {
        let config = ScanConfig::parse(
            "[[custom]]\napi-version = \"argoproj.io/*\"\nkind = \"Rollout\"\npod-specs = [\"spec.template.spec\"]\n\
             [[custom]]\napi-version = \"example.com/v1\"\nkind = \"Cache\"\nimages = [\"spec.image\", \"spec.sidecars[].image\", \"spec.more[]\"]\n",
            "lockstep.toml",
        )
        .unwrap();
        let text = "\
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r}
spec: {template: {spec: {containers: [{name: c, image: a:1}]}}}
---
apiVersion: example.com/v1
kind: Cache
metadata: {name: c}
spec:
  image: b:2
  sidecars:
  - image: c:3
  - name: no-image
  - image: d:4
  more: [e:5]
---
apiVersion: example.com/v2
kind: Cache
metadata: {name: other-version}
spec: {image: f:6}
";
        let s = scan_file("m.yaml", text.as_bytes(), &config).unwrap();
        let found: Vec<_> = s
            .uses
            .iter()
            .map(|u| {
                (
                    u.object.to_string(),
                    u.container.as_str(),
                    u.written.as_str(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                ("Rollout/r".to_owned(), "containers/c", "a:1"),
                ("Cache/c".to_owned(), "spec.image", "b:2"),
                ("Cache/c".to_owned(), "spec.sidecars[0].image", "c:3"),
                ("Cache/c".to_owned(), "spec.sidecars[2].image", "d:4"),
                ("Cache/c".to_owned(), "spec.more[0]", "e:5"),
            ]
        );
        // Without the configuration the custom resources hold no images.
        assert!(scan(text).unwrap().uses.is_empty());
    }

    #[test]
    fn a_configured_path_repeating_a_builtin_one_counts_once() {
        let config = ScanConfig::parse(
            "[[custom]]\napi-version = \"v1\"\nkind = \"Pod\"\npod-specs = [\"spec\"]\n",
            "lockstep.toml",
        )
        .unwrap();
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: a:1}]}\n";
        assert_eq!(
            scan_file("m.yaml", text.as_bytes(), &config)
                .unwrap()
                .uses
                .len(),
            1
        );
    }

    #[test]
    fn quoting_flow_style_crlf_and_bom() {
        let text = "\u{feff}apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: \"p\u{e9}\"}  # caf\u{e9} \u{2603}\r\nspec:\r\n  containers:\r\n  - {name: a, image: 'x:1'}\r\n  - name: b\r\n    image: \"y:2\"\r\n  - name: c\r\n    image: z:3\r\n";
        let s = scan(text).unwrap();
        let written: Vec<_> = s.uses.iter().map(|u| &text[u.span.clone()]).collect();
        assert_eq!(written, ["x:1", "y:2", "z:3"]);
        let positions: Vec<_> = s.uses.iter().map(|u| (u.line, u.column)).collect();
        assert_eq!(positions, [(6, 23), (8, 13), (10, 12)]);
        assert_eq!(s.uses[0].object.name, "p\u{e9}");
    }

    #[test]
    fn anchors_and_aliases_elsewhere_are_fine() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: &name api
  labels: &labels {app: api}
spec:
  selector: {matchLabels: *labels}
  template:
    metadata: {labels: *labels}
    spec:
      containers:
      - name: *name
        image: a:1
        env: &env [{name: X, value: '1'}]
      - name: side
        <<: {env: *env}
        image: b:2
---
apiVersion: v1
kind: Pod
metadata:
  <<: {name: merged, namespace: ns}
spec: {containers: [{name: c, image: c:3}]}
";
        assert_eq!(
            images(text),
            vec![
                triple("Deployment/api", "containers/api", "a:1"),
                triple("Deployment/api", "containers/side", "b:2"),
                triple("Pod/ns/merged", "containers/c", "c:3"),
            ]
        );
    }

    #[test]
    fn alias_bombs_are_refused_cheaply() {
        // Each level lists the previous one ten times: 10^30 values unfolded. go-yaml refuses
        // such "excessive aliasing" too; lockstep refuses it within its alias budget.
        let level = |i: usize| vec![format!("*a{}", i - 1); 10].join(", ");
        let mut text =
            String::from("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\na0: &a0 {x: 1}\n");
        for i in 1..30 {
            text += &format!("a{i}: &a{i} [{}]\n", level(i));
        }
        let started = std::time::Instant::now();
        assert!(
            matches!(
                error(&text),
                ScanError::Refused {
                    construct: Construct::TooManyAliasValues,
                    ..
                }
            ),
            "{:?}",
            error(&text)
        );
        // Merging the same anchor twice gives its keys twice: refused as an overlap.
        let text =
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\na: &a {x: 1}\nb: {<<: [*a, *a]}\n";
        assert!(matches!(
            error(text),
            ScanError::Refused {
                construct: Construct::MergeOverlap(_),
                ..
            }
        ));
        let mut text = String::from("apiVersion: v1\nkind: List\n");
        text += "a0: &a0 {apiVersion: v1, kind: ConfigMap, metadata: {name: m}}\n";
        for i in 1..30 {
            text += &format!(
                "a{i}: &a{i} {{apiVersion: v1, kind: List, items: [{}]}}\n",
                level(i)
            );
        }
        text += &format!("items: [{}]\n", level(30));
        assert!(matches!(
            error(&text),
            ScanError::Refused {
                construct: Construct::TooManyAliasValues,
                ..
            }
        ));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    fn error(text: &str) -> ScanError {
        scan(text).unwrap_err()
    }

    const POD_HEAD: &str =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n";

    #[test]
    fn images_through_aliases_are_refused() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {x: &img 'a:1'}}\nspec:\n  containers:\n  - name: c\n    image: *img\n";
        assert!(
            matches!(
                error(text),
                ScanError::ThroughAlias {
                    line: 7,
                    column: 12,
                    ..
                }
            ),
            "{:?}",
            error(text)
        );
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nx: &base {image: 'a:1'}\nspec:\n  containers:\n  - name: c\n    <<: *base\n";
        assert!(
            matches!(error(text), ScanError::ThroughAlias { .. }),
            "{:?}",
            error(text)
        );
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nx: &cs [{name: c, image: 'a:1'}]\nspec:\n  containers: *cs\n";
        assert!(
            matches!(error(text), ScanError::ThroughAlias { line: 6, .. }),
            "{:?}",
            error(text)
        );
    }

    #[test]
    fn images_that_are_not_verbatim_strings_are_refused() {
        let cases = [
            ("    image: &a app:1\n", 7, "anchor"),
            // The parser places a block scalar at its content.
            ("    image: |\n      app:1\n", 8, "block"),
            ("    image: >-\n      app:1\n", 8, "block"),
            ("    image: \"app:\\x31\"\n", 7, "escape"),
            ("    image: \"app:\n      1\"\n", 7, "folding"),
            ("    image: 'app:''1'''\n", 7, "''"),
            ("    image: app\n      :1\n", 7, "folded"),
        ];
        for (tail, want_line, word) in cases {
            match error(&format!("{POD_HEAD}{tail}")) {
                ScanError::NotVerbatim {
                    line,
                    problem,
                    container,
                    ..
                } => {
                    assert_eq!(line, want_line, "{tail}");
                    assert!(problem.contains(word), "{tail}: {problem}");
                    assert_eq!(container, "containers/c");
                }
                other => panic!("{tail}: {other:?}"),
            }
        }
    }

    #[test]
    fn images_that_are_not_strings_are_refused() {
        for (tail, found) in [
            ("    image:\n", "null"),
            ("    image: ~\n", "null"),
            ("    image: 42\n", "a number"),
            ("    image: 1.5e3\n", "a number"),
            ("    image: true\n", "a boolean"),
            ("    image: {name: app}\n", "a mapping"),
            ("    image: [app]\n", "a sequence"),
        ] {
            match error(&format!("{POD_HEAD}{tail}")) {
                ScanError::NotAString { found: f, .. } => assert_eq!(f, found, "{tail}"),
                other => panic!("{tail}: {other:?}"),
            }
        }
        // Quoted, the same text is a string (and a valid reference).
        assert_eq!(images(&format!("{POD_HEAD}    image: '42'\n"))[0].2, "42");
    }

    #[test]
    fn invalid_references_carry_the_location() {
        match error(&format!("{POD_HEAD}    image: \"Bad/Name:1\"\n")) {
            ScanError::InvalidReference {
                file,
                line,
                column,
                object,
                container,
                source,
            } => {
                assert_eq!((file.as_str(), line, column), ("m.yaml", 7, 13));
                assert_eq!(object.to_string(), "Pod/p");
                assert_eq!(container, "containers/c");
                assert_eq!(source.reference, "Bad/Name:1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let e = error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: 'unclosed\n");
        let ScanError::Syntax { line, message, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*line, 4);
        assert!(message.contains("quoted scalar"), "{message}");
        assert!(e.to_string().starts_with("m.yaml:4:"), "{e}");
        let e = error("a: b\n c: d\n");
        assert!(matches!(e, ScanError::Syntax { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = error(&format!("{POD_HEAD}    image: a:1\n    image: b:2\n"));
        assert!(
            matches!(&e, ScanError::DuplicateKey { line: 8, key, .. } if key == "image"),
            "{e:?}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_in_big_mappings_too() {
        let mut text =
            String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\ndata:\n");
        for i in 0..40 {
            text += &format!("  k{i}: v\n");
        }
        assert_eq!(scan(&text).unwrap().objects.len(), 1);
        text += "  k17: again\n";
        let e = error(&text);
        assert!(
            matches!(&e, ScanError::DuplicateKey { line: 45, key, .. } if key == "k17"),
            "{e:?}"
        );
    }

    #[test]
    fn type_meta_must_be_strings() {
        let e = error("apiVersion: v1\nkind: [Pod]\n");
        assert!(
            matches!(
                e,
                ScanError::BadField {
                    line: 2,
                    column: 7,
                    field: "kind",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn non_utf8_is_refused() {
        let e = scan_file("m.yaml", b"a: b\nc: \xff\n", &ScanConfig::default()).unwrap_err();
        assert!(
            matches!(
                e,
                ScanError::NotUtf8 {
                    line: 2,
                    offset: 8,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn helm_templates_are_refused_with_a_hint() {
        let e = error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}\n");
        assert!(
            matches!(
                e,
                ScanError::HelmTemplate {
                    line: 4,
                    column: 9,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("render the chart first (helm template …)"),
            "{e}"
        );
        let e = error("{{- if .Values.enabled }}\napiVersion: v1\nkind: Pod\n{{- end }}\n");
        assert!(
            matches!(e, ScanError::HelmTemplate { line: 1, .. }),
            "{e:?}"
        );
        let e = error(&format!(
            "{POD_HEAD}    image: \"{{{{ .Values.image }}}}\"\n"
        ));
        assert!(
            matches!(
                e,
                ScanError::HelmTemplate {
                    line: 7,
                    column: 13,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn braces_in_strings_and_comments_are_not_templates() {
        let text = "\
# {{ a comment }}
apiVersion: v1
kind: ConfigMap
metadata: {name: rules}  # {{ also a comment }}
data:
  alert: \"{{ $labels.instance }} is down\"
  plain: value {{ x }}
  single: 'it''s {{ y }}'
  block: |
    {{ range . }}
    # {{ not a comment but a string }}
    {{ end }}
";
        let s = scan(text).unwrap();
        assert_eq!(s.objects.len(), 1);
    }

    fn doc_with_image(style: u8, image: &str, crlf: bool, prefix: &str) -> String {
        let scalar = match style {
            0 => image.to_owned(),
            1 => format!("'{image}'"),
            _ => format!("\"{image}\""),
        };
        let text = format!(
            "{prefix}apiVersion: v1\nkind: Pod\nmetadata:\n  name: p  # \u{e9}t\u{e9}\nspec:\n  containers:\n  - name: c\n    image: {scalar}\n  - {{name: d, image: {scalar}}}\n"
        );
        if crlf {
            text.replace('\n', "\r\n")
        } else {
            text
        }
    }

    proptest! {
        #[test]
        fn spans_slice_back_to_the_written_reference(
            image in "([a-z]{1,8}\\.[a-z]{2,3}(:[1-9][0-9]{1,3})?/)?[a-z][a-z0-9]{0,7}(/[a-z0-9]{1,8}){0,2}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,10})?(@sha256:[0-9a-f]{64})?",
            style in 0u8..3,
            crlf: bool,
            prefix in prop_oneof![Just(""), Just("\u{feff}"), Just("---\n"), Just("# \u{2603} snow\n---\n")],
        ) {
            // Plain `y`, `n`, `on`, … are booleans to Kubernetes' reader (YAML 1.1): refused
            // as ambiguous, rightly (a generated case found on CI's machine, 2026-12-04).
            prop_assume!(
                style != 0 || !matches!(image.as_str(), "y" | "n" | "yes" | "no" | "on" | "off")
            );
            let text = doc_with_image(style, &image, crlf, prefix);
            let s = scan(&text).unwrap();
            prop_assert_eq!(s.uses.len(), 2);
            for u in &s.uses {
                prop_assert_eq!(&text[u.span.clone()], image.as_str());
                prop_assert_eq!(&u.written, &image);
                prop_assert_eq!(&u.reference, &ImageRef::parse(&image).unwrap());
            }
            prop_assert_eq!(s.uses[0].line, 8 + prefix.matches('\n').count());
            prop_assert_eq!(s.uses[0].column, if style == 0 { 12 } else { 13 });
        }
    }
}
