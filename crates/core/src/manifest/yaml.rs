//! The one reading of a manifest file: bytes → Kubernetes documents → decoded values, the
//! way Kubernetes' own reader (apimachinery's YAML-or-JSON decoder → sigs.k8s.io/yaml, go-yaml
//! v2 semantics) reads them — or a refusal, wherever another reader could see something else.
//!
//! Pure. What this module guarantees to [`super::scan`]:
//! - **Documents as Kubernetes splits them.** The stream is cut on every line that starts with
//!   `---` (followed by nothing but blanks or a comment), exactly as apimachinery's line reader
//!   does — even inside a block scalar — and each piece is parsed on its own. A piece that holds
//!   a second YAML document (after `...`) is refused: go-yaml reads only the first.
//! - **Characters every reader treats alike.** NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR
//!   (line breaks to go-yaml, ordinary characters to YAML 1.2 parsers), a lone CR, control
//!   characters, a BOM after the start and `%` directives are refused.
//! - **Values decoded once**, with go-yaml's resolution of plain scalars where it agrees with
//!   YAML 1.2 (`true`, `null`, decimal numbers) and a refusal where they part (`yes`/`on`/`y`,
//!   `0755`, `0x1F`, `1_000`, `.inf`, unquoted timestamps). Keys are strings: a plain key that
//!   resolves to anything else, a tagged, aliased or complex key is refused.
//! - **Tags are refused** everywhere (`!!binary aW1hZ2U=:` is `image` to go-yaml). Anchors and
//!   aliases are expanded within a budget; `<<` merges are followed only when written as a
//!   plain `<<` and only when no key is given twice (readers disagree on which one wins).
//! - **Bounded cost**: nesting deeper than [`MAX_NESTING`] and alias expansion beyond
//!   [`MAX_ALIAS_VALUES`] are refused; the walk is recursive only up to that depth.
//!
//! Every decoded string remembers the scalar node it came from (and the first alias passed on
//! the way), so the pinning step can find the exact bytes of an image in the file.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Deepest nesting of collections (through aliases too). Kubernetes objects, CRD schemas
/// included, stay far below; serde_json refuses to read back more than 128.
pub const MAX_NESTING: usize = 100;
/// Mappings and sequences one file may hold: argo-cd's 1.9 MB install.yaml has 16 000, so an
/// 8 MiB file of that density has 70 000. Each costs about 1.5 KB while it is read, which this
/// bounds (a file of nothing but nested flow mappings would otherwise take gigabytes).
pub const MAX_COLLECTIONS: usize = 250_000;
/// Values a file may produce through aliases, beyond its own nodes: far above any real use of
/// anchors, far below a "billion laughs".
pub const MAX_ALIAS_VALUES: usize = 100_000;

/// A position in the file: 1-based line, 1-based column (characters), byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
}

/// Why a file cannot be read as one meaning.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub at: Position,
    pub kind: YamlErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum YamlErrorKind {
    /// The YAML parser's own message.
    Syntax(String),
    DuplicateKey(String),
    /// A construct that Kubernetes' reader and others read differently (or not at all).
    Refused(Construct),
}

/// The constructs refused because readers disagree on them; each says how to write it plainly.
#[derive(Debug, Clone, PartialEq)]
pub enum Construct {
    LineSeparator(char),
    LoneCarriageReturn,
    ControlCharacter(char),
    ByteOrderMark,
    Directive,
    BadSeparator,
    DocumentEnd,
    SecondDocument,
    Tag(String),
    AliasKey,
    ComplexKey,
    QuotedMergeKey,
    MergeValue,
    MergeOverlap(String),
    MergeAsValue,
    NonStringKey {
        text: String,
        reads_as: &'static str,
    },
    AmbiguousScalar {
        text: String,
        reads_as: &'static str,
    },
    RecursiveAlias,
    NotJson(String),
    Indicator(char),
    Escape(char),
    LongKey,
    MultilineKey,
    AnchorName(String),
    Tab,
    TooDeep,
    TooManyCollections,
    ColonBeforeIndicator,
    TooManyAliasValues,
}

impl fmt::Display for Construct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Construct::LineSeparator(c) => write!(
                f,
                "the character U+{:04X} is a line break to Kubernetes' reader (go-yaml) but not to YAML 1.2 readers; remove it",
                *c as u32
            ),
            Construct::LoneCarriageReturn => f.write_str(
                "a carriage return not followed by a line feed: YAML breaks the line there, Kubernetes' document splitter does not; use LF or CRLF line ends",
            ),
            Construct::ControlCharacter(c) => write!(
                f,
                "the control character U+{:04X} is not allowed in YAML; remove it (or write it as an escape in a double-quoted string)",
                *c as u32
            ),
            Construct::ByteOrderMark => {
                f.write_str("a byte order mark is only allowed at the start of the file")
            }
            Construct::Directive => f.write_str(
                "a `%` directive: Kubernetes' reader splits documents before it sees them; remove it",
            ),
            Construct::BadSeparator => f.write_str(
                "a line starting with `---` followed by content: Kubernetes' reader refuses it as a document separator; put the content on the next line",
            ),
            Construct::DocumentEnd => f.write_str(
                "a `...` document end followed by more content, or with no document before it: Kubernetes' reader drops what follows it, or fails; separate documents with `---` lines",
            ),
            Construct::SecondDocument => f.write_str(
                "a second YAML document without a `---` line (after `...`): Kubernetes' reader would read only the first; start each document with a `---` line",
            ),
            Construct::Tag(tag) => write!(
                f,
                "the tag `{tag}`: readers decode tags differently (`!!binary` keys, `!!merge`); remove it, and quote the value if it must be a string"
            ),
            Construct::AliasKey => {
                f.write_str("an alias (*…) used as a key; write the key out")
            }
            Construct::ComplexKey => {
                f.write_str("a mapping or sequence used as a key; keys must be strings")
            }
            Construct::QuotedMergeKey => f.write_str(
                "a quoted `<<` key: some readers take it as a merge, others as a string; write a plain `<<` to merge, or another key",
            ),
            Construct::MergeValue => f.write_str(
                "a `<<` merge needs a mapping or a sequence of mappings (usually an alias *…)",
            ),
            Construct::MergeOverlap(key) => write!(
                f,
                "the key {key:?} is given both by a `<<` merge and elsewhere in the mapping: readers disagree on which one wins; write it once"
            ),
            Construct::MergeAsValue => {
                f.write_str("a plain `<<` used as a value; quote it")
            }
            Construct::NonStringKey { text, reads_as } => write!(
                f,
                "the key {text:?} is {reads_as} to YAML, not a string; quote it"
            ),
            Construct::AmbiguousScalar { text, reads_as } => write!(
                f,
                "the plain value {text:?} is {reads_as}; write it plainly (quote it for a string)"
            ),
            Construct::RecursiveAlias => f.write_str("an alias refers to the node that contains it"),
            Construct::NotJson(e) => write!(
                f,
                "a file whose first character is `{{` is JSON to Kubernetes' reader, and this is not JSON ({e}): write JSON, or YAML that does not start with `{{`"
            ),
            Construct::Indicator(c) => write!(
                f,
                "a plain value starting with `{c}`: go-yaml reads it as an indicator, YAML 1.2 parsers as text; quote it"
            ),
            Construct::Escape(c) => write!(
                f,
                "the escape `\\{c}` is YAML 1.2 only: Kubernetes' reader refuses it; write the character itself"
            ),
            Construct::LongKey => f.write_str(
                "a key longer than 1024 characters: Kubernetes' reader refuses it; shorten it",
            ),
            Construct::MultilineKey => f.write_str(
                "a key written over several lines: readers disagree on it; write it on one line",
            ),
            Construct::AnchorName(name) => write!(
                f,
                "the anchor or alias name {name:?}: Kubernetes' reader allows only letters, digits, `-` and `_` in it"
            ),
            Construct::Tab => f.write_str(
                "a tab in indentation or right after `-`, `?` or `:` at the start of a line: Kubernetes' reader refuses it; use spaces",
            ),
            Construct::TooDeep => write!(
                f,
                "collections nested deeper than {MAX_NESTING} levels (through aliases too)"
            ),
            Construct::ColonBeforeIndicator => f.write_str(
                "a `:` right before `,`, `]` or `}`: go-yaml reads it as part of the text, YAML 1.2 as a key with no value; add a space or quote the text",
            ),
            Construct::TooManyCollections => write!(
                f,
                "more than {MAX_COLLECTIONS} mappings and sequences in one file; split it"
            ),
            Construct::TooManyAliasValues => write!(
                f,
                "aliases expand to more than {MAX_ALIAS_VALUES} values (or {} MB of text); write the repeated parts out or drop the anchors",
                MAX_ALIAS_VALUES * BUDGET_BYTES / 1_000_000
            ),
        }
    }
}

impl fmt::Display for YamlErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YamlErrorKind::Syntax(m) => write!(f, "malformed YAML: {m}"),
            YamlErrorKind::DuplicateKey(k) => write!(f, "duplicate key {k:?} in a mapping"),
            YamlErrorKind::Refused(c) => c.fmt(f),
        }
    }
}

/// A scalar node's text as the parser gives it, with its style.
pub(crate) struct Scalar<'t> {
    pub value: Cow<'t, str>,
    pub style: ScalarStyle,
}

pub(crate) enum NodeKind<'t> {
    Scalar(Scalar<'t>),
    Seq(Vec<u32>),
    Map(Vec<(u32, u32)>),
    /// An alias, resolved to the anchored node.
    Alias(u32),
}

pub(crate) struct Node<'t> {
    pub kind: NodeKind<'t>,
    pub at: Position,
    /// Byte offset just past the node, as the parser reports it.
    pub end: usize,
    pub anchored: bool,
}

/// One Kubernetes document: a piece of the stream between `---` lines.
pub(crate) struct Document {
    /// Its root node, `None` when it holds no YAML node at all (only comments).
    pub root: Option<u32>,
}

/// A whole file as a node arena.
pub(crate) struct Tree<'t> {
    pub text: &'t str,
    pub nodes: Vec<Node<'t>>,
    pub documents: Vec<Document>,
    /// Byte ranges of every scalar (quotes included), in file order.
    pub scalar_ranges: Vec<std::ops::Range<usize>>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    /// Mappings and sequences read so far.
    collections: usize,
}

/// A decoded value with where it was written: what Kubernetes' reader makes of a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded {
    /// The node it was read from (for a value reached through an alias: the anchored one).
    pub node: u32,
    /// The first alias passed on the way to it, if any.
    pub alias: Option<u32>,
    pub data: Data,
}

/// The value itself, as JSON would carry it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Decoded>),
    Map(BTreeMap<String, Decoded>),
}

impl Decoded {
    pub fn get(&self, key: &str) -> Option<&Decoded> {
        match &self.data {
            Data::Map(m) => m.get(key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.data {
            Data::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of a sequence (none for anything else).
    pub fn items(&self) -> &[Decoded] {
        match &self.data {
            Data::Seq(items) => items,
            _ => &[],
        }
    }

    /// The value as JSON, exactly as Kubernetes' reader would pass it on: a float with an
    /// integral value below 2^63 is an integer there (Go prints it without a fraction, and the
    /// API machinery reads it back as one).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.data {
            Data::Null => Value::Null,
            Data::Bool(b) => Value::Bool(*b),
            Data::Int(i) => Value::from(*i),
            Data::Float(f) => {
                // Exactly the floats Go prints as integer digits that fit an int64.
                if f.fract() == 0.0 && (-(2f64.powi(63))..2f64.powi(63)).contains(f) {
                    Value::from(*f as i64)
                } else {
                    serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
                }
            }
            Data::Str(s) => Value::String(s.clone()),
            Data::Seq(items) => Value::Array(items.iter().map(Decoded::to_json).collect()),
            Data::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// What kind of value this is, for "not a string" errors.
    pub fn describe(&self) -> &'static str {
        match &self.data {
            Data::Null => "null",
            Data::Bool(_) => "a boolean",
            Data::Int(_) | Data::Float(_) => "a number",
            Data::Str(_) => "a string",
            Data::Seq(_) => "a sequence",
            Data::Map(_) => "a mapping",
        }
    }
}

/// Converts a piece's character indices (the parser's unit) to byte offsets in the file.
struct ByteOffsets {
    /// Byte offset of each character, plus the piece's length; empty when the piece is ASCII.
    table: Vec<usize>,
    base: usize,
    len: usize,
}

impl ByteOffsets {
    fn new(piece: &str, base: usize) -> Self {
        let table = if piece.is_ascii() {
            Vec::new()
        } else {
            piece
                .char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(piece.len()))
                .collect()
        };
        ByteOffsets {
            table,
            base,
            len: piece.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        let within = if self.table.is_empty() {
            char_index.min(self.len)
        } else {
            self.table.get(char_index).copied().unwrap_or(self.len)
        };
        self.base + within
    }
}

/// 1-based line and column of byte offset `at` in `text`.
pub(crate) fn position_of(text: &str, at: usize) -> Position {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: text.as_bytes()[..line_start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1,
        column: text[line_start..at].chars().count() + 1,
        offset: at,
    }
}

fn refused(text: &str, at: usize, construct: Construct) -> YamlError {
    YamlError {
        at: position_of(text, at),
        kind: YamlErrorKind::Refused(construct),
    }
}

/// Refuse the characters readers disagree on (see the module docs), in one pass.
fn check_characters(text: &str) -> Result<(), YamlError> {
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let construct = match c {
            '\t' | '\n' => continue,
            '\r' if bytes.get(i + 1) == Some(&b'\n') => continue,
            '\r' => Construct::LoneCarriageReturn,
            '\u{85}' | '\u{2028}' | '\u{2029}' => Construct::LineSeparator(c),
            '\u{feff}' if i == 0 => continue,
            '\u{feff}' => Construct::ByteOrderMark,
            c if c.is_control() => Construct::ControlCharacter(c),
            // Non-characters and specials go-yaml refuses as unprintable.
            '\u{fffe}' | '\u{ffff}' => Construct::ControlCharacter(c),
            _ => continue,
        };
        return Err(refused(text, i, construct));
    }
    Ok(())
}

/// The byte offset of a 1-based line and column (characters) in `text`.
fn line_column_offset(text: &str, line: usize, column: usize) -> usize {
    let start = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    text[start..]
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(text.len(), |(i, _)| start + i)
}

/// Whether Kubernetes' reader takes the stream as JSON: its first non-blank character is `{`.
fn is_json_stream(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{a0}'])
        .starts_with('{')
}

/// Byte ranges of the pieces Kubernetes' line reader cuts the stream into: a line starting
/// with `---` (then only blanks or a comment) ends the piece before it and is dropped, unless
/// the piece is still empty, when it becomes the piece's first line.
fn split_documents(text: &str) -> Result<Vec<std::ops::Range<usize>>, YamlError> {
    if is_json_stream(text) {
        return Ok(std::iter::once(0..text.len()).collect());
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    // Within the current piece: whether a node was written, and where a `...` ended it. go-yaml
    // reads nothing after `...` (so content there would be invisible to Kubernetes) and fails
    // on a piece that is only `...`.
    let mut has_content = false;
    let mut ended: Option<usize> = None;
    let is_comment_or_blank = |rest: &str| {
        let rest = rest.trim();
        rest.is_empty() || rest.starts_with('#')
    };
    while at < text.len() {
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
        let line = &text[at..line_end];
        // A BOM opens the stream, not the first line's content.
        let line = if at == 0 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if let Some(rest) = line.strip_prefix("---") {
            if !is_comment_or_blank(rest) {
                return Err(refused(text, at, Construct::BadSeparator));
            }
            if at > start {
                pieces.push(start..at);
                start = line_end;
                has_content = false;
                ended = None;
            }
        } else if line.starts_with('%') {
            return Err(refused(text, at, Construct::Directive));
        } else if let Some(rest) = line.strip_prefix("...") {
            // `...x` is text to YAML 1.2 parsers and a document end to go-yaml.
            if !is_comment_or_blank(rest) || !has_content {
                return Err(refused(text, at, Construct::DocumentEnd));
            }
            ended.get_or_insert(at);
        } else if !is_comment_or_blank(line.strip_prefix('\u{feff}').unwrap_or(line)) {
            if let Some(end) = ended {
                return Err(refused(text, end, Construct::DocumentEnd));
            }
            has_content = true;
        }
        at = line_end;
    }
    if text.len() > start {
        pieces.push(start..text.len());
    }
    Ok(pieces)
}

/// The line break (LF or CRLF, as a byte range of `source`) before the line where the parser
/// stopped, when that line holds nothing but flow closers (`]`, `}`, `,`) and the line before
/// it holds no `#`.
fn closer_line_break(
    source: &str,
    error: &YamlError,
    base: usize,
) -> Option<std::ops::Range<usize>> {
    if error.kind != YamlErrorKind::Syntax("invalid indentation".into()) {
        return None;
    }
    let at = error.at.offset.checked_sub(base)?.min(source.len());
    let line_start = source[..at].rfind('\n')? + 1;
    let line_end = source[at..].find('\n').map_or(source.len(), |i| at + i);
    let line = source[line_start..line_end].trim_end_matches('\r');
    let closers = line.trim();
    if closers.is_empty()
        || !closers.starts_with([']', '}'])
        || !closers.chars().all(|c| matches!(c, ']' | '}' | ',' | ' '))
    {
        return None;
    }
    let break_start = if source[..line_start - 1].ends_with('\r') {
        line_start - 2
    } else {
        line_start - 1
    };
    let previous_start = source[..break_start].rfind('\n').map_or(0, |i| i + 1);
    if source[previous_start..break_start].contains('#') {
        return None;
    }
    Some(break_start..line_start)
}

/// Outside scalars and comments, refuse what go-yaml refuses and YAML 1.2 parsers read: anchor
/// and alias names with characters other than letters, digits, `-` and `_`, and tabs other
/// than after a `:` (go-yaml accepts `key:\tvalue`, not a tab after `-` or alone on a line).
fn check_outside_scalars(text: &str, scalars: &[std::ops::Range<usize>]) -> Result<(), YamlError> {
    let bytes = text.as_bytes();
    let mut next_scalar = 0;
    let mut in_comment = false;
    // What the line holds so far outside scalars and comments: only blanks (0), blanks and
    // block indicators `-`, `?`, `:` (1), or content (2). go-yaml refuses a tab in the first
    // two (indentation, or right after an indicator) and accepts it after content.
    let mut prefix = 0u8;
    // Open `{`/`[` outside scalars: inside them go-yaml takes a leading `:` for an indicator.
    let mut flow_depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        while next_scalar < scalars.len() && scalars[next_scalar].end <= i {
            next_scalar += 1;
        }
        if let Some(r) = scalars.get(next_scalar)
            && r.start <= i
            && i < r.end
        {
            if flow_depth > 0 && bytes[r.start] == b':' {
                return Err(refused(text, r.start, Construct::Indicator(':')));
            }
            // A scalar's range starts at its properties: `&name value`.
            if bytes[r.start] == b'&' {
                anchor_name_end(text, r.start)?;
            }
            prefix = 2;
            i = r.end;
            continue;
        }
        let b = bytes[i];
        // Document marker lines were checked by the splitter (a tab may follow `---`).
        if prefix == 0
            && (i == 0 || bytes[i - 1] == b'\n')
            && (text[i..].starts_with("---") || text[i..].starts_with("..."))
        {
            in_comment = true;
        }
        match b {
            b'\n' => {
                in_comment = false;
                prefix = 0;
            }
            _ if in_comment => {}
            b'#' if prefix == 0 || matches!(bytes.get(i.wrapping_sub(1)), Some(b' ' | b'\t')) => {
                in_comment = true;
            }
            b'\t' if prefix < 2 => return Err(refused(text, i, Construct::Tab)),
            b' ' | b'\t' | b'\r' => {}
            // `[a:, b]`: go-yaml reads the string `a:`, YAML 1.2 a key with no value.
            b':' if matches!(bytes.get(i + 1), Some(b',' | b']' | b'}')) => {
                return Err(refused(text, i, Construct::ColonBeforeIndicator));
            }
            // In flow, a `:` opening a line separates a key written on the line before.
            b':' if prefix < 2 && flow_depth > 0 => {
                return Err(refused(text, i, Construct::MultilineKey));
            }
            b'-' | b'?' | b':' if prefix < 2 => prefix = 1,
            b'{' | b'[' => {
                flow_depth += 1;
                prefix = 2;
            }
            b'}' | b']' => {
                flow_depth = flow_depth.saturating_sub(1);
                prefix = 2;
            }
            b'&' | b'*' => {
                prefix = 2;
                i = anchor_name_end(text, i)?;
                continue;
            }
            _ => prefix = 2,
        }
        i += 1;
    }
    Ok(())
}

/// The end of the anchor or alias name after the `&` or `*` at `at`, refused unless go-yaml
/// reads the same name: letters, digits, `-` and `_` only.
fn anchor_name_end(text: &str, at: usize) -> Result<usize, YamlError> {
    let name_end = text[at + 1..]
        .find(|c: char| c.is_whitespace() || ",[]{}".contains(c))
        .map_or(text.len(), |n| at + 1 + n);
    let name = &text[at + 1..name_end];
    if name.is_empty()
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(refused(text, at, Construct::AnchorName(name.to_owned())));
    }
    Ok(name_end)
}

/// An open collection while building the tree.
/// Add `node` to the tree under the collection being read (or as the document's root),
/// and open it when it is a collection, within the limits on count and nesting.
fn attach<'t>(
    nodes: &mut Vec<Node<'t>>,
    collections: &mut usize,
    node: Node<'t>,
    (stack, root): (&mut Vec<Frame>, &mut Option<u32>),
    opens: bool,
) -> Result<u32, YamlError> {
    let at = node.at;
    let index = u32::try_from(nodes.len()).expect("files are limited in size");
    nodes.push(node);
    match stack.last_mut() {
        None => *root = Some(index),
        Some(parent) => match &mut nodes[parent.node as usize].kind {
            NodeKind::Seq(items) => items.push(index),
            NodeKind::Map(entries) => match parent.pending_key.take() {
                Some(key) => entries.push((key, index)),
                None => parent.pending_key = Some(index),
            },
            _ => unreachable!("only collections are pushed on the stack"),
        },
    }
    if opens {
        *collections += 1;
        let refusal = if *collections > MAX_COLLECTIONS {
            Some(Construct::TooManyCollections)
        } else if stack.len() >= MAX_NESTING {
            Some(Construct::TooDeep)
        } else {
            None
        };
        if let Some(construct) = refusal {
            return Err(YamlError {
                at,
                kind: YamlErrorKind::Refused(construct),
            });
        }
        stack.push(Frame {
            node: index,
            pending_key: None,
        });
    }
    Ok(index)
}

/// A tag is refused wherever it is (`!!binary aW1hZ2U=:` is `image` to go-yaml).
fn refused_tag(at: Position, tag: &saphyr_parser::Tag) -> YamlError {
    YamlError {
        at,
        kind: YamlErrorKind::Refused(Construct::Tag(match tag.handle.as_str() {
            "tag:yaml.org,2002:" => format!("!!{}", tag.suffix),
            handle => format!("{handle}{}", tag.suffix),
        })),
    }
}

struct Frame {
    node: u32,
    pending_key: Option<u32>,
}

impl<'t> Tree<'t> {
    /// Read `text` (valid UTF-8, the whole file) into documents and nodes.
    pub fn parse(text: &'t str) -> Result<Tree<'t>, YamlError> {
        check_characters(text)?;
        if is_json_stream(text)
            && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text)
        {
            // Kubernetes decodes such a file as JSON (and fails, or falls back to YAML,
            // depending on the version): only JSON both read the same is accepted.
            let at = line_column_offset(text, e.line(), e.column());
            return Err(refused(text, at, Construct::NotJson(e.to_string())));
        }
        let mut tree = Tree {
            text,
            // Manifests run at about one node per 6 bytes: allocate once.
            nodes: Vec::with_capacity(text.len() / 6),
            documents: Vec::new(),
            scalar_ranges: Vec::new(),
            collections: 0,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        };
        for piece in split_documents(text)? {
            tree.parse_piece(piece)?;
        }
        check_outside_scalars(text, &tree.scalar_ranges)?;
        tree.check_scalars(is_json_stream(text))?;
        Ok(tree)
    }

    /// What go-yaml refuses inside scalars and YAML 1.2 parsers read: the escape `\/` in a
    /// double-quoted scalar, and keys longer than go-yaml's 1024-character limit for implicit
    /// keys (not in a `json` stream: Kubernetes reads that with a JSON decoder, which has no
    /// such limit) or written over several lines.
    fn check_scalars(&self, json: bool) -> Result<(), YamlError> {
        let refuse = |node: &Node<'_>, construct| {
            Err(YamlError {
                at: node.at,
                kind: YamlErrorKind::Refused(construct),
            })
        };
        for node in &self.nodes {
            let NodeKind::Scalar(scalar) = &node.kind else {
                continue;
            };
            if scalar.style == ScalarStyle::Plain
                && let Some(c) = scalar.value.chars().next()
                && "|>%@`?".contains(c)
            {
                return refuse(node, Construct::Indicator(c));
            }
            if scalar.style == ScalarStyle::DoubleQuoted {
                let raw = self.text.get(node.at.offset..node.end).unwrap_or("");
                let mut escaped = false;
                for c in raw.chars() {
                    if escaped && c == '/' {
                        return refuse(node, Construct::Escape('/'));
                    }
                    escaped = !escaped && c == '\\';
                }
            }
        }
        for node in &self.nodes {
            let NodeKind::Map(entries) = &node.kind else {
                continue;
            };
            for &(key, _) in entries {
                let key = self.node(key);
                let NodeKind::Scalar(_) = &key.kind else {
                    continue;
                };
                let raw = self.text.get(key.at.offset..key.end).unwrap_or("");
                if !json && raw.chars().count() > 1024 {
                    return refuse(key, Construct::LongKey);
                }
                if raw.trim_end().contains('\n') {
                    return refuse(key, Construct::MultilineKey);
                }
            }
        }
        Ok(())
    }

    /// Parse one piece. go-yaml accepts a flow collection whose closing `]` or `}` sits on a
    /// line of its own at (or left of) its parent's indentation — istio ships such files for
    /// `kubectl apply` — and saphyr-parser does not. In flow context a line break is only
    /// whitespace, so when the parser stops at such a closer line, that line's break is read as
    /// spaces (same byte length: offsets stay true) and the piece is parsed again — only if the
    /// line before holds no `#` (no comment swallows the closer) and, afterwards, only if no
    /// scalar spans the break (the break was separation, not part of a value).
    fn parse_piece(&mut self, piece: std::ops::Range<usize>) -> Result<(), YamlError> {
        const MAX_JOINS: usize = 64;
        let text = self.text;
        let (nodes, scalars, collections) =
            (self.nodes.len(), self.scalar_ranges.len(), self.collections);
        let first = match self.parse_source(&text[piece.clone()], piece.start, |c| c) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let mut source = text[piece.clone()].to_owned();
        let mut joined = Vec::new();
        let mut error = first.clone();
        loop {
            let Some(join) = closer_line_break(&source, &error, piece.start) else {
                return Err(first);
            };
            if joined.len() == MAX_JOINS {
                return Err(first);
            }
            source.replace_range(join.clone(), &" ".repeat(join.len()));
            joined.push(join.start + piece.start);
            self.nodes.truncate(nodes);
            self.scalar_ranges.truncate(scalars);
            self.collections = collections;
            match self.parse_source(&source, piece.start, |c| Cow::Owned(c.into_owned())) {
                Ok(()) => break,
                Err(e) => error = e,
            }
        }
        let inside_scalar = joined
            .iter()
            .any(|j| self.scalar_ranges[scalars..].iter().any(|r| r.contains(j)));
        if inside_scalar {
            self.nodes.truncate(nodes);
            self.scalar_ranges.truncate(scalars);
            self.documents.pop();
            return Err(first);
        }
        Ok(())
    }

    fn parse_source<'s>(
        &mut self,
        source: &'s str,
        base: usize,
        keep: fn(Cow<'s, str>) -> Cow<'t, str>,
    ) -> Result<(), YamlError> {
        let offsets = ByteOffsets::new(source, base);
        let line_starts = &self.line_starts;
        // Lines from the file's own line table: a joined closer line must not shift them.
        let position = |m: &saphyr_parser::Marker| {
            let offset = offsets.byte(m.index());
            Position {
                line: line_starts.partition_point(|&start| start <= offset),
                column: m.col() + 1,
                offset,
            }
        };
        let mut anchors: HashMap<usize, u32> = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut root: Option<u32> = None;
        let mut documents = 0;
        for event in Parser::new_from_str(source) {
            let (event, span) = event.map_err(|e| YamlError {
                at: position(e.marker()),
                kind: YamlErrorKind::Syntax(e.info().to_owned()),
            })?;
            let at = position(&span.start);
            let (kind, anchor, tag, opens) = match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(YamlError {
                            at,
                            kind: YamlErrorKind::Refused(Construct::SecondDocument),
                        });
                    }
                    continue;
                }
                Event::DocumentEnd | Event::Nothing | Event::StreamStart | Event::StreamEnd => {
                    continue;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let frame = stack.pop().expect("the parser balances collections");
                    self.nodes[frame.node as usize].end = offsets.byte(span.end.index());
                    continue;
                }
                Event::Scalar(value, style, anchor, tag) => {
                    self.scalar_ranges
                        .push(at.offset..offsets.byte(span.end.index()));
                    (
                        NodeKind::Scalar(Scalar {
                            value: keep(value),
                            style,
                        }),
                        anchor,
                        tag,
                        false,
                    )
                }
                Event::Alias(anchor) => {
                    // The parser refuses unknown anchors, so the lookup cannot fail.
                    let target = anchors.get(&anchor).copied().unwrap_or_default();
                    (NodeKind::Alias(target), 0, None, false)
                }
                Event::SequenceStart(anchor, tag) => (NodeKind::Seq(Vec::new()), anchor, tag, true),
                Event::MappingStart(anchor, tag) => (NodeKind::Map(Vec::new()), anchor, tag, true),
            };
            if let Some(tag) = tag {
                return Err(refused_tag(at, &tag));
            }
            let node = Node {
                kind,
                at,
                end: offsets.byte(span.end.index()),
                anchored: anchor != 0,
            };
            let (nodes, collections) = (&mut self.nodes, &mut self.collections);
            let index = attach(nodes, collections, node, (&mut stack, &mut root), opens)?;
            if anchor != 0 {
                anchors.insert(anchor, index);
            }
        }
        self.documents.push(Document { root });
        Ok(())
    }

    pub fn node(&self, index: u32) -> &Node<'t> {
        &self.nodes[index as usize]
    }

    /// Decode the root of one document.
    pub fn decode(&self, root: u32, budget: &mut Budget) -> Result<Decoded, YamlError> {
        let mut decoder = Decoder {
            tree: self,
            budget,
            expanding: Vec::new(),
        };
        decoder.value(root, None, 0)
    }
}

/// How much decoding may still produce in this file, in units of one value or 64 bytes of
/// string: each node and each byte of the file once, plus [`MAX_ALIAS_VALUES`] units through
/// aliases — so an alias of a long string costs its length, not one value.
pub(crate) struct Budget {
    remaining: usize,
}

/// Bytes of decoded string per budget unit.
const BUDGET_BYTES: usize = 64;

impl Budget {
    pub fn for_tree(tree: &Tree<'_>) -> Budget {
        Budget {
            remaining: tree.nodes.len() + tree.text.len() / BUDGET_BYTES + MAX_ALIAS_VALUES,
        }
    }
}

struct Decoder<'a, 't> {
    tree: &'a Tree<'t>,
    budget: &'a mut Budget,
    /// Anchored nodes being expanded through an alias right now (to refuse cycles).
    expanding: Vec<u32>,
}

impl Decoder<'_, '_> {
    fn error(&self, node: u32, construct: Construct) -> YamlError {
        YamlError {
            at: self.tree.node(node).at,
            kind: YamlErrorKind::Refused(construct),
        }
    }

    fn value(
        &mut self,
        index: u32,
        alias: Option<u32>,
        depth: usize,
    ) -> Result<Decoded, YamlError> {
        if depth > MAX_NESTING {
            return Err(self.error(index, Construct::TooDeep));
        }
        self.budget.remaining = self
            .budget
            .remaining
            .checked_sub(1)
            .ok_or_else(|| self.error(index, Construct::TooManyAliasValues))?;
        let node = self.tree.node(index);
        let decoded = |data| Decoded {
            node: index,
            alias,
            data,
        };
        match &node.kind {
            NodeKind::Alias(target) => {
                if self.expanding.contains(target) {
                    return Err(self.error(index, Construct::RecursiveAlias));
                }
                self.expanding.push(*target);
                let value = self.value(*target, alias.or(Some(index)), depth);
                self.expanding.pop();
                value
            }
            NodeKind::Scalar(scalar) => {
                self.budget.remaining = self
                    .budget
                    .remaining
                    .checked_sub(scalar.value.len() / BUDGET_BYTES)
                    .ok_or_else(|| self.error(index, Construct::TooManyAliasValues))?;
                if scalar.style != ScalarStyle::Plain {
                    return Ok(decoded(Data::Str(scalar.value.clone().into_owned())));
                }
                match resolve_plain(&scalar.value) {
                    Ok(Plain::Null) => Ok(decoded(Data::Null)),
                    Ok(Plain::Bool(b)) => Ok(decoded(Data::Bool(b))),
                    Ok(Plain::Int(i)) => Ok(decoded(Data::Int(i))),
                    Ok(Plain::Float(f)) => Ok(decoded(Data::Float(f))),
                    Ok(Plain::Str) => Ok(decoded(Data::Str(scalar.value.clone().into_owned()))),
                    Ok(Plain::Merge) => Err(self.error(index, Construct::MergeAsValue)),
                    Err(reads_as) => Err(self.error(
                        index,
                        Construct::AmbiguousScalar {
                            text: scalar.value.clone().into_owned(),
                            reads_as,
                        },
                    )),
                }
            }
            NodeKind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for &item in items {
                    out.push(self.value(item, alias, depth + 1)?);
                }
                Ok(decoded(Data::Seq(out)))
            }
            NodeKind::Map(entries) => Ok(decoded(Data::Map(self.map(entries, alias, depth)?))),
        }
    }

    fn key(&self, index: u32) -> Result<Key, YamlError> {
        let node = self.tree.node(index);
        match &node.kind {
            NodeKind::Alias(_) => Err(self.error(index, Construct::AliasKey)),
            NodeKind::Seq(_) | NodeKind::Map(_) => Err(self.error(index, Construct::ComplexKey)),
            NodeKind::Scalar(Scalar { value, style }) => {
                if value == "<<" {
                    return if *style == ScalarStyle::Plain {
                        Ok(Key::Merge)
                    } else {
                        Err(self.error(index, Construct::QuotedMergeKey))
                    };
                }
                if *style != ScalarStyle::Plain {
                    return Ok(Key::Text(value.clone().into_owned()));
                }
                let reads_as = match resolve_plain(value) {
                    Ok(Plain::Str) => return Ok(Key::Text(value.clone().into_owned())),
                    Ok(Plain::Null) => "null",
                    Ok(Plain::Bool(_)) => "a boolean",
                    Ok(Plain::Int(_) | Plain::Float(_)) => "a number",
                    Ok(Plain::Merge) => "a merge",
                    Err(reads_as) => reads_as,
                };
                Err(self.error(
                    index,
                    Construct::NonStringKey {
                        text: value.clone().into_owned(),
                        reads_as,
                    },
                ))
            }
        }
    }

    fn map(
        &mut self,
        entries: &[(u32, u32)],
        alias: Option<u32>,
        depth: usize,
    ) -> Result<BTreeMap<String, Decoded>, YamlError> {
        let mut out = BTreeMap::new();
        let mut merges = Vec::new();
        for &(k, v) in entries {
            match self.key(k)? {
                Key::Merge => merges.push((k, v)),
                Key::Text(key) => {
                    let value = self.value(v, alias, depth + 1)?;
                    if out.contains_key(&key) {
                        return Err(YamlError {
                            at: self.tree.node(k).at,
                            kind: YamlErrorKind::DuplicateKey(key),
                        });
                    }
                    out.insert(key, value);
                }
            }
        }
        for (k, v) in merges {
            let merged = self.value(v, alias, depth + 1)?;
            let sources = match merged.data {
                Data::Map(m) => vec![m],
                Data::Seq(items) => items
                    .into_iter()
                    .map(|item| match item.data {
                        Data::Map(m) => Ok(m),
                        _ => Err(self.error(v, Construct::MergeValue)),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(self.error(v, Construct::MergeValue)),
            };
            for source in sources {
                for (key, value) in source {
                    if out.contains_key(&key) {
                        return Err(self.error(k, Construct::MergeOverlap(key)));
                    }
                    out.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

enum Key {
    Text(String),
    Merge,
}

/// A plain scalar as Kubernetes' reader resolves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
    Merge,
}

/// Resolve a plain scalar the way go-yaml v2 does, where YAML 1.2 readers (go-yaml v3,
/// kustomize's kyaml) agree; `Err` says what go-yaml would make of the rest.
pub(crate) fn resolve_plain(s: &str) -> Result<Plain, &'static str> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Plain::Null),
        "true" | "True" | "TRUE" => return Ok(Plain::Bool(true)),
        "false" | "False" | "FALSE" => return Ok(Plain::Bool(false)),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "n" | "N" | "no" | "No" | "NO"
        | "off" | "Off" | "OFF" => {
            return Err(
                "a boolean to Kubernetes' reader (YAML 1.1) and a string to YAML 1.2 readers",
            );
        }
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => {
            return Err("a number JSON cannot carry (infinity or NaN)");
        }
        "<<" => return Ok(Plain::Merge),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Ok(Plain::Str);
    }
    // Every Kubernetes reader ends in go-yaml v2 (kustomize's kyaml writes plain scalars back
    // as they were written), so its resolution is the one to follow: `_` dropped, then Go's
    // integer syntax (`0x1F`, `0o17`, `0b101`, `0755` octal), then its float syntax.
    let plain = s.replace('_', "");
    if first != b'.' && go_parses_as_int(&plain) {
        return match go_int(&plain) {
            Some(i) => Ok(Plain::Int(i)),
            None => Err("an integer too large for 64 bits"),
        };
    }
    if is_yaml_float(&plain) {
        return match plain.parse::<f64>() {
            Ok(f) if f == 0.0 && f.is_sign_negative() => {
                Err("a negative zero, 0 or -0 to Kubernetes depending on the file: write 0")
            }
            Ok(f) if f.is_finite() => Ok(Plain::Float(f)),
            _ => Err("a number out of range: a string to Kubernetes' reader, infinity to others"),
        };
    }
    Ok(Plain::Str)
}

/// The value of a numeral [`go_parses_as_int`] accepts, when it fits an i64.
fn go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(d) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = digits.strip_prefix("0o").or(digits.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = digits.strip_prefix("0b").or(digits.strip_prefix("0B")) {
        (2, d)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax (range aside): sign, then a decimal, `0x`, `0o`,
/// `0b` or leading-zero octal numeral.
fn go_parses_as_int(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let all =
        |digits: &str, ok: fn(&u8) -> bool| !digits.is_empty() && digits.bytes().all(|b| ok(&b));
    if let Some(rest) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return all(rest, u8::is_ascii_hexdigit);
    }
    if let Some(rest) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
        return all(rest, |b| (b'0'..=b'7').contains(b));
    }
    if let Some(rest) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        return all(rest, |b| matches!(b, b'0' | b'1'));
    }
    if let Some(rest) = s.strip_prefix('0') {
        // Go takes a leading 0 as octal; `09` is no int there (it becomes a float).
        return rest.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    all(s, u8::is_ascii_digit)
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`: go-yaml's float syntax (and
/// YAML 1.2's).
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (s, None),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => !frac.is_empty() && digits(frac),
        Some((int, frac)) => digits(int) && digits(frac),
        None => !mantissa.is_empty() && digits(mantissa),
    };
    mantissa_ok && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(text: &str) -> Result<Vec<Option<serde_json::Value>>, YamlError> {
        let tree = Tree::parse(text)?;
        let mut budget = Budget::for_tree(&tree);
        tree.documents
            .iter()
            .map(|d| {
                d.root
                    .map(|r| tree.decode(r, &mut budget).map(|v| v.to_json()))
                    .transpose()
            })
            .collect()
    }

    fn refusal(text: &str) -> Construct {
        match decode(text) {
            Err(YamlError {
                kind: YamlErrorKind::Refused(c),
                ..
            }) => c,
            other => panic!("{text:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn plain_scalars_resolve_as_go_yaml_does_where_readers_agree() {
        let cases: &[(&str, Plain)] = &[
            ("", Plain::Null),
            ("~", Plain::Null),
            ("True", Plain::Bool(true)),
            ("FALSE", Plain::Bool(false)),
            ("0", Plain::Int(0)),
            ("-0", Plain::Int(0)),
            ("+12", Plain::Int(12)),
            ("1.5", Plain::Float(1.5)),
            (".5", Plain::Float(0.5)),
            ("-.5", Plain::Float(-0.5)),
            ("1e3", Plain::Float(1000.0)),
            ("1.", Plain::Float(1.0)),
            ("0.5", Plain::Float(0.5)),
            ("1:20", Plain::Str),
            ("0755", Plain::Int(493)),
            ("0x1F", Plain::Int(31)),
            ("0o17", Plain::Int(15)),
            ("0b101", Plain::Int(5)),
            ("1_000", Plain::Int(1000)),
            ("-0x10", Plain::Int(-16)),
            ("09", Plain::Float(9.0)),
            ("012.5", Plain::Float(12.5)),
            ("2024-01-01", Plain::Str),
            ("2001-12-14T21:59:43.10Z", Plain::Str),
            ("nginx:1.25", Plain::Str),
            ("-", Plain::Str),
            ("2024-01-01x", Plain::Str),
            ("Yes please", Plain::Str),
            ("<<", Plain::Merge),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_plain(text), Ok(*want), "{text:?}");
        }
        for text in [
            "yes",
            "No",
            "on",
            "OFF",
            "y",
            "N",
            ".inf",
            "-.Inf",
            ".nan",
            "99999999999999999999",
            "0x1FFFFFFFFFFFFFFFF",
            "1e999",
            "-0.0",
        ] {
            assert!(resolve_plain(text).is_err(), "{text:?} must be refused");
        }
    }

    #[test]
    fn integral_floats_are_integers_in_json_as_kubernetes_passes_them_on() {
        let docs = decode("a: 1.0\nb: 2.5\nc: 1e3\nd: 9.21e18\ne: 1e19\n").unwrap();
        assert_eq!(
            docs,
            vec![Some(
                serde_json::json!({"a": 1, "b": 2.5, "c": 1000, "d": 9_210_000_000_000_000_000_i64, "e": 1e19})
            )]
        );
    }

    #[test]
    fn float_bodies_read_back_from_json_exactly() {
        // Found by cargo-fuzz: without serde_json's float_roundtrip, `1.1e27` printed and
        // read back was 1.1000000000000001e27; Go reads every float correctly rounded.
        let docs = decode("a: 0.11e28\nb: 2.2250738585072014e-308\nc: 0.1\n").unwrap();
        let body = docs[0].clone().unwrap();
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            body
        );
        assert_eq!(body["a"].as_f64(), Some(1.1e27));
    }

    #[test]
    fn documents_split_where_kubernetes_splits_them() {
        // `---#` inside a block scalar ends the document for Kubernetes: it does here too.
        let text = "a: |\n  x\n---# not a comment to YAML\n  y\nb: 1\n";
        let tree = Tree::parse(text);
        assert!(tree.is_err() || tree.unwrap().documents.len() == 2);
        // A `---` line closes a piece that has content; on an empty piece it is its first line.
        assert_eq!(
            decode("---\na: 1\n---\n---\nb: 2\n").unwrap(),
            vec![
                Some(serde_json::json!({"a": 1})),
                Some(serde_json::json!({"b": 2}))
            ]
        );
        assert_eq!(refusal("a: 1\n...\nb: 2\n"), Construct::DocumentEnd);
        assert!(decode("a: 1\n... # end\n---\nb: 2\n").is_ok());
        assert_eq!(
            refusal("---\n...\n---\njust: data\n"),
            Construct::DocumentEnd
        );
        assert_eq!(refusal("a: 1\n--- b: 2\n"), Construct::BadSeparator);
        assert_eq!(refusal("%YAML 1.2\n---\na: 1\n"), Construct::Directive);
    }

    #[test]
    fn characters_readers_disagree_on_are_refused() {
        for (c, want) in [
            ('\u{2028}', Construct::LineSeparator('\u{2028}')),
            ('\u{2029}', Construct::LineSeparator('\u{2029}')),
            ('\u{85}', Construct::LineSeparator('\u{85}')),
            ('\r', Construct::LoneCarriageReturn),
            ('\u{7}', Construct::ControlCharacter('\u{7}')),
            ('\u{feff}', Construct::ByteOrderMark),
        ] {
            let text = format!("a: 1 # x{c}image: evil\n");
            assert_eq!(refusal(&text), want, "{c:?}");
        }
        assert!(decode("\u{feff}a: 1\r\nb: 'x'\r\n").is_ok());
    }

    #[test]
    fn keys_must_be_plain_strings() {
        assert!(matches!(refusal("!!binary aW1hZ2U=: x\n"), Construct::Tag(t) if t == "!!binary"));
        assert!(matches!(refusal("a: !!str x\n"), Construct::Tag(_)));
        assert_eq!(refusal("a: &k image\n*k : x\n"), Construct::AliasKey);
        assert_eq!(refusal("a: {[b]: x}\n"), Construct::ComplexKey);
        assert_eq!(
            refusal("x: &m {a: 1}\n'<<': *m\n"),
            Construct::QuotedMergeKey
        );
        assert!(matches!(refusal("1: x\n"), Construct::NonStringKey { .. }));
        assert!(matches!(refusal("on: x\n"), Construct::NonStringKey { .. }));
        assert!(matches!(
            refusal("null: x\n"),
            Construct::NonStringKey { .. }
        ));
        assert_eq!(
            decode("'1': x\n\"on\": z\n").unwrap(),
            vec![Some(serde_json::json!({"1": "x", "on": "z"}))]
        );
    }

    #[test]
    fn merges_are_followed_only_without_overlaps() {
        assert_eq!(
            decode("b: &b {x: 1}\nc: {<<: [*b, {w: 2}], z: 3}\n").unwrap(),
            vec![Some(
                serde_json::json!({"b": {"x": 1}, "c": {"x": 1, "w": 2, "z": 3}})
            )]
        );
        assert_eq!(
            refusal("b: &b {image: a}\nc: {image: evil, <<: *b}\n"),
            Construct::MergeOverlap("image".into())
        );
        assert_eq!(
            refusal("b: &b {image: a}\nc: {<<: *b, image: evil}\n"),
            Construct::MergeOverlap("image".into())
        );
        assert_eq!(
            refusal("b: &b {i: a}\nd: &d {i: b}\nc: {<<: [*b, *d]}\n"),
            Construct::MergeOverlap("i".into())
        );
        assert_eq!(refusal("c: {<<: 1}\n"), Construct::MergeValue);
    }

    #[test]
    fn a_flow_collection_closed_at_its_parents_column_is_read_as_go_yaml_reads_it() {
        // istio's style for `kubectl apply`.
        let text = "spec:\n  args: [\n    \"x\",\n  ]\n  env: {\n    a: b\n}\n";
        assert_eq!(
            decode(text).unwrap(),
            vec![Some(
                serde_json::json!({"spec": {"args": ["x"], "env": {"a": "b"}}})
            )]
        );
        let tree = Tree::parse(text).unwrap();
        let x = tree
            .nodes
            .iter()
            .find(|n| matches!(&n.kind, NodeKind::Scalar(s) if s.value == "x"))
            .unwrap();
        assert_eq!(
            (x.at.line, x.at.column, &text[x.at.offset..x.at.offset + 3]),
            (3, 5, "\"x\"")
        );
        let b = tree
            .nodes
            .iter()
            .find(|n| matches!(&n.kind, NodeKind::Scalar(s) if s.value == "b"))
            .unwrap();
        assert_eq!(
            (b.at.line, b.at.column),
            (6, 8),
            "lines after a joined closer stay true"
        );
        // CRLF too.
        assert!(decode(&text.replace('\n', "\r\n")).is_ok());
        // Not when a comment would swallow the closer, nor when the break is inside a value.
        assert!(decode("spec:\n  args: [\n    \"x\", # c\n  ]\n").is_err());
        assert!(decode("spec:\n  args: [\"x\n  ]\n  \"]\n").is_err());
    }

    #[test]
    fn what_go_yaml_refuses_and_yaml_1_2_reads_is_refused() {
        assert_eq!(refusal("a: \"x\\/y\"\n"), Construct::Escape('/'));
        assert!(
            decode("a: \"x\\\\/y\"\n").is_ok(),
            "an escaped backslash, then /"
        );
        assert_eq!(
            refusal(&format!("a: {{{}: x}}\n", "k".repeat(1025))),
            Construct::LongKey
        );
        assert!(decode(&format!("a: {{{}: x}}\n", "k".repeat(1024))).is_ok());
        // Found by cargo-fuzz (render's output read again): a JSON stream is read by a JSON
        // decoder, which has no key limit, and JSON escapes make keys longer than they were.
        assert!(decode(&format!("{{\"a\": {{\"{}\": 1}}}}\n", "k".repeat(1100))).is_ok());
        assert!(
            decode(&format!("{}: x\n", "k".repeat(1025))).is_err(),
            "block keys too"
        );
        assert_eq!(refusal("x: {a\n b: 1}\n"), Construct::MultilineKey);
        assert_eq!(
            refusal("a: &x.y 1\nb: *x.y\n"),
            Construct::AnchorName("x.y".into())
        );
        assert!(decode("a: &x-y_1 1\nb: *x-y_1\n").is_ok());
        // Found by a long differential run: a scalar's range starts at its anchor, so the
        // name of an anchor on a scalar went unchecked when no alias used it.
        for anchored_scalar in ["a: &x.y 1\n", "a: [{b: &&r \"x\"}]\n", "a: &x.y\n  1\n"] {
            assert!(
                matches!(refusal(anchored_scalar), Construct::AnchorName(_)),
                "{anchored_scalar:?}"
            );
        }
        assert!(decode("a: &x 1\nb: [&y \"z\"]\n").is_ok());
        assert_eq!(refusal("a:\n-\tb\n"), Construct::Tab);
        assert_eq!(refusal("? a\n:\t# c\n"), Construct::Tab);
        assert!(decode("? a\n: b\nc: d\t# e\n---\t\nf: g\n").is_ok());
        assert_eq!(refusal("a: {b: |\n    x}\n"), Construct::Indicator('|'));
        // go-yaml takes `?` as an explicit key indicator in flow even before a non-blank.
        assert_eq!(
            refusal("a: {image: good, ?image: evil}\n"),
            Construct::Indicator('?')
        );
        assert_eq!(refusal("a: {:k: x}\n"), Construct::Indicator(':'));
        assert_eq!(refusal("a: [{b: :x}]\n"), Construct::Indicator(':'));
        assert_eq!(refusal("a: {spec\n: x}\n"), Construct::MultilineKey);
        assert_eq!(refusal("\u{feff}...\n---\n"), Construct::DocumentEnd);
        assert!(decode("record: :node_memory:sum\n").is_ok());
        assert_eq!(refusal("\u{feff}# c\n... # end\n"), Construct::DocumentEnd);
        assert_eq!(refusal("a: [b:, c]\n"), Construct::ColonBeforeIndicator);
        assert_eq!(refusal("a: {b:}\n"), Construct::ColonBeforeIndicator);
        assert!(decode("a: {b: 'x:', c: \"y:\"}\n").is_ok());
        assert!(matches!(
            refusal("a: -0.0\n"),
            Construct::AmbiguousScalar { .. }
        ));
        assert_eq!(refusal("a: 1\n...x\n"), Construct::DocumentEnd);
        assert!(matches!(refusal("{\"a\": .5}\n"), Construct::NotJson(_)));
        assert!(matches!(refusal("{a: 1}\n"), Construct::NotJson(_)));
        assert!(decode("{\"a\": 0.5, \"b\": [1, \"x\"]}\n").is_ok());
        assert_eq!(refusal("a: 1\n\t\n"), Construct::Tab);
        assert!(decode("b: 'x\ty' # c\td\nc: |\n  \tz\n").is_ok());
        assert!(
            decode("a: x&y*z\n").is_ok(),
            "& and * inside a plain scalar"
        );
    }

    #[test]
    fn collections_per_file_are_bounded() {
        let text = "a: [".to_owned() + &"{}, ".repeat(MAX_COLLECTIONS) + "]\n";
        assert_eq!(refusal(&text), Construct::TooManyCollections);
        // The root mapping and the sequence count too.
        let text = "a: [".to_owned() + &"{}, ".repeat(MAX_COLLECTIONS - 2) + "]\n";
        assert!(decode(&text).is_ok());
    }

    #[test]
    fn aliases_of_long_strings_cost_their_length() {
        let long = "x".repeat(64 * 1024);
        let mut text = format!("a: &s {long}\nb: [");
        text.push_str(&vec!["*s"; 200].join(", "));
        text.push_str("]\n");
        assert_eq!(refusal(&text), Construct::TooManyAliasValues);
        assert!(decode(&format!("a: &s {long}\nb: [*s, *s]\n")).is_ok());
    }

    #[test]
    fn alias_expansion_and_nesting_are_bounded() {
        let level = |i: usize| vec![format!("*a{}", i - 1); 10].join(", ");
        let mut text = String::from("a0: &a0 [x]\n");
        for i in 1..30 {
            text += &format!("a{i}: &a{i} [{}]\n", level(i));
        }
        assert_eq!(refusal(&text), Construct::TooManyAliasValues);
        let deep = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert_eq!(refusal(&deep), Construct::TooDeep);
        let deep = format!("{}x\n", "- ".repeat(200));
        assert_eq!(refusal(&deep), Construct::TooDeep);
    }
}
