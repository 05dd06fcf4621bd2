//! The file as text, before and around the parser: document splitting as Kubernetes does it,
//! characters and constructs readers disagree on, and positions (byte offset → line, column).

use super::{Construct, Position, YamlError, YamlErrorKind};

/// Converts a piece's character indices (the parser's unit) to byte offsets in the file.
pub(super) struct ByteOffsets {
    /// Byte offset of each character, plus the piece's length; empty when the piece is ASCII.
    table: Vec<usize>,
    base: usize,
    len: usize,
}

impl ByteOffsets {
    pub(super) fn new(piece: &str, base: usize) -> Self {
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

    pub(super) fn byte(&self, char_index: usize) -> usize {
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

pub(super) fn refused(text: &str, at: usize, construct: Construct) -> YamlError {
    YamlError {
        at: position_of(text, at),
        kind: YamlErrorKind::Refused(construct),
    }
}

/// Refuse the characters readers disagree on (see the module docs), in one pass.
pub(super) fn check_characters(text: &str) -> Result<(), YamlError> {
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
pub(super) fn line_column_offset(text: &str, line: usize, column: usize) -> usize {
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
pub(super) fn is_json_stream(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{a0}'])
        .starts_with('{')
}

/// Byte ranges of the pieces Kubernetes' line reader cuts the stream into: a line starting
/// with `---` (then only blanks or a comment) ends the piece before it and is dropped, unless
/// the piece is still empty, when it becomes the piece's first line.
pub(super) fn split_documents(text: &str) -> Result<Vec<std::ops::Range<usize>>, YamlError> {
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
pub(super) fn closer_line_break(
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
pub(super) fn check_outside_scalars(
    text: &str,
    scalars: &[std::ops::Range<usize>],
) -> Result<(), YamlError> {
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
pub(super) fn anchor_name_end(text: &str, at: usize) -> Result<usize, YamlError> {
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
