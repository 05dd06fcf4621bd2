//! (bytes, replacements) → bytes, touching only the image scalars.
//!
//! Pure. The rewriter never re-serializes YAML: it splices replacement text into the exact
//! byte ranges the scanner found, so comments, quoting, key order, indentation, anchors
//! and CRLF line ends stay byte-identical. It refuses overlapping or out-of-range edits,
//! and [`pin_uses`] refuses a use whose span no longer holds the reference it was scanned
//! with (the bytes changed since the scan), rather than corrupting the file.

use std::ops::Range;

use crate::model::{Digest, ImageUse, pin_written};

/// Replace the bytes in `span` with `replacement`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub span: Range<usize>,
    pub replacement: String,
}

/// Edits that cannot be applied; nothing is produced when this happens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RewriteError {
    #[error("{file}: edit of bytes {span:?} is outside the file ({len} bytes)")]
    OutOfRange {
        file: String,
        span: Range<usize>,
        len: usize,
    },
    #[error("{file}: edits of bytes {first:?} and {second:?} overlap")]
    Overlap {
        file: String,
        first: Range<usize>,
        second: Range<usize>,
    },
    #[error(
        "{file}:{line}:{column}: expected the image {expected:?} at bytes {span:?}, found {found:?}: the file changed since it was scanned"
    )]
    Stale {
        file: String,
        line: usize,
        column: usize,
        span: Range<usize>,
        expected: String,
        found: String,
    },
}

/// Apply `edits` to `bytes` (the content of `file`, named in errors). Edits may come in
/// any order; each replaces exactly its span, and all other bytes are copied unchanged.
pub fn rewrite(file: &str, bytes: &[u8], edits: &[Edit]) -> Result<Vec<u8>, RewriteError> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.span.start, e.span.end));
    for edit in &sorted {
        if edit.span.start > edit.span.end || edit.span.end > bytes.len() {
            return Err(RewriteError::OutOfRange {
                file: file.to_owned(),
                span: edit.span.clone(),
                len: bytes.len(),
            });
        }
    }
    for pair in sorted.windows(2) {
        let (a, b) = (&pair[0].span, &pair[1].span);
        // Two insertions at one offset would have no defined order: an overlap too.
        if b.start < a.end || (a == b && a.is_empty()) {
            return Err(RewriteError::Overlap {
                file: file.to_owned(),
                first: a.clone(),
                second: b.clone(),
            });
        }
    }
    let growth: usize = sorted.iter().map(|e| e.replacement.len()).sum();
    let mut out = Vec::with_capacity(bytes.len() + growth);
    let mut copied = 0;
    for edit in sorted {
        out.extend_from_slice(&bytes[copied..edit.span.start]);
        out.extend_from_slice(edit.replacement.as_bytes());
        copied = edit.span.end;
    }
    out.extend_from_slice(&bytes[copied..]);
    Ok(out)
}

/// Pin every use of `file` for which `digest_for` gives a digest: `name:tag` becomes
/// `name:tag@sha256:…` (an old digest is replaced, see [`pin_written`]). Uses for which it
/// gives `None` are left as they are.
pub fn pin_uses(
    file: &str,
    bytes: &[u8],
    uses: &[ImageUse],
    digest_for: impl Fn(&ImageUse) -> Option<Digest>,
) -> Result<Vec<u8>, RewriteError> {
    let mut edits = Vec::with_capacity(uses.len());
    for u in uses {
        let Some(digest) = digest_for(u) else {
            continue;
        };
        let found = bytes.get(u.span.clone());
        if found != Some(u.written.as_bytes()) {
            return Err(RewriteError::Stale {
                file: file.to_owned(),
                line: u.line,
                column: u.column,
                span: u.span.clone(),
                expected: u.written.clone(),
                found: found.map_or_else(
                    || "<past the end of the file>".to_owned(),
                    |b| String::from_utf8_lossy(b).into_owned(),
                ),
            });
        }
        edits.push(Edit {
            span: u.span.clone(),
            replacement: pin_written(&u.written, &digest),
        });
    }
    rewrite(file, bytes, &edits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::config::ScanConfig;
    use crate::manifest::scan::scan_file;

    fn edit(span: Range<usize>, replacement: &str) -> Edit {
        Edit {
            span,
            replacement: replacement.to_owned(),
        }
    }

    #[test]
    fn splices_only_the_spans_in_any_order() {
        let out = rewrite(
            "f",
            b"0123456789",
            &[edit(7..9, "xyz"), edit(1..2, ""), edit(4..4, "+")],
        )
        .unwrap();
        assert_eq!(out, b"023+456xyz9");
        assert_eq!(rewrite("f", b"abc", &[]).unwrap(), b"abc");
        assert_eq!(
            rewrite("f", b"abc", &[edit(0..3, "d"), edit(3..3, "e")]).unwrap(),
            b"de"
        );
    }

    #[test]
    fn refuses_out_of_range_and_overlapping_edits() {
        assert_eq!(
            rewrite("f", b"abc", &[edit(2..4, "x")]),
            Err(RewriteError::OutOfRange {
                file: "f".into(),
                span: 2..4,
                len: 3
            })
        );
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = edit(2..1, "x");
        assert!(matches!(
            rewrite("f", b"abc", &[backwards]),
            Err(RewriteError::OutOfRange { .. })
        ));
        assert_eq!(
            rewrite("f", b"abcdef", &[edit(3..5, "x"), edit(1..4, "y")]),
            Err(RewriteError::Overlap {
                file: "f".into(),
                first: 1..4,
                second: 3..5
            })
        );
        assert!(matches!(
            rewrite("f", b"abc", &[edit(1..1, "x"), edit(1..1, "y")]),
            Err(RewriteError::Overlap { .. })
        ));
    }

    const POD: &str = "apiVersion: v1\r\nkind: Pod\r\nmetadata: {name: p}  # keep\r\nspec:\r\n  containers:\r\n  - {name: a, image: 'r.io/a:1'}\r\n  - name: b\r\n    image: \"r.io/b:2@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\r\n  - name: c\r\n    image: r.io/c:3 # tag\r\n";

    #[test]
    fn pins_uses_in_place() {
        let uses = scan_file("pod.yaml", POD.as_bytes(), &ScanConfig::default())
            .unwrap()
            .uses;
        let d = Digest::of(b"new");
        let out = pin_uses("pod.yaml", POD.as_bytes(), &uses, |u| {
            (u.container != "containers/c").then(|| d.clone())
        })
        .unwrap();
        let want = POD
            .replace("'r.io/a:1'", &format!("'r.io/a:1@{d}'"))
            .replace(&format!("@sha256:{}", "0".repeat(64)), &format!("@{d}"));
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn refuses_stale_uses() {
        let uses = scan_file("pod.yaml", POD.as_bytes(), &ScanConfig::default())
            .unwrap()
            .uses;
        let changed = POD.replace("r.io/c:3", "r.io/c:4");
        let e = pin_uses("pod.yaml", changed.as_bytes(), &uses, |_| {
            Some(Digest::of(b"x"))
        })
        .unwrap_err();
        assert!(
            matches!(&e, RewriteError::Stale { line: 10, expected, found, .. } if expected == "r.io/c:3" && found == "r.io/c:4"),
            "{e:?}"
        );
        let e = pin_uses("pod.yaml", &POD.as_bytes()[..20], &uses, |_| {
            Some(Digest::of(b"x"))
        })
        .unwrap_err();
        assert!(matches!(e, RewriteError::Stale { .. }), "{e:?}");
    }
}
