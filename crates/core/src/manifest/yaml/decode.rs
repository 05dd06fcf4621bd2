//! A node of the tree decoded to the value Kubernetes' reader makes of it: plain scalars
//! resolved, aliases expanded and `<<` merges followed within a budget, keys refused unless
//! they are strings.

use std::collections::BTreeMap;

use saphyr_parser::ScalarStyle;

use super::plain::{Plain, resolve_plain};
use super::tree::{NodeKind, Scalar, Tree};
use super::{Construct, MAX_ALIAS_VALUES, MAX_NESTING, YamlError, YamlErrorKind};

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

impl Tree<'_> {
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
pub(super) const BUDGET_BYTES: usize = 64;

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
