//! `lock --pin-sources` for Kustomize: (kustomization bytes, digests) → bytes whose `images:`
//! entries carry `digest:` beside their `newTag:`.
//!
//! Pure. Like [`super::rewrite`], it never re-serializes YAML: a `digest:` key is inserted on
//! the line after `newTag:` (at its indentation; after it in a flow mapping), or an existing
//! `digest:` value is replaced, and every other byte is kept. Kustomize then writes
//! `newName:newTag@digest` (both kept, tag first), so the rendered image still names the tag
//! lockstep follows. The result is read back and checked before it is returned.

use super::rewrite::{Edit, rewrite};
use super::scan::exact_span;
use super::yaml::{NodeKind, Tree};
use crate::model::Digest;

/// One `images:` entry written with a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePin {
    /// 1-based line of the entry's `newTag:`.
    pub line: usize,
    /// `newName:newTag` (or `name:newTag`): the image the entry makes.
    pub image: String,
    pub digest: Digest,
    /// The digest the entry carried before, if any.
    pub was: Option<String>,
}

/// What pinning a kustomization did: the new bytes (equal to the old when nothing changed),
/// the entries pinned, and the entries left as they are with the reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedSource {
    pub bytes: Vec<u8>,
    pub pinned: Vec<SourcePin>,
    pub skipped: Vec<String>,
}

/// Pin the `images:` entries of the kustomization `file` (its `bytes`): for each entry with a
/// `newTag`, `digest_for("NAME:TAG")` gives the digest lockstep locked that image at (`None`:
/// no rendered image is it, the entry is left alone and said so). An entry already pinned to
/// that digest is not touched. Errors name the file and line; nothing is produced then.
pub fn pin_kustomize_images(
    file: &str,
    bytes: &[u8],
    digest_for: impl Fn(&str) -> Option<Digest>,
) -> Result<PinnedSource, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{file}: not UTF-8"))?;
    let tree = Tree::parse(text).map_err(|e| format!("{file}:{}: {}", e.at.line, e.kind))?;
    let mut edits = Vec::new();
    let mut out = PinnedSource::default();
    for entry in image_entries(&tree) {
        let at_line = tree.node(entry.node).at.line;
        let where_ = format!("{file}:{at_line}");
        if let Some(twice) = FIELDS
            .iter()
            .find(|k| entry.present.iter().filter(|p| *p == *k).count() > 1)
        {
            return Err(format!("{where_}: an images entry gives {twice} twice"));
        }
        if entry.merges {
            return Err(format!(
                "{where_}: an images entry with a `<<` merge: lockstep cannot tell which keys it sets; write the entry out and run again, or pin it by hand"
            ));
        }
        if let Some(unreadable) = entry.present.iter().find(|k| entry.field(k).is_none()) {
            return Err(format!(
                "{where_}: the {unreadable} of an images entry is not a plain or quoted scalar lockstep can rewrite exactly (an anchor, an alias, a block scalar or an escape): write it plainly, or pin it by hand"
            ));
        }
        let Some(tag) = entry.field("newTag") else {
            out.skipped.push(format!(
                "{where_}: the images entry for {} sets no newTag: it keeps the base's tag, which lockstep pins only in the rendered output",
                entry.field("name").map_or("?", |f| f.value.as_str())
            ));
            continue;
        };
        let Some(name) = entry.field("newName").or(entry.field("name")) else {
            out.skipped
                .push(format!("{where_}: an images entry without a name"));
            continue;
        };
        let image = format!("{}:{}", name.value, tag.value);
        let Some(digest) = digest_for(&image) else {
            out.skipped.push(format!(
                "{where_}: no rendered image is {image}: the entry is left as it is"
            ));
            continue;
        };
        let was = entry.field("digest").map(|d| d.value.clone());
        if was.as_deref() == Some(digest.as_str()) {
            continue;
        }
        let quoted = format!("\"{digest}\"");
        edits.push(match entry.field("digest") {
            Some(old) => Edit {
                span: old.extent.clone(),
                replacement: quoted,
            },
            None if entry.flow => Edit {
                span: tag.extent.end..tag.extent.end,
                replacement: format!(", digest: {quoted}"),
            },
            None => {
                let (at, line_break) = line_end(text, tag.extent.end);
                let indent = " ".repeat(tag.key_column - 1);
                Edit {
                    span: at..at,
                    replacement: format!("{line_break}{indent}digest: {quoted}"),
                }
            }
        });
        out.pinned.push(SourcePin {
            line: tag.line,
            image,
            digest,
            was,
        });
    }
    out.bytes = rewrite(file, bytes, &edits).map_err(|e| e.to_string())?;
    check_written(file, &out)?;
    Ok(out)
}

/// Read the result back: it must parse, and every pinned entry must now carry its digest.
fn check_written(file: &str, out: &PinnedSource) -> Result<(), String> {
    let text = std::str::from_utf8(&out.bytes).map_err(|_| format!("{file}: not UTF-8"))?;
    let tree = Tree::parse(text).map_err(|e| {
        format!(
            "{file}: pinning would make it unreadable ({}); nothing was written: pin it by hand",
            e.kind
        )
    })?;
    let entries = image_entries(&tree);
    let twice = entries.iter().any(|e| {
        FIELDS
            .iter()
            .any(|k| e.present.iter().filter(|p| *p == k).count() > 1)
    });
    if twice {
        return Err(format!(
            "{file}: pinning would give an images entry a key twice; nothing was written: pin it by hand"
        ));
    }
    for pin in &out.pinned {
        // The entry whose newTag is on the pin's line must now carry the digest.
        let carried = entries.iter().any(|e| {
            e.field("newTag").is_some_and(|t| t.line == pin.line)
                && e.field("digest")
                    .is_some_and(|d| d.value == pin.digest.as_str())
        });
        if !carried {
            return Err(format!(
                "{file}:{}: the digest for {} did not read back; nothing was written: pin it by hand",
                pin.line, pin.image
            ));
        }
    }
    Ok(())
}

/// Where a line ends at or after `from` (before its CR LF or LF, or the end of the text), and
/// the line break to insert there.
fn line_end(text: &str, from: usize) -> (usize, &'static str) {
    match text[from..].find('\n') {
        Some(i) if text[..from + i].ends_with('\r') => (from + i - 1, "\r\n"),
        Some(i) => (from + i, "\n"),
        None => (text.len(), "\n"),
    }
}

/// A scalar field of an `images:` entry.
struct Field {
    key: &'static str,
    value: String,
    /// Its bytes in the file, quotes included.
    extent: std::ops::Range<usize>,
    line: usize,
    key_column: usize,
}

struct Entry {
    node: u32,
    flow: bool,
    /// The readable fields (see [`field`]).
    fields: Vec<Field>,
    /// Every one of [`FIELDS`] given as a key, readable or not, as often as given.
    present: Vec<&'static str>,
    /// Whether a `<<` merge key is given.
    merges: bool,
}

impl Entry {
    fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }
}

const FIELDS: [&str; 4] = ["name", "newName", "newTag", "digest"];

/// The mappings of the top-level `images:` sequence (of the first document: kustomize reads
/// no other), with their scalar fields whose bytes are their value (an escaped, folded,
/// anchored or aliased one is not a field: never edited).
fn image_entries(tree: &Tree<'_>) -> Vec<Entry> {
    let mut entries = Vec::new();
    for doc in tree.documents.iter().filter(|d| d.root.is_some()).take(1) {
        let Some(root) = doc.root else { continue };
        let NodeKind::Map(pairs) = &tree.node(root).kind else {
            continue;
        };
        let Some(&(_, images)) = pairs
            .iter()
            .find(|(k, _)| scalar(tree, *k) == Some("images"))
        else {
            continue;
        };
        let NodeKind::Seq(items) = &tree.node(images).kind else {
            continue;
        };
        for &item in items {
            let NodeKind::Map(fields) = &tree.node(item).kind else {
                continue;
            };
            let node = tree.node(item);
            let flow = tree.text.as_bytes().get(node.at.offset) == Some(&b'{');
            let keys: Vec<Option<&str>> = fields.iter().map(|&(k, _)| scalar(tree, k)).collect();
            let present = keys
                .iter()
                .filter_map(|k| FIELDS.into_iter().find(|f| Some(*f) == *k))
                .collect();
            let merges = keys.contains(&Some("<<"));
            let fields = fields
                .iter()
                .filter_map(|&(k, v)| field(tree, k, v))
                .collect();
            entries.push(Entry {
                node: item,
                flow,
                fields,
                present,
                merges,
            });
        }
    }
    entries
}

fn scalar<'a>(tree: &'a Tree<'_>, index: u32) -> Option<&'a str> {
    match &tree.node(index).kind {
        NodeKind::Scalar(s) => Some(&s.value),
        _ => None,
    }
}

fn field(tree: &Tree<'_>, key_node: u32, value: u32) -> Option<Field> {
    let name = scalar(tree, key_node)?;
    let key = FIELDS.into_iter().find(|f| *f == name)?;
    let node = tree.node(value);
    let NodeKind::Scalar(s) = &node.kind else {
        return None;
    };
    let content = exact_span(tree.text, node, &s.value, s.style).ok()?;
    let quoted = content.start != node.at.offset;
    let extent = if quoted {
        content.start - 1..content.end + 1
    } else {
        content
    };
    Some(Field {
        key,
        value: s.value.to_string(),
        extent,
        line: node.at.line,
        key_column: tree.node(key_node).at.column,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn pin(text: &str) -> PinnedSource {
        let digest: Digest = D.parse().unwrap();
        pin_kustomize_images("k.yaml", text.as_bytes(), |image| {
            (image == "registry.local/shop/api:2.0").then(|| digest.clone())
        })
        .unwrap()
    }

    fn text(p: &PinnedSource) -> &str {
        std::str::from_utf8(&p.bytes).unwrap()
    }

    #[test]
    fn a_digest_is_inserted_after_new_tag_keeping_every_other_byte() {
        let before = "resources:\n  - ../../base\nimages:\n  # the api\n  - name: shop/api\n    newName: registry.local/shop/api\n    newTag: \"2.0\"   # bumped by CI\n  - name: other\n    newTag: \"1\"\n";
        let p = pin(before);
        assert_eq!(
            text(&p),
            format!(
                "resources:\n  - ../../base\nimages:\n  # the api\n  - name: shop/api\n    newName: registry.local/shop/api\n    newTag: \"2.0\"   # bumped by CI\n    digest: \"{D}\"\n  - name: other\n    newTag: \"1\"\n"
            )
        );
        assert_eq!(p.pinned.len(), 1);
        assert_eq!(p.pinned[0].line, 7);
        assert_eq!(p.pinned[0].image, "registry.local/shop/api:2.0");
        assert_eq!(p.skipped.len(), 1);
        assert!(
            p.skipped[0].starts_with("k.yaml:8: no rendered image is other:1"),
            "{:?}",
            p.skipped
        );
        // Pinned again: nothing changes.
        let again = pin(text(&p));
        assert_eq!(again.bytes, p.bytes);
        assert!(again.pinned.is_empty());
    }

    #[test]
    fn an_old_digest_is_replaced_and_flow_mappings_and_crlf_are_kept() {
        let old = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
        let p = pin(&format!(
            "images:\n- name: registry.local/shop/api\n  digest: {old}\n  newTag: '2.0'\n"
        ));
        assert_eq!(
            text(&p),
            format!(
                "images:\n- name: registry.local/shop/api\n  digest: \"{D}\"\n  newTag: '2.0'\n"
            )
        );
        assert_eq!(p.pinned[0].was.as_deref(), Some(old));

        let p = pin("images: [{name: registry.local/shop/api, newTag: \"2.0\"}]\n");
        assert_eq!(
            text(&p),
            format!(
                "images: [{{name: registry.local/shop/api, newTag: \"2.0\", digest: \"{D}\"}}]\n"
            )
        );

        let p = pin("images:\r\n- name: registry.local/shop/api\r\n  newTag: \"2.0\"\r\n");
        assert_eq!(
            text(&p),
            format!(
                "images:\r\n- name: registry.local/shop/api\r\n  newTag: \"2.0\"\r\n  digest: \"{D}\"\r\n"
            )
        );
        let p = pin("images:\n- newTag: \"2.0\"\n  name: registry.local/shop/api");
        assert_eq!(
            text(&p),
            format!(
                "images:\n- newTag: \"2.0\"\n  digest: \"{D}\"\n  name: registry.local/shop/api"
            )
        );
    }

    #[test]
    fn entries_without_a_new_tag_are_left_and_said_so_and_unreadable_files_refused() {
        let p = pin("images:\n- name: registry.local/shop/api\n  newName: elsewhere/api\n");
        assert!(p.pinned.is_empty());
        assert!(p.skipped[0].contains("sets no newTag"), "{:?}", p.skipped);
        let err =
            pin_kustomize_images("k.yaml", b"images:\n- name: a\n  newTag: !!str b\n", |_| {
                None
            })
            .unwrap_err();
        assert!(err.starts_with("k.yaml:3:"), "{err}");
        let err = pin_kustomize_images(
            "k.yaml",
            b"images:\n- name: a\n  newTag: b\n  newTag: c\n",
            |_| None,
        )
        .unwrap_err();
        assert_eq!(err, "k.yaml:2: an images entry gives newTag twice");
        // Regression (review): a field lockstep cannot read exactly was taken as absent, so
        // a second `digest:` was inserted, or `name` used in place of an anchored `newName`.
        for text in [
            "images:\n- name: registry.local/shop/api\n  newTag: \"2.0\"\n  digest: &d sha256:22\n",
            "images:\n- name: registry.local/shop/api\n  newTag: \"2.0\"\n  digest: >-\n    sha256:22\n",
            "images:\n- name: api\n  newName: &n registry.local/shop/api\n  newTag: \"2.0\"\n",
            "x: &t \"2.0\"\nimages:\n- name: registry.local/shop/api\n  newTag: *t\n",
            "base: &b {newName: registry.local/shop/api}\nimages:\n- <<: *b\n  name: api\n  newTag: \"2.0\"\n",
        ] {
            let err = pin_kustomize_images("k.yaml", text.as_bytes(), |_| Some(D.parse().unwrap()))
                .unwrap_err();
            assert!(
                err.contains("pin it by hand") && err.starts_with("k.yaml:"),
                "{text}: {err}"
            );
        }
    }
}
