//! An error and its causes, each said once: the one rendering every command, the audit, the
//! registry's failure lists and the reconciler's status messages use. Errors quote input an
//! attacker may have written (a manifest, a signature file, a registry's answer), so what they
//! show is escaped: no character of the input can act on a terminal or forge a log line.

use std::borrow::Cow;
use std::error::Error;
use std::fmt::{self, Write as _};

/// Whether `c` acts on a terminal or splits a line: control characters, line and paragraph
/// separators, bidirectional overrides and isolates, the BOM.
pub fn acts_on_a_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// `text` with each character that [acts on a terminal](acts_on_a_terminal) written as its
/// escape (`\u{1b}`), line feeds kept when `keep_lines` (a parser's snippet is several lines).
pub fn escape(text: &str, keep_lines: bool) -> Cow<'_, str> {
    let escaped = |c: char| acts_on_a_terminal(c) && !(keep_lines && c == '\n');
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A third-party error whose text quotes its input (a TOML parser's snippet of the line),
/// kept as that text, [escaped](escape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoting(String);

impl Quoting {
    pub fn of(error: &dyn fmt::Display) -> Quoting {
        Quoting(escape(&error.to_string(), true).into_owned())
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quoting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Quoting {}

/// The error's message, then each cause's, skipping a cause whose text the message before it
/// already holds (many errors repeat their source in their own message).
///
/// Each is [escaped](escape), line feeds kept: a message that quotes its input unescaped
/// still cannot act on the terminal or the log it reaches.
pub fn causes(error: &dyn Error) -> Vec<String> {
    causes_with(error, |_| None)
}

/// [`causes`], where `text_of` may give a cause's text itself (for an error whose own
/// rendering is not fit to show, such as one that prints its source's `Debug`); a cause it
/// renders ends the chain. `error` itself is rendered by its `Display`.
pub fn causes_with(
    error: &dyn Error,
    text_of: impl Fn(&(dyn Error + 'static)) -> Option<String>,
) -> Vec<String> {
    let mut out = vec![escape(&error.to_string(), true).into_owned()];
    let mut cause = error.source();
    while let Some(c) = cause {
        let rendered = text_of(c);
        let last = rendered.is_some();
        let text = escape(&rendered.unwrap_or_else(|| c.to_string()), true).into_owned();
        if !out.last().is_some_and(|prev| prev.contains(&text)) {
            out.push(text);
        }
        cause = if last { None } else { c.source() };
    }
    out
}

/// [`causes`] on one line, joined by `": "`.
pub fn one_line(error: &dyn Error) -> String {
    causes(error).join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading a.yaml")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reading a.yaml: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn escape_writes_what_acts_on_a_terminal_as_escapes() {
        assert_eq!(escape("plain: ok", false), "plain: ok");
        assert!(matches!(escape("plain", false), Cow::Borrowed(_)));
        assert_eq!(
            escape("a\u{1b}[2Jb\rc\u{2028}d\u{202e}e", false),
            "a\\u{1b}[2Jb\\u{d}c\\u{2028}d\\u{202e}e"
        );
        assert_eq!(escape("one\ntwo", true), "one\ntwo");
        assert_eq!(escape("one\ntwo", false), "one\\u{a}two");
        assert_eq!(escape("ünïcode ✓", false), "ünïcode ✓");
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = Outer(std::io::Error::other("denied"));
        assert_eq!(causes(&e), ["reading a.yaml", "denied"]);
        assert_eq!(one_line(&e), "reading a.yaml: denied");
        let e = Repeats(std::io::Error::other("denied"));
        assert_eq!(one_line(&e), "reading a.yaml: denied");
    }
}
