//! How a failed command ends: its class decides the exit code (chosen here only), and the
//! error renders as message, "caused by" chain, and a hint.

use std::error::Error as StdError;
use std::fmt::Write as _;

/// What kind of failure: decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A check ran and failed (verification, `lock --check`, a registry that lies): exit 1.
    Check,
    /// Bad arguments or a broken environment (missing file, unreachable registry): exit 2.
    Usage,
}

impl Class {
    pub fn exit_code(self) -> u8 {
        match self {
            Class::Check => 1,
            Class::Usage => 2,
        }
    }

    /// The one decision for "a registry could not be asked", for `lock`, `check`, `mirror`
    /// and `refresh`: exit 1 when any registry answered and the answer is the failure (a tag
    /// or digest not there, bytes that do not match their digest), exit 2 when none could
    /// be asked (unreachable, TLS, credentials, an error status).
    pub fn of_registry(failures: &crate::resolve::ResolveFailures) -> Class {
        if failures.has_finding() {
            Class::Check
        } else {
            Class::Usage
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::Check => "check-failed",
            Class::Usage => "usage",
        }
    }
}

/// A command's failure: what happened, why, and what to do.
#[derive(Debug)]
pub struct CliError {
    pub class: Class,
    pub error: Box<dyn StdError + Send + Sync>,
    pub hint: Option<String>,
}

impl CliError {
    pub fn usage(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        CliError::new(Class::Usage, error)
    }

    pub fn check(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        CliError::new(Class::Check, error)
    }

    /// A failure of the environment (exit 2) when `environment`, else a failed check (exit 1).
    pub fn usage_or_check(
        environment: bool,
        error: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        if environment {
            CliError::usage(error)
        } else {
            CliError::check(error)
        }
    }

    pub fn new(class: Class, error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        CliError {
            class,
            error: error.into(),
            hint: None,
        }
    }

    /// A registry run that failed, classed by [`Class::of_registry`].
    pub fn registry(failures: crate::resolve::ResolveFailures) -> Self {
        CliError::new(Class::of_registry(&failures), failures)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The message followed by each cause.
    pub fn chain(&self) -> Vec<String> {
        crate::cluster::kube_error::causes(&*self.error)
    }

    /// For people: `error: …`, `  caused by: …`, `  hint: …`.
    pub fn render(&self) -> String {
        let chain = self.chain();
        let mut s = format!("error: {}\n", chain[0]);
        for c in &chain[1..] {
            let _ = writeln!(s, "  caused by: {c}");
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(s, "  hint: {h}");
        }
        s
    }

    /// For machines (`--json`).
    pub fn to_json(&self) -> serde_json::Value {
        let chain = self.chain();
        serde_json::json!({
            "ok": false,
            "error": { "class": self.class.name(), "message": chain[0], "causes": &chain[1..], "hint": self.hint },
        })
    }
}

/// A plain message as an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Message(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn renders_chain_and_hint_with_exit_codes() {
        let e = CliError::check(Outer(std::io::Error::other("inner"))).hint("do this");
        assert_eq!(
            e.render(),
            "error: outer\n  caused by: inner\n  hint: do this\n"
        );
        assert_eq!(e.class.exit_code(), 1);
        assert_eq!(CliError::usage(Message("x".into())).class.exit_code(), 2);
        assert_eq!(e.to_json()["error"]["causes"][0], "inner");
    }
}
