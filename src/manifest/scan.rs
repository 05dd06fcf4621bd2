//! bytes → image uses: every image scalar of a manifest file, with its exact byte span.
//!
//! Pure: one file's bytes in, a [`FileScan`] out. What is found:
//! - pod specs of the built-in workload kinds — Pod (`spec`), PodTemplate (`template.spec`),
//!   ReplicationController (core), Deployment, ReplicaSet, DaemonSet (`apps`, `extensions`),
//!   StatefulSet (`apps`), Job (`batch`) (all `spec.template.spec`) and CronJob (`batch`,
//!   `spec.jobTemplate.spec.template.spec`) — matched on API group and kind, so a custom
//!   resource that happens to be called `Deployment` is not mistaken for one;
//! - in each pod spec, the `image` of every entry of `containers`, `initContainers` and
//!   `ephemeralContainers`;
//! - the items of any kind ending in `List` that has `items` (recursively);
//! - the pod specs and image paths that [`ScanConfig`] declares for custom resources.
//!
//! **Why saphyr-parser's event stream, not serde-saphyr.** The rewriter splices bytes, so
//! each image needs the exact byte range of its scalar and the guarantee that the text in
//! the file *is* the value (no escapes, no line folding). serde-saphyr's `Spanned<T>` gives
//! positions but erases the scalar style and anchors, and `flatten`/`untagged` lose
//! positions; the event stream gives style, anchor, tag and start/end markers for every
//! node. Markers count *characters* (a CRLF is two, a BOM one), so they are converted to
//! byte offsets here, and every image span is then checked against the file text: a
//! span is only returned when the bytes it covers are the scalar's value, with the quotes
//! (if any) right outside it. Anything else is refused, never guessed.
//!
//! **Rules.** Documents without apiVersion/kind are skipped with a [`Notice`]; empty
//! documents are skipped silently. Anchors and aliases elsewhere are resolved (an object's
//! metadata may come through an alias; `<<` merge keys are followed), but an image that is
//! reached through an alias, or carries an anchor or a tag, is refused: pinning it would
//! rewrite every other place the anchor is used, or could not be done in place at all.
//! An image must be a plain or quoted string scalar whose text equals its value (block
//! scalars, escapes and folded lines are refused). Helm templates are refused: a `{{`
//! outside comments and outside string values (a Prometheus rule's `"{{ $labels.job }}"`
//! is a legitimate string), or anywhere in an image, is taken as template syntax.
//! Duplicate mapping keys are refused (YAML forbids them, and `image` twice is ambiguous).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Range;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle};

use super::config::{FieldPath, ScanConfig};
use crate::model::{ImageRef, ImageUse, ObjectRef, RefError};

/// The fields of a pod spec that hold containers, in the order they are scanned.
pub const CONTAINER_FIELDS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// Deepest nesting of `List`s and `<<` merges followed; deeper is a cycle or an attack.
const MAX_DEPTH: usize = 64;

/// What one manifest file contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileScan {
    /// Every image use, in file order.
    pub uses: Vec<ImageUse>,
    /// Every object (document index, object), `List` items one by one, in file order.
    pub objects: Vec<(usize, ObjectRef)>,
    /// Documents (or `List` items) that were skipped, and why.
    pub notices: Vec<Notice>,
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
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: document {} skipped: ",
            self.file, self.line, self.document
        )?;
        match &self.reason {
            NoticeReason::MissingTypeMeta { missing } => write!(f, "it has no {missing}"),
            NoticeReason::NotAMapping => f.write_str("it is not a mapping"),
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
    #[error("{file}:{line}:{column}: duplicate key {key:?} in a mapping")]
    DuplicateKey {
        file: String,
        line: usize,
        column: usize,
        key: String,
    },
    #[error("{file}:{line}:{column}: `{field}` must be a string")]
    BadField {
        file: String,
        line: usize,
        column: usize,
        field: &'static str,
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

/// Find every image use in one manifest file. `file` is the path relative to the
/// manifests directory (used in the results and errors).
pub fn scan_file(file: &str, bytes: &[u8], config: &ScanConfig) -> Result<FileScan, ScanError> {
    let text = std::str::from_utf8(bytes).map_err(|source| ScanError::NotUtf8 {
        file: file.to_owned(),
        line: line_of(bytes, source.valid_up_to()),
        offset: source.valid_up_to(),
        source,
    })?;
    let offsets = ByteOffsets::new(text);
    let tree = match Tree::parse(text, &offsets) {
        Ok(tree) => tree,
        Err(TreeError::Syntax(e)) => {
            // A template usually fails to parse; say "Helm" rather than the parser's
            // confusion about `{{`.
            if let Some(at) = template_marks(text, &[]).first() {
                return Err(helm_error(file, text, *at));
            }
            let m = e.marker();
            return Err(ScanError::Syntax {
                file: file.to_owned(),
                line: m.line(),
                column: m.col() + 1,
                message: e.info().to_owned(),
            });
        }
        Err(TreeError::DuplicateKey { at, key }) => {
            return Err(ScanError::DuplicateKey {
                file: file.to_owned(),
                line: at.line(),
                column: at.col() + 1,
                key,
            });
        }
    };
    if let Some(at) = template_marks(text, &tree.scalar_ranges).first() {
        return Err(helm_error(file, text, *at));
    }
    let mut scanner = Scanner {
        file,
        text,
        offsets: &offsets,
        tree: &tree,
        config,
        scan: FileScan::default(),
        visited_objects: HashSet::new(),
    };
    for (document, root) in tree.documents.iter().enumerate() {
        let Some(root) = root else { continue };
        scanner.document(document, At::direct(*root), 0)?;
    }
    let mut scan = scanner.scan;
    scan.uses.sort_by_key(|u| u.span.start);
    // A configured path may repeat a built-in one: one scalar is one use.
    scan.uses.dedup_by_key(|u| u.span.start);
    Ok(scan)
}

fn helm_error(file: &str, text: &str, at: usize) -> ScanError {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    ScanError::HelmTemplate {
        file: file.to_owned(),
        line: line_of(text.as_bytes(), at),
        column: text[line_start..at]
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
/// every scalar, quotes included) nor in a comment.
fn template_marks(text: &str, scalars: &[Range<usize>]) -> Vec<usize> {
    let in_scalar = |p: usize| {
        let i = scalars.partition_point(|r| r.start <= p);
        i > 0 && scalars[i - 1].contains(&p)
    };
    let bytes = text.as_bytes();
    text.match_indices("{{")
        .map(|(p, _)| p)
        .filter(|&p| !in_scalar(p))
        .filter(|&p| {
            let line_start = text[..p].rfind('\n').map_or(0, |i| i + 1);
            // A comment starts at a `#` that begins the line or follows a blank, outside scalars.
            let in_comment = (line_start..p).any(|q| {
                bytes[q] == b'#'
                    && (q == line_start || matches!(bytes[q - 1], b' ' | b'\t'))
                    && !in_scalar(q)
            });
            !in_comment
        })
        .collect()
}

/// Converts the parser's character indices to byte offsets.
struct ByteOffsets {
    /// Byte offset of each character, plus the text length; empty when the text is ASCII.
    table: Vec<usize>,
    len: usize,
}

impl ByteOffsets {
    fn new(text: &str) -> Self {
        let table = if text.is_ascii() {
            Vec::new()
        } else {
            text.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(text.len()))
                .collect()
        };
        ByteOffsets {
            table,
            len: text.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        if self.table.is_empty() {
            char_index.min(self.len)
        } else {
            self.table.get(char_index).copied().unwrap_or(self.len)
        }
    }
}

/// A YAML node, stored in an arena; children are indices.
struct Node<'t> {
    kind: NodeKind<'t>,
    start: Marker,
    /// Character index (the parser's unit) just past the node.
    end: usize,
    anchored: bool,
    tagged: bool,
}

enum NodeKind<'t> {
    Scalar {
        value: Cow<'t, str>,
        style: ScalarStyle,
    },
    Seq(Vec<usize>),
    Map(Vec<(usize, usize)>),
    /// An alias, already resolved to the anchored node.
    Alias(usize),
}

/// A whole file as a node arena; `documents[i]` is the root of document `i`.
struct Tree<'t> {
    nodes: Vec<Node<'t>>,
    documents: Vec<Option<usize>>,
    /// Byte ranges of every scalar (quotes included), in file order.
    scalar_ranges: Vec<Range<usize>>,
}

enum TreeError {
    Syntax(saphyr_parser::ScanError),
    DuplicateKey { at: Marker, key: String },
}

/// An open collection while building the tree.
struct Frame {
    node: usize,
    pending_key: Option<usize>,
    /// Hashes of the keys so far, once the mapping is big enough for them to pay off.
    key_hashes: Option<HashSet<u64>>,
}

impl<'t> Tree<'t> {
    fn parse(text: &'t str, offsets: &ByteOffsets) -> Result<Tree<'t>, TreeError> {
        let mut tree = Tree {
            // Manifests run at about one node per 6 bytes: allocate once.
            nodes: Vec::with_capacity(text.len() / 6),
            documents: Vec::new(),
            scalar_ranges: Vec::new(),
        };
        let mut anchors: HashMap<usize, usize> = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<usize> = None;
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(TreeError::Syntax)?;
            let (kind, anchor, tagged, opens) = match event {
                Event::DocumentStart(_) => {
                    root = None;
                    continue;
                }
                Event::DocumentEnd => {
                    tree.documents.push(root.take());
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let frame = stack.pop().expect("the parser balances collections");
                    tree.nodes[frame.node].end = span.end.index();
                    continue;
                }
                Event::Nothing | Event::StreamStart | Event::StreamEnd => continue,
                Event::Scalar(value, style, anchor, tag) => {
                    let range = offsets.byte(span.start.index())..offsets.byte(span.end.index());
                    tree.scalar_ranges.push(range);
                    (
                        NodeKind::Scalar { value, style },
                        anchor,
                        tag.is_some(),
                        false,
                    )
                }
                Event::Alias(anchor) => {
                    // The parser refuses unknown anchors, so the lookup cannot fail.
                    let target = anchors.get(&anchor).copied().unwrap_or_default();
                    (NodeKind::Alias(target), 0, false, false)
                }
                Event::SequenceStart(anchor, tag) => {
                    (NodeKind::Seq(Vec::new()), anchor, tag.is_some(), true)
                }
                Event::MappingStart(anchor, tag) => {
                    (NodeKind::Map(Vec::new()), anchor, tag.is_some(), true)
                }
            };
            let index = tree.nodes.len();
            tree.nodes.push(Node {
                kind,
                start: span.start,
                end: span.end.index(),
                anchored: anchor != 0,
                tagged,
            });
            if anchor != 0 {
                anchors.insert(anchor, index);
            }
            match stack.last_mut() {
                None => root = Some(index),
                Some(parent) => {
                    let is_key = parent.pending_key.is_none()
                        && matches!(tree.nodes[parent.node].kind, NodeKind::Map(_));
                    if is_key && let Some(key) = tree.duplicate_key(parent, index) {
                        return Err(TreeError::DuplicateKey {
                            at: span.start,
                            key,
                        });
                    }
                    match &mut tree.nodes[parent.node].kind {
                        NodeKind::Seq(items) => items.push(index),
                        NodeKind::Map(entries) => match parent.pending_key.take() {
                            Some(key) => entries.push((key, index)),
                            None => parent.pending_key = Some(index),
                        },
                        _ => unreachable!("only collections are pushed on the stack"),
                    }
                }
            }
            if opens {
                stack.push(Frame {
                    node: index,
                    pending_key: None,
                    key_hashes: None,
                });
            }
        }
        Ok(tree)
    }

    /// The text of `key` if the mapping of `frame` already has it. Small mappings are
    /// searched directly; big ones (a ConfigMap with many entries) through key hashes.
    fn duplicate_key(&self, frame: &mut Frame, key: usize) -> Option<String> {
        const DIRECT: usize = 16;
        let NodeKind::Scalar { value, .. } = &self.nodes[key].kind else {
            return None;
        };
        let NodeKind::Map(entries) = &self.nodes[frame.node].kind else {
            return None;
        };
        let scalar = |k: usize| match &self.nodes[k].kind {
            NodeKind::Scalar { value, .. } => Some(value.as_ref()),
            _ => None,
        };
        let present = || entries.iter().any(|&(k, _)| scalar(k) == Some(value));
        let found = if entries.len() < DIRECT {
            present()
        } else {
            let hash = |v: &str| {
                let mut h = std::hash::DefaultHasher::new();
                v.hash(&mut h);
                h.finish()
            };
            let hashes = frame.key_hashes.get_or_insert_with(|| {
                entries
                    .iter()
                    .filter_map(|&(k, _)| scalar(k))
                    .map(hash)
                    .collect()
            });
            // A hash seen before is a duplicate only if the text matches too.
            !hashes.insert(hash(value)) && present()
        };
        found.then(|| value.clone().into_owned())
    }
}

/// A node reached while walking, and the first alias passed on the way there (if any).
#[derive(Clone, Copy)]
struct At {
    node: usize,
    alias: Option<usize>,
}

impl At {
    fn direct(node: usize) -> At {
        At { node, alias: None }
    }
}

/// What kind of value a plain scalar is in YAML's core schema, for "not a string" errors.
fn plain_non_string(value: &str) -> Option<&'static str> {
    match value {
        "" | "~" | "null" | "Null" | "NULL" => return Some("null"),
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Some("a boolean"),
        ".inf" | "-.inf" | "+.inf" | ".Inf" | ".INF" | "-.Inf" | "-.INF" | "+.Inf" | "+.INF"
        | ".nan" | ".NaN" | ".NAN" => return Some("a number"),
        _ => {}
    }
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    let is_int = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let is_radix = |p: &str, ok: fn(u8) -> bool| {
        value
            .strip_prefix(p)
            .is_some_and(|d| !d.is_empty() && d.bytes().all(ok))
    };
    let is_float = {
        let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
            Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
            None => (digits, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        mantissa.contains('.')
            && !(int.is_empty() && frac.is_empty())
            && all_digits(int)
            && all_digits(frac)
            && exponent.is_none_or(|e| !e.is_empty() && all_digits(e))
    };
    if is_int
        || is_float
        || is_radix("0x", |b| b.is_ascii_hexdigit())
        || is_radix("0o", |b| (b'0'..=b'7').contains(&b))
    {
        return Some("a number");
    }
    None
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

struct Scanner<'a> {
    file: &'a str,
    text: &'a str,
    offsets: &'a ByteOffsets,
    tree: &'a Tree<'a>,
    config: &'a ScanConfig,
    scan: FileScan,
    visited_objects: HashSet<usize>,
}

impl<'a> Scanner<'a> {
    fn node(&self, at: At) -> &'a Node<'a> {
        &self.tree.nodes[at.node]
    }

    /// Follow aliases; remember the first one passed.
    fn deref(&self, mut at: At) -> At {
        // An alias points at an anchored node, never at another alias, but loop anyway.
        for _ in 0..MAX_DEPTH {
            match self.tree.nodes[at.node].kind {
                NodeKind::Alias(target) => {
                    at = At {
                        node: target,
                        alias: at.alias.or(Some(at.node)),
                    }
                }
                _ => break,
            }
        }
        at
    }

    fn scalar(&self, at: At) -> Option<&'a str> {
        match &self.node(self.deref(at)).kind {
            NodeKind::Scalar { value, .. } => Some(value.as_ref()),
            _ => None,
        }
    }

    /// The value under `key` in the mapping at `map`, following `<<` merge keys.
    fn get(&self, map: At, key: &str) -> Option<At> {
        let map = self.deref(map);
        let (found, merges) = self.get_direct(map, key);
        if found.is_some() || merges.is_empty() {
            return found;
        }
        self.get_merged(merges, key, &mut HashSet::from([map.node]), 1)
    }

    /// The value under `key` written in the mapping itself, and its `<<` merge values.
    fn get_direct(&self, map: At, key: &str) -> (Option<At>, Vec<At>) {
        let mut merges = Vec::new();
        let NodeKind::Map(entries) = &self.node(map).kind else {
            return (None, merges);
        };
        let child = |node: usize| At {
            node,
            alias: map.alias,
        };
        for &(k, v) in entries {
            match &self.node(self.deref(child(k))).kind {
                NodeKind::Scalar { value, .. } if value == key => return (Some(child(v)), merges),
                NodeKind::Scalar {
                    value,
                    style: ScalarStyle::Plain,
                } if value == "<<" => merges.push(child(v)),
                _ => {}
            }
        }
        (None, merges)
    }

    /// Explicit keys win over merged ones; earlier merged mappings win over later ones.
    /// Each mapping is searched at most once per lookup, so merges of merges of the same
    /// anchors (a "billion laughs" of `<<`) cost no more than the file's size.
    fn get_merged(
        &self,
        merges: Vec<At>,
        key: &str,
        searched: &mut HashSet<usize>,
        depth: usize,
    ) -> Option<At> {
        if depth > MAX_DEPTH {
            return None;
        }
        for merge in merges {
            let merge = self.deref(merge);
            let sources = match &self.node(merge).kind {
                NodeKind::Seq(items) => items
                    .iter()
                    .map(|&i| At {
                        node: i,
                        alias: merge.alias,
                    })
                    .collect(),
                _ => vec![merge],
            };
            for source in sources {
                let source = self.deref(source);
                if !searched.insert(source.node) {
                    continue;
                }
                let (found, more) = self.get_direct(source, key);
                if found.is_some() {
                    return found;
                }
                if let Some(found) = self.get_merged(more, key, searched, depth + 1) {
                    return Some(found);
                }
            }
        }
        None
    }

    fn items(&self, seq: At) -> Vec<At> {
        let seq = self.deref(seq);
        match &self.node(seq).kind {
            NodeKind::Seq(items) => items
                .iter()
                .map(|&node| At {
                    node,
                    alias: seq.alias,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn get_path(&self, from: At, keys: &[&str]) -> Option<At> {
        keys.iter().try_fold(from, |at, key| self.get(at, key))
    }

    fn position(&self, at: At) -> (usize, usize) {
        let m = self.node(at).start;
        (m.line(), m.col() + 1)
    }

    /// A string field of an object (`apiVersion`, `metadata.name`, ...): absent or null is
    /// `None`; a collection is an error.
    fn string_field(
        &self,
        at: Option<At>,
        field: &'static str,
    ) -> Result<Option<String>, ScanError> {
        let Some(at) = at else { return Ok(None) };
        let target = self.deref(at);
        match &self.node(target).kind {
            NodeKind::Scalar { value, style } => {
                if *style == ScalarStyle::Plain && plain_non_string(value) == Some("null") {
                    Ok(None)
                } else {
                    Ok(Some(value.clone().into_owned()))
                }
            }
            _ => {
                let (line, column) = self.position(target);
                Err(ScanError::BadField {
                    file: self.file.to_owned(),
                    line,
                    column,
                    field,
                })
            }
        }
    }

    fn document(&mut self, document: usize, root: At, depth: usize) -> Result<(), ScanError> {
        let root = self.deref(root);
        // An object reached twice (a List item through an alias) is one object, and
        // visiting each node once keeps nested aliased Lists from exploding.
        if !self.visited_objects.insert(root.node) {
            return Ok(());
        }
        let notice = |reason| Notice {
            file: self.file.to_owned(),
            document,
            line: self.node(root).start.line(),
            reason,
        };
        match &self.node(root).kind {
            NodeKind::Map(_) => {}
            NodeKind::Scalar {
                value,
                style: ScalarStyle::Plain,
            } if plain_non_string(value) == Some("null") => {
                return Ok(());
            }
            _ => {
                let n = notice(NoticeReason::NotAMapping);
                self.scan.notices.push(n);
                return Ok(());
            }
        }
        let api_version = self.string_field(self.get(root, "apiVersion"), "apiVersion")?;
        let kind = self.string_field(self.get(root, "kind"), "kind")?;
        let (api_version, kind) = match (api_version, kind) {
            (Some(a), Some(k)) => (a, k),
            (a, k) => {
                let missing = match (a, k) {
                    (None, None) => "apiVersion and kind",
                    (None, _) => "apiVersion",
                    _ => "kind",
                };
                let n = notice(NoticeReason::MissingTypeMeta { missing });
                self.scan.notices.push(n);
                return Ok(());
            }
        };
        if kind.ends_with("List")
            && let Some(items) = self.get(root, "items")
            && depth < MAX_DEPTH
        {
            for item in self.items(items) {
                self.document(document, item, depth + 1)?;
            }
            return Ok(());
        }
        let metadata = self.get(root, "metadata");
        let field = |key| metadata.and_then(|m| self.get(m, key));
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
        if let Some(path) = builtin_pod_spec(&object.api_version, &object.kind)
            && let Some(spec) = self.get_path(root, path)
        {
            self.pod_spec(spec, document, &object)?;
        }
        let config = self.config;
        for custom in config.matching(&object.api_version, &object.kind) {
            for path in &custom.pod_specs {
                for (spec, _) in self.follow(root, path) {
                    self.pod_spec(spec, document, &object)?;
                }
            }
            for path in &custom.images {
                for (image, container) in self.follow(root, path) {
                    self.image(image, document, &object, container)?;
                }
            }
        }
        self.scan.objects.push((document, object));
        Ok(())
    }

    /// Every node the configured path leads to, with the concrete path (`spec.a[2].image`).
    fn follow(&self, root: At, path: &FieldPath) -> Vec<(At, String)> {
        let mut found = vec![(root, String::new())];
        for segment in path.segments() {
            let mut next = Vec::new();
            for (at, text) in found {
                let Some(value) = self.get(at, &segment.key) else {
                    continue;
                };
                let text = if text.is_empty() {
                    segment.key.clone()
                } else {
                    format!("{text}.{}", segment.key)
                };
                if segment.each {
                    next.extend(
                        self.items(value)
                            .into_iter()
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

    fn pod_spec(&mut self, spec: At, document: usize, object: &ObjectRef) -> Result<(), ScanError> {
        for field in CONTAINER_FIELDS {
            let Some(list) = self.get(spec, field) else {
                continue;
            };
            for (i, container) in self.items(list).into_iter().enumerate() {
                let label = match self.scalar_name(container) {
                    Some(name) => format!("{field}/{name}"),
                    None => format!("{field}/[{i}]"),
                };
                if let Some(image) = self.get(container, "image") {
                    self.image(image, document, object, label)?;
                }
            }
        }
        Ok(())
    }

    fn scalar_name(&self, container: At) -> Option<String> {
        self.get(container, "name")
            .and_then(|n| self.scalar(n))
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    fn image(
        &mut self,
        at: At,
        document: usize,
        object: &ObjectRef,
        container: String,
    ) -> Result<(), ScanError> {
        let file = self.file.to_owned();
        if let Some(alias) = self.deref(at).alias {
            let (line, column) = self.position(At::direct(alias));
            return Err(ScanError::ThroughAlias {
                file,
                line,
                column,
                object: Box::new(object.clone()),
                container,
            });
        }
        let (line, column) = self.position(at);
        let node = self.node(at);
        let not_verbatim = |problem| ScanError::NotVerbatim {
            file: file.clone(),
            line,
            column,
            object: Box::new(object.clone()),
            container: container.clone(),
            problem,
        };
        let (value, style) = match &node.kind {
            NodeKind::Scalar { value, style } => (value, *style),
            NodeKind::Map(_) | NodeKind::Seq(_) | NodeKind::Alias(_) => {
                let found = if matches!(node.kind, NodeKind::Seq(_)) {
                    "a sequence"
                } else {
                    "a mapping"
                };
                return Err(ScanError::NotAString {
                    file,
                    line,
                    column,
                    object: Box::new(object.clone()),
                    container,
                    found,
                });
            }
        };
        if node.anchored {
            return Err(not_verbatim("carries an anchor (&…)"));
        }
        if node.tagged {
            return Err(not_verbatim("carries a tag (!…)"));
        }
        if style == ScalarStyle::Plain
            && let Some(found) = plain_non_string(value)
        {
            return Err(ScanError::NotAString {
                file,
                line,
                column,
                object: Box::new(object.clone()),
                container,
                found,
            });
        }
        let span = self.exact_span(node, value, style).map_err(not_verbatim)?;
        let column = if style == ScalarStyle::Plain {
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
            written: value.clone().into_owned(),
            reference,
        });
        Ok(())
    }

    /// The byte range of the scalar's content, if the file's bytes there are its value.
    fn exact_span(
        &self,
        node: &Node<'_>,
        value: &str,
        style: ScalarStyle,
    ) -> Result<Range<usize>, &'static str> {
        let start = self.offsets.byte(node.start.index());
        let end = self.offsets.byte(node.end);
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
        let bytes = self.text.as_bytes();
        let text_matches = self.text.get(content.clone()) == Some(value);
        let quotes_match = match quote {
            None => end == content.end,
            Some(q) => {
                bytes.get(start) == Some(&q)
                    && bytes.get(content.end) == Some(&q)
                    && end == content.end + 1
            }
        };
        if text_matches && quotes_match {
            Ok(content)
        } else {
            Err(problem)
        }
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
        assert_eq!(s.objects, vec![(0, u.object.clone())]);
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
  kind: DeploymentList
  items:
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
                line: 15,
                reason: NoticeReason::MissingTypeMeta {
                    missing: "apiVersion"
                }
            }]
        );
    }

    #[test]
    fn multiple_documents_empty_ones_and_notices() {
        let text = "---\n---\n# only a comment\n---\nfoo: bar\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: a:1}]}\n---\n- a list\n...\n";
        let s = scan(text).unwrap();
        assert_eq!(s.uses.len(), 1);
        assert_eq!(s.uses[0].document, 3);
        assert_eq!(s.objects, vec![(3, s.uses[0].object.clone())]);
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
    fn alias_bombs_stay_cheap() {
        // Each level merges (or lists) the previous one ten times: 10^30 paths unfolded.
        let level = |i: usize| vec![format!("*a{}", i - 1); 10].join(", ");
        let mut text = String::from("a0: &a0 {x: 1}\n");
        for i in 1..30 {
            text += &format!("a{i}: &a{i} {{<<: [{}]}}\n", level(i));
        }
        text += "apiVersion: v1\nkind: Pod\nmetadata: {<<: *a29, name: p}\n";
        text += "spec: {<<: *a29, containers: [{name: c, <<: *a29, image: 'a:1'}]}\n";
        assert_eq!(images(&text), vec![triple("Pod/p", "containers/c", "a:1")]);

        let mut text = String::from("apiVersion: v1\nkind: List\n");
        text += "a0: &a0 {apiVersion: v1, kind: ConfigMap, metadata: {name: m}}\n";
        for i in 1..30 {
            text += &format!(
                "a{i}: &a{i} {{apiVersion: v1, kind: List, items: [{}]}}\n",
                level(i)
            );
        }
        text += &format!("items: [{}]\n", level(30));
        let s = scan(&text).unwrap();
        assert_eq!(s.objects.len(), 1);
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
            ("    image: !!str app:1\n", 7, "tag"),
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
