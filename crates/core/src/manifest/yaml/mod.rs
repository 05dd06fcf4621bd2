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

use std::fmt;

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
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Construct {
    #[error("the character U+{:04X} is a line break to Kubernetes' reader (go-yaml) but not to YAML 1.2 readers; remove it", u32::from(*.0))]
    LineSeparator(char),
    #[error(
        "a carriage return not followed by a line feed: YAML breaks the line there, Kubernetes' document splitter does not; use LF or CRLF line ends"
    )]
    LoneCarriageReturn,
    #[error("the control character U+{:04X} is not allowed in YAML; remove it (or write it as an escape in a double-quoted string)", u32::from(*.0))]
    ControlCharacter(char),
    #[error("a byte order mark is only allowed at the start of the file")]
    ByteOrderMark,
    #[error("a `%` directive: Kubernetes' reader splits documents before it sees them; remove it")]
    Directive,
    #[error(
        "a line starting with `---` followed by content: Kubernetes' reader refuses it as a document separator; put the content on the next line"
    )]
    BadSeparator,
    #[error(
        "a `...` document end followed by more content, or with no document before it: Kubernetes' reader drops what follows it, or fails; separate documents with `---` lines"
    )]
    DocumentEnd,
    #[error(
        "a second YAML document without a `---` line (after `...`): Kubernetes' reader would read only the first; start each document with a `---` line"
    )]
    SecondDocument,
    #[error(
        "the tag `{0}`: readers decode tags differently (`!!binary` keys, `!!merge`); remove it, and quote the value if it must be a string"
    )]
    Tag(String),
    #[error("an alias (*…) used as a key; write the key out")]
    AliasKey,
    #[error("a mapping or sequence used as a key; keys must be strings")]
    ComplexKey,
    #[error(
        "a quoted `<<` key: some readers take it as a merge, others as a string; write a plain `<<` to merge, or another key"
    )]
    QuotedMergeKey,
    #[error("a `<<` merge needs a mapping or a sequence of mappings (usually an alias *…)")]
    MergeValue,
    #[error(
        "the key {0:?} is given both by a `<<` merge and elsewhere in the mapping: readers disagree on which one wins; write it once"
    )]
    MergeOverlap(String),
    #[error("a plain `<<` used as a value; quote it")]
    MergeAsValue,
    #[error("the key {text:?} is {reads_as} to YAML, not a string; quote it")]
    NonStringKey {
        text: String,
        reads_as: &'static str,
    },
    #[error("the plain value {text:?} is {reads_as}; write it plainly (quote it for a string)")]
    AmbiguousScalar {
        text: String,
        reads_as: &'static str,
    },
    #[error("an alias refers to the node that contains it")]
    RecursiveAlias,
    #[error(
        "a file whose first character is `{{` is JSON to Kubernetes' reader, and this is not JSON ({0}): write JSON, or YAML that does not start with `{{`"
    )]
    NotJson(String),
    #[error(
        "a plain value starting with `{0}`: go-yaml reads it as an indicator, YAML 1.2 parsers as text; quote it"
    )]
    Indicator(char),
    #[error(
        "the escape `\\{0}` is YAML 1.2 only: Kubernetes' reader refuses it; write the character itself"
    )]
    Escape(char),
    #[error("a key longer than 1024 characters: Kubernetes' reader refuses it; shorten it")]
    LongKey,
    #[error("a key written over several lines: readers disagree on it; write it on one line")]
    MultilineKey,
    #[error(
        "the anchor or alias name {0:?}: Kubernetes' reader allows only letters, digits, `-` and `_` in it"
    )]
    AnchorName(String),
    #[error(
        "a tab in indentation or right after `-`, `?` or `:` at the start of a line: Kubernetes' reader refuses it; use spaces"
    )]
    Tab,
    #[error(
        "collections nested deeper than {} levels (through aliases too)",
        MAX_NESTING
    )]
    TooDeep,
    #[error(
        "more than {} mappings and sequences in one file; split it",
        MAX_COLLECTIONS
    )]
    TooManyCollections,
    #[error(
        "a `:` right before `,`, `]` or `}}`: go-yaml reads it as part of the text, YAML 1.2 as a key with no value; add a space or quote the text"
    )]
    ColonBeforeIndicator,
    #[error("aliases expand to more than {} values (or {} MB of text); write the repeated parts out or drop the anchors", MAX_ALIAS_VALUES, MAX_ALIAS_VALUES * BUDGET_BYTES / 1_000_000)]
    TooManyAliasValues,
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

mod decode;
mod plain;
mod text;
mod tree;

use decode::BUDGET_BYTES;
pub(crate) use decode::{Budget, Data, Decoded};
pub(crate) use text::position_of;
pub(crate) use tree::{Node, NodeKind, Tree};

#[cfg(test)]
mod tests {
    use super::plain::{Plain, resolve_plain};
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
