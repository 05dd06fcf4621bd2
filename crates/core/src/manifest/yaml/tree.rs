//! One parse of the file into a node arena: each document piece through saphyr's event
//! parser, tags refused, collections counted and nesting bounded as nodes are attached.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

use super::text::{
    ByteOffsets, check_characters, check_outside_scalars, closer_line_break, is_json_stream,
    line_column_offset, refused, split_documents,
};
use super::{Construct, MAX_COLLECTIONS, MAX_NESTING, Position, YamlError, YamlErrorKind};

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

/// The node a scalar, alias or collection-opening event adds, its anchor (0 for none) and
/// whether it opens a collection; a tag is refused.
fn node_of<'s, 't>(
    event: Event<'s>,
    at: Position,
    end: usize,
    anchors: &HashMap<usize, u32>,
    keep: fn(Cow<'s, str>) -> Cow<'t, str>,
) -> Result<(Node<'t>, usize, bool), YamlError> {
    let (kind, anchor, tag, opens) = match event {
        Event::Scalar(value, style, anchor, tag) => {
            let value = keep(value);
            (
                NodeKind::Scalar(Scalar { value, style }),
                anchor,
                tag,
                false,
            )
        }
        // The parser refuses unknown anchors, so the lookup cannot fail.
        Event::Alias(anchor) => {
            let target = anchors.get(&anchor).copied().unwrap_or_default();
            (NodeKind::Alias(target), 0, None, false)
        }
        Event::SequenceStart(anchor, tag) => (NodeKind::Seq(Vec::new()), anchor, tag, true),
        Event::MappingStart(anchor, tag) => (NodeKind::Map(Vec::new()), anchor, tag, true),
        _ => unreachable!("only node events reach node_of"),
    };
    if let Some(tag) = tag {
        return Err(refused_tag(at, &tag));
    }
    let anchored = anchor != 0;
    Ok((
        Node {
            kind,
            at,
            end,
            anchored,
        },
        anchor,
        opens,
    ))
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

/// An open collection while building the tree.
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
            let end = offsets.byte(span.end.index());
            match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(YamlError {
                            at,
                            kind: YamlErrorKind::Refused(Construct::SecondDocument),
                        });
                    }
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let frame = stack.pop().expect("the parser balances collections");
                    self.nodes[frame.node as usize].end = end;
                }
                Event::DocumentEnd | Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
                event @ (Event::Scalar(..)
                | Event::Alias(_)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)) => {
                    let (node, anchor, opens) = node_of(event, at, end, &anchors, keep)?;
                    if matches!(node.kind, NodeKind::Scalar(_)) {
                        self.scalar_ranges.push(at.offset..end);
                    }
                    let (nodes, collections) = (&mut self.nodes, &mut self.collections);
                    let index = attach(nodes, collections, node, (&mut stack, &mut root), opens)?;
                    if anchor != 0 {
                        anchors.insert(anchor, index);
                    }
                }
            }
        }
        self.documents.push(Document { root });
        Ok(())
    }

    pub fn node(&self, index: u32) -> &Node<'t> {
        &self.nodes[index as usize]
    }
}
