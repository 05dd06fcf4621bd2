//! An error and its causes, each said once: the one rendering every command, the audit, the
//! registry's failure lists and the reconciler's status messages use.

use std::error::Error;

/// The error's message, then each cause's, skipping a cause whose text the message before it
/// already holds (many errors repeat their source in their own message).
pub fn causes(error: &dyn Error) -> Vec<String> {
    let mut out = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.last().is_some_and(|prev| prev.contains(&text)) {
            out.push(text);
        }
        cause = c.source();
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
    fn each_cause_is_said_once() {
        let e = Outer(std::io::Error::other("denied"));
        assert_eq!(causes(&e), ["reading a.yaml", "denied"]);
        assert_eq!(one_line(&e), "reading a.yaml: denied");
        let e = Repeats(std::io::Error::other("denied"));
        assert_eq!(one_line(&e), "reading a.yaml: denied");
    }
}
