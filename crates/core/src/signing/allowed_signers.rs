//! The trusted keys: Git's and OpenSSH's `allowed_signers` format (`man ssh-keygen`,
//! section ALLOWED SIGNERS), read the way `ssh-keygen -Y verify` reads it.
//!
//! A line is `principals [options] key [comment]`:
//! - principals: a comma-separated list of patterns (`*`, `?`, `!` negation), optionally in
//!   double quotes;
//! - options: comma-separated `namespaces="pattern,list"`, `valid-after="TIME"`,
//!   `valid-before="TIME"` (values must be quoted, as ssh-keygen requires);
//!   `cert-authority` is refused, because lockstep verifies plain keys only;
//! - key: `ssh-ed25519 AAAA…`.
//!
//! Differences from ssh-keygen, each on purpose:
//! - **Times without `Z` are UTC**, not the machine's local time zone: a verdict must not
//!   change with the `TZ` of whoever runs `lockstep verify` (or of the cluster node).
//!   Write the `Z` to make the file mean the same thing to ssh-keygen.
//! - Impossible dates (`20240231`) are errors; ssh-keygen rolls them over into March.
//! - Every line is checked, not only the lines before the first match.
//! - Keys of other types (`ssh-rsa`, `ecdsa-…`, security keys, certificates) are skipped
//!   with a notice ([`AllowedSigners::skipped`]) rather than refused: the same file often
//!   serves Git commit signing with such keys. They can never approve a lockfile.

use std::fmt;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use ssh_key::encoding::base64::{Base64, Encoding as _};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, PublicKey};

use super::{SigningError, probe};

/// The parsed `allowed_signers` file: the ed25519 keys lockstep trusts, and the lines it
/// skipped.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    source: String,
    keys: Vec<TrustedKey>,
    skipped: Vec<SkippedKey>,
}

/// One trusted ed25519 key with the restrictions of its line.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    line: usize,
    principals: Vec<String>,
    namespaces: Option<String>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
    key: KeyData,
    fingerprint: String,
}

/// A line whose key is not ed25519: kept out of the trust set, reported as a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// The 1-based line number.
    pub line: usize,
    /// The OpenSSH key type, e.g. `ssh-rsa`.
    pub key_type: String,
    /// The key's `SHA256:…` fingerprint.
    pub fingerprint: String,
}

/// What is wrong with one line of an `allowed_signers` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllowedSignersProblem {
    /// `cert-authority` lines trust certificates, which lockstep does not verify.
    #[error("certificate authorities are not supported; list the signing keys themselves")]
    CertAuthority,
    /// Principals but nothing after them.
    #[error("no key after the principals")]
    MissingKey,
    /// A `"` without its partner.
    #[error("a double quote is not closed")]
    UnterminatedQuote,
    /// A `"` in the middle of unquoted principals.
    #[error("a double quote inside the principals (quote the whole list instead)")]
    StrayQuote,
    /// Every principal is negated, so the line can never match anyone.
    #[error("the principals {0:?} can never match: every pattern is negated")]
    NoPrincipal(String),
    /// An option lockstep (and ssh-keygen) does not know.
    #[error(
        "unknown option {0:?} (known: namespaces=\"…\", valid-after=\"…\", valid-before=\"…\")"
    )]
    UnknownOption(String),
    /// An option value without double quotes.
    #[error("the value of {0} must be in double quotes: {0}=\"…\"")]
    UnquotedValue(&'static str),
    /// The same option twice on one line.
    #[error("{0} is given twice")]
    DuplicateOption(&'static str),
    /// `a,b,` — a comma with nothing after it.
    #[error("the options end with a comma")]
    TrailingComma,
    /// A `valid-after`/`valid-before` value that is not a time.
    #[error(
        "invalid {option} time {value:?} \
         (expected YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, optionally followed by Z)"
    )]
    InvalidTime {
        /// `valid-after` or `valid-before`.
        option: &'static str,
        /// The value as written.
        value: String,
    },
    /// `valid-before` not later than `valid-after`.
    #[error("valid-before ({before}) is not after valid-after ({after})")]
    EmptyWindow {
        /// The `valid-after` time.
        after: Timestamp,
        /// The `valid-before` time.
        before: Timestamp,
    },
    /// A word where the key type should be that names no OpenSSH key type.
    #[error("unknown key type {0:?}")]
    UnknownKeyType(String),
    /// The key's base64 data does not decode as a key of its type.
    #[error("invalid {0} key data")]
    InvalidKey(String),
}

impl AllowedSigners {
    /// Parses `allowed_signers` text. `source` names the file in errors and notices
    /// (`source:line: …`); usually the path the user gave.
    pub fn parse(text: &str, source: &str) -> Result<AllowedSigners, SigningError> {
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let fail = |problem, cause: Option<ssh_key::Error>| SigningError::AllowedSigners {
                file: source.to_owned(),
                line: line_number,
                problem,
                cause: cause.map(|c| crate::error_chain::Quoting::of(&c)),
            };
            match parse_line(line).map_err(|(problem, cause)| fail(problem, cause))? {
                None => {}
                Some(Entry::Trusted(mut key)) => {
                    key.line = line_number;
                    keys.push(key);
                }
                Some(Entry::Skipped {
                    key_type,
                    fingerprint,
                }) => skipped.push(SkippedKey {
                    line: line_number,
                    key_type,
                    fingerprint,
                }),
            }
        }
        Ok(AllowedSigners {
            source: source.to_owned(),
            keys,
            skipped,
        })
    }

    /// The name given to [`AllowedSigners::parse`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The trusted ed25519 keys, one per line, in file order.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The lines skipped because their key is not ed25519.
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// One notice per skipped line, `source:line: …`, for the CLI to show.
    pub fn notices(&self) -> Vec<String> {
        self.skipped
            .iter()
            .map(|s| format!("{}:{}: {s}", self.source, s.line))
            .collect()
    }

    /// The lines that list `key`.
    pub(crate) fn lines_for<'s>(
        &'s self,
        key: &'s KeyData,
    ) -> impl Iterator<Item = &'s TrustedKey> {
        self.keys.iter().filter(move |t| &t.key == key)
    }
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped the {} key {}: lockstep trusts ed25519 keys only",
            self.key_type, self.fingerprint
        )
    }
}

impl TrustedKey {
    /// The 1-based line of the file this key is on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The principals the line can match: its patterns as written, without the negated ones
    /// and without those a negation excludes.
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// The key's `SHA256:…` fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The `namespaces="…"` pattern list, if the line restricts namespaces.
    pub fn namespaces(&self) -> Option<&str> {
        self.namespaces.as_deref()
    }

    /// The `valid-after` time, if any.
    pub fn valid_after(&self) -> Option<Timestamp> {
        self.valid_after
    }

    /// The `valid-before` time, if any.
    pub fn valid_before(&self) -> Option<Timestamp> {
        self.valid_before
    }

    /// Whether the line lets this key sign in `namespace` (no `namespaces=` allows all).
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces
            .as_deref()
            .is_none_or(|patterns| match_pattern_list(namespace, patterns))
    }

    /// Whether `at` is inside the line's validity window. Like ssh-keygen, both ends are
    /// inclusive and compared in whole seconds.
    pub fn is_valid_at(&self, at: Timestamp) -> bool {
        let at = at.as_second();
        self.valid_after.is_none_or(|after| at >= after.as_second())
            && self
                .valid_before
                .is_none_or(|before| at <= before.as_second())
    }
}

enum Entry {
    Trusted(TrustedKey),
    Skipped {
        key_type: String,
        fingerprint: String,
    },
}

type LineError = (AllowedSignersProblem, Option<ssh_key::Error>);

fn problem(p: AllowedSignersProblem) -> LineError {
    (p, None)
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t')
}

fn parse_line(line: &str) -> Result<Option<Entry>, LineError> {
    let rest = line.trim_start_matches([' ', '\t', '\r', '\n']);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (principals, rest) = split_principals(rest)?;
    let rest = rest.trim_start_matches(is_blank);
    if rest.is_empty() {
        return Err(problem(AllowedSignersProblem::MissingKey));
    }
    let first = rest.split(is_blank).next().unwrap_or(rest);
    let (options, key_text) = if key_type_kind(first).is_some() {
        (Options::default(), rest)
    } else if first.contains('=') || starts_with_ignore_case(first, "cert-authority") {
        let end = end_of_options(rest)?;
        let options = parse_options(&rest[..end]).map_err(problem)?;
        let key_text = rest[end..].trim_start_matches(is_blank);
        if key_text.is_empty() {
            return Err(problem(AllowedSignersProblem::MissingKey));
        }
        (options, key_text)
    } else {
        return Err(problem(AllowedSignersProblem::UnknownKeyType(
            first.to_owned(),
        )));
    };
    let principals = identities(principals)?;
    let mut words = key_text.split(is_blank).filter(|w| !w.is_empty());
    let key_type = words.next().unwrap_or_default();
    let Some(kind) = key_type_kind(key_type) else {
        return Err(problem(AllowedSignersProblem::UnknownKeyType(
            key_type.to_owned(),
        )));
    };
    let Some(base64) = words.next() else {
        return Err(problem(AllowedSignersProblem::InvalidKey(
            key_type.to_owned(),
        )));
    };
    let invalid_key = |cause| {
        (
            AllowedSignersProblem::InvalidKey(key_type.to_owned()),
            Some(cause),
        )
    };
    match kind {
        KeyKind::Ed25519 => {
            let key =
                PublicKey::from_openssh(&format!("{key_type} {base64}")).map_err(invalid_key)?;
            Ok(Some(Entry::Trusted(TrustedKey {
                line: 0,
                principals,
                namespaces: options.namespaces,
                valid_after: options.valid_after,
                valid_before: options.valid_before,
                fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
                key: key.key_data().clone(),
            })))
        }
        KeyKind::Other => {
            let blob =
                Base64::decode_vec(base64).map_err(|e| invalid_key(ssh_key::Error::from(e)))?;
            if probe::blob_key_type(&blob).as_deref() != Some(key_type) {
                return Err(invalid_key(ssh_key::Error::AlgorithmUnknown));
            }
            Ok(Some(Entry::Skipped {
                key_type: key_type.to_owned(),
                fingerprint: probe::fingerprint_of_blob(&blob),
            }))
        }
    }
}

/// The principals field: a quoted string, or everything up to the first blank.
fn split_principals(rest: &str) -> Result<(&str, &str), LineError> {
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted
            .find('"')
            .ok_or(problem(AllowedSignersProblem::UnterminatedQuote))?;
        Ok((&quoted[..end], &quoted[end + 1..]))
    } else {
        let end = rest.find(is_blank).unwrap_or(rest.len());
        let token = &rest[..end];
        if token.contains('"') {
            return Err(problem(AllowedSignersProblem::StrayQuote));
        }
        Ok((token, &rest[end..]))
    }
}

/// The principals a line can match, as written; an error when none can.
fn identities(patterns: &str) -> Result<Vec<String>, LineError> {
    let mut found: Vec<String> = Vec::new();
    for pattern in patterns.split(',') {
        if pattern.is_empty() || pattern.starts_with('!') {
            continue;
        }
        // `*@example.com,!bot@example.com` keeps `*@example.com`; `a,!a` keeps nothing.
        if match_pattern_list(pattern, patterns) && !found.iter().any(|p| p == pattern) {
            found.push(pattern.to_owned());
        }
    }
    if found.is_empty() {
        return Err(problem(AllowedSignersProblem::NoPrincipal(
            patterns.to_owned(),
        )));
    }
    Ok(found)
}

enum KeyKind {
    Ed25519,
    Other,
}

/// Whether `word` is an OpenSSH key type, and whether lockstep can trust it.
fn key_type_kind(word: &str) -> Option<KeyKind> {
    const OTHER: &[&str] = &[
        "ssh-rsa",
        "ssh-dss",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
        "ssh-xmss@openssh.com",
    ];
    if word == Algorithm::Ed25519.as_str() {
        Some(KeyKind::Ed25519)
    } else if OTHER.contains(&word) || word.ends_with("-cert-v01@openssh.com") {
        Some(KeyKind::Other)
    } else {
        None
    }
}

#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
}

/// Where the options field ends: the first blank outside double quotes (ssh-keygen's
/// `sshkey_advance_past_options`).
fn end_of_options(text: &str) -> Result<usize, LineError> {
    let bytes = text.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => return Ok(i),
            _ => {}
        }
        i += 1;
    }
    if quoted {
        return Err(problem(AllowedSignersProblem::UnterminatedQuote));
    }
    Ok(text.len())
}

fn parse_options(mut text: &str) -> Result<Options, AllowedSignersProblem> {
    use AllowedSignersProblem as P;
    let mut options = Options::default();
    loop {
        if starts_with_ignore_case(text, "cert-authority") {
            return Err(P::CertAuthority);
        }
        let name_end = text.find(['=', ',']).unwrap_or(text.len());
        let name = &text[..name_end];
        let option = ["namespaces", "valid-after", "valid-before"]
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(name))
            .ok_or_else(|| P::UnknownOption(name.to_owned()))?;
        let value = text[name_end..]
            .strip_prefix('=')
            .ok_or(P::UnquotedValue(option))?;
        let (value, rest) = dequote(value).ok_or(P::UnquotedValue(option))??;
        match option {
            "namespaces" => set_once(&mut options.namespaces, value, option)?,
            _ => {
                let time = parse_time(&value).ok_or_else(|| P::InvalidTime {
                    option,
                    value: value.clone(),
                })?;
                let slot = if option == "valid-after" {
                    &mut options.valid_after
                } else {
                    &mut options.valid_before
                };
                set_once(slot, time, option)?;
            }
        }
        if rest.is_empty() {
            break;
        }
        text = rest
            .strip_prefix(',')
            .ok_or_else(|| P::UnknownOption(rest.split(',').next().unwrap_or(rest).to_owned()))?;
        if text.is_empty() {
            return Err(P::TrailingComma);
        }
    }
    if let (Some(after), Some(before)) = (options.valid_after, options.valid_before)
        && before <= after
    {
        return Err(P::EmptyWindow { after, before });
    }
    Ok(options)
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    option: &'static str,
) -> Result<(), AllowedSignersProblem> {
    if slot.is_some() {
        return Err(AllowedSignersProblem::DuplicateOption(option));
    }
    *slot = Some(value);
    Ok(())
}

/// A double-quoted value (`\"` stands for `"`) and the text after it; `None` when the value
/// does not start with a quote.
fn dequote(text: &str) -> Option<Result<(String, &str), AllowedSignersProblem>> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if body[i + 1..].starts_with('"') => {
                chars.next();
                value.push('"');
            }
            '"' => return Some(Ok((value, &body[i + 1..]))),
            c => value.push(c),
        }
    }
    Some(Err(AllowedSignersProblem::UnterminatedQuote))
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally followed by `Z` or `UTC`
/// (ssh-keygen's `parse_absolute_time`). Always read as UTC: see the module docs.
fn parse_time(value: &str) -> Option<Timestamp> {
    let bytes = value.as_bytes();
    // The suffixes are ASCII, so cutting them off lands on a character boundary.
    let digits = if bytes.len() > 1 && bytes[bytes.len() - 1].eq_ignore_ascii_case(&b'z') {
        &value[..value.len() - 1]
    } else if bytes.len() > 3 && bytes[bytes.len() - 3..].eq_ignore_ascii_case(b"utc") {
        &value[..value.len() - 3]
    } else {
        value
    };
    if !matches!(digits.len(), 8 | 12 | 14) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field =
        |range: std::ops::Range<usize>| digits.get(range).map_or(Some(0), |d| d.parse().ok());
    let year: i16 = digits[..4].parse().ok()?;
    let datetime = DateTime::new(
        year,
        field(4..6)?,
        field(6..8)?,
        field(8..10)?,
        field(10..12)?,
        field(12..14)?,
        0,
    )
    .ok()?;
    let timestamp = TimeZone::UTC.to_timestamp(datetime).ok()?;
    // ssh-keygen treats 0 as "no limit" and refuses times before 1970.
    (timestamp.as_second() > 0).then_some(timestamp)
}

/// OpenSSH's `match_pattern_list(string, patterns, 0) == 1`: some pattern of the
/// comma-separated list matches and no negated (`!`) pattern does.
pub(crate) fn match_pattern_list(string: &str, patterns: &str) -> bool {
    let mut positive = false;
    for pattern in patterns.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if match_pattern(string, pattern) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// A shell-style pattern over the whole string: `*` any run, `?` any one character.
fn match_pattern(string: &str, pattern: &str) -> bool {
    let s: Vec<char> = string.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    let (mut si, mut pi) = (0, 0);
    // The last `*` seen and the string position it currently stands for; backtracking to
    // it alone keeps this linear-ish instead of exponential.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((star_pi, star_si)) = star {
            pi = star_pi + 1;
            si = star_si + 1;
            star = Some((star_pi, star_si + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEKwMVhMLmvA1S5zAwd7h1wKqZVGMjsLa/VdAF/3UD7+";
    const KEY_FINGERPRINT: &str = "SHA256:L5g/Ek1/XL6fLY12qpWcIQf/IjTtefyydrLbfvcYH7Q";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBP9Ywxjg8pJ63hCc7e4cXvmCmjGWD0ILFu+ZTrjSM02yszgmroHWV+uv7aIqTbOVtbCe2KOAx7fF3fwivGqcGjE=";

    fn parse(text: &str) -> Result<AllowedSigners, SigningError> {
        AllowedSigners::parse(text, "signers")
    }

    fn one(line: &str) -> TrustedKey {
        let parsed = parse(line).unwrap();
        assert_eq!(parsed.keys().len(), 1, "{line}");
        parsed.keys()[0].clone()
    }

    fn problem_of(text: &str) -> (usize, AllowedSignersProblem) {
        match parse(text) {
            Err(SigningError::AllowedSigners { line, problem, .. }) => (line, problem),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn plain_line_with_comment() {
        let key = one(&format!("ci@example {KEY} the CI key"));
        assert_eq!(key.line(), 1);
        assert_eq!(key.principals(), ["ci@example"]);
        assert_eq!(key.fingerprint(), KEY_FINGERPRINT);
        assert!(key.allows_namespace("lockstep"));
        assert!(key.allows_namespace("git"));
        assert!(key.is_valid_at(ts("1999-01-01T00:00:00Z")));
    }

    #[test]
    fn comments_blank_lines_and_indentation_are_skipped_and_counted() {
        let text = format!("# trusted\n\n   \n\t  alice@x,bob@x\t {KEY}\r\n");
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.keys()[0].line(), 4);
        assert_eq!(parsed.keys()[0].principals(), ["alice@x", "bob@x"]);
        assert_eq!(parse("# only a comment\n").unwrap().keys().len(), 0);
    }

    #[test]
    fn quoted_principals_may_hold_blanks() {
        let key = one(&format!("\"Jane Doe,ci bot\" {KEY}"));
        assert_eq!(key.principals(), ["Jane Doe", "ci bot"]);
        assert_eq!(
            problem_of(&format!("\"Jane Doe {KEY}")).1,
            AllowedSignersProblem::UnterminatedQuote
        );
        assert_eq!(
            problem_of(&format!("jane\"doe\" {KEY}")).1,
            AllowedSignersProblem::StrayQuote
        );
    }

    #[test]
    fn negated_principals_are_not_principals() {
        let key = one(&format!("*@example.com,!bot@example.com {KEY}"));
        assert_eq!(key.principals(), ["*@example.com"]);
        let key = one(&format!("alice,!bob {KEY}"));
        assert_eq!(key.principals(), ["alice"]);
        let (line, p) = problem_of(&format!("# x\nalice,!a* {KEY}"));
        assert_eq!(line, 2);
        assert_eq!(p, AllowedSignersProblem::NoPrincipal("alice,!a*".into()));
    }

    #[test]
    fn namespaces_are_pattern_lists() {
        let key = one(&format!("ci namespaces=\"git,lock*\" {KEY}"));
        assert_eq!(key.namespaces(), Some("git,lock*"));
        assert!(key.allows_namespace("lockstep"));
        assert!(!key.allows_namespace("file"));
        let key = one(&format!("ci namespaces=\"*,!lockstep\" {KEY}"));
        assert!(!key.allows_namespace("lockstep"));
        assert!(key.allows_namespace("git"));
        let key = one(&format!("ci namespaces=\"\" {KEY}"));
        assert!(!key.allows_namespace("lockstep"));
        let key = one(&format!("ci namespaces=\"lock?tep\" {KEY}"));
        assert!(key.allows_namespace("lockstep"));
    }

    #[test]
    fn option_names_are_case_insensitive_and_values_may_hold_escaped_quotes() {
        let key = one(&format!("ci NameSpaces=\"a\\\"b,lockstep\" {KEY}"));
        assert_eq!(key.namespaces(), Some("a\"b,lockstep"));
    }

    #[test]
    fn validity_window_is_inclusive_in_seconds() {
        let key = one(&format!(
            "ci valid-after=\"20240101\",valid-before=\"20240601120000Z\" {KEY}"
        ));
        assert_eq!(key.valid_after(), Some(ts("2024-01-01T00:00:00Z")));
        assert_eq!(key.valid_before(), Some(ts("2024-06-01T12:00:00Z")));
        assert!(!key.is_valid_at(ts("2023-12-31T23:59:59Z")));
        assert!(key.is_valid_at(ts("2024-01-01T00:00:00Z")));
        assert!(key.is_valid_at(ts("2024-06-01T12:00:00.999Z")));
        assert!(!key.is_valid_at(ts("2024-06-01T12:00:01Z")));
    }

    #[test]
    fn times_are_utc_with_or_without_z() {
        assert_eq!(parse_time("20240102"), Some(ts("2024-01-02T00:00:00Z")));
        assert_eq!(parse_time("20240102Z"), Some(ts("2024-01-02T00:00:00Z")));
        assert_eq!(parse_time("20240102utc"), Some(ts("2024-01-02T00:00:00Z")));
        assert_eq!(parse_time("202401021314"), Some(ts("2024-01-02T13:14:00Z")));
        assert_eq!(
            parse_time("20240102131415z"),
            Some(ts("2024-01-02T13:14:15Z"))
        );
        for bad in [
            "",
            "Z",
            "2024",
            "2024010",
            "2024010212",
            "20241301",
            "20240231",
            "20240102246000",
            "2024-01-02",
            "+2024010",
            "19700101",
            "19691231",
            "20240102ZZ",
            "２０２４０１０２",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn option_errors_name_the_problem() {
        use AllowedSignersProblem as P;
        let cases = [
            ("valid-after=20240101", P::UnquotedValue("valid-after")),
            (
                "valid-after=\"2024\"",
                P::InvalidTime {
                    option: "valid-after",
                    value: "2024".into(),
                },
            ),
            (
                "valid-before=\"20240101\",valid-before=\"20240102\"",
                P::DuplicateOption("valid-before"),
            ),
            (
                "namespaces=\"a\",namespaces=\"b\"",
                P::DuplicateOption("namespaces"),
            ),
            ("namespaces=\"a\",", P::TrailingComma),
            ("namespaces=\"a\"x", P::UnknownOption("x".into())),
            ("foo=\"x\"", P::UnknownOption("foo".into())),
            (
                "namespaces,valid-after=\"20240101\"",
                P::UnquotedValue("namespaces"),
            ),
            ("namespaces=\"a", P::UnterminatedQuote),
            ("cert-authority", P::CertAuthority),
            ("namespaces=\"x\",Cert-Authority", P::CertAuthority),
            (
                "valid-after=\"20240102\",valid-before=\"20240102\"",
                P::EmptyWindow {
                    after: ts("2024-01-02T00:00:00Z"),
                    before: ts("2024-01-02T00:00:00Z"),
                },
            ),
        ];
        for (options, expected) in cases {
            assert_eq!(
                problem_of(&format!("ci {options} {KEY}")).1,
                expected,
                "{options}"
            );
        }
    }

    #[test]
    fn cert_authority_message_says_what_to_do() {
        let err = parse(&format!("# c\n*@corp cert-authority {KEY}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "signers:2: certificate authorities are not supported; list the signing keys themselves"
        );
    }

    #[test]
    fn key_errors_name_the_line() {
        use AllowedSignersProblem as P;
        assert_eq!(problem_of("ci"), (1, P::MissingKey));
        assert_eq!(problem_of("ci namespaces=\"lockstep\""), (1, P::MissingKey));
        assert_eq!(
            problem_of("ci ssh-ed448 AAAA"),
            (1, P::UnknownKeyType("ssh-ed448".into()))
        );
        assert_eq!(
            problem_of("ci ssh-ed25519"),
            (1, P::InvalidKey("ssh-ed25519".into()))
        );
        assert_eq!(
            problem_of("\nci ssh-ed25519 AAAAnotbase64!"),
            (2, P::InvalidKey("ssh-ed25519".into()))
        );
        // An ECDSA blob presented as ed25519.
        let blob = ECDSA.split(' ').nth(1).unwrap();
        assert_eq!(
            problem_of(&format!("ci ssh-ed25519 {blob}")),
            (1, P::InvalidKey("ssh-ed25519".into()))
        );
        // An ed25519 blob presented as RSA.
        let blob = KEY.split(' ').nth(1).unwrap();
        assert_eq!(
            problem_of(&format!("ci ssh-rsa {blob}")),
            (1, P::InvalidKey("ssh-rsa".into()))
        );
        let err = parse("ci ssh-ed25519 AAAAnotbase64!").unwrap_err();
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn other_key_types_are_skipped_with_a_notice() {
        let text = format!("alice@x {ECDSA} alice laptop\nci@example {KEY}\n");
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.keys().len(), 1);
        assert_eq!(
            parsed.skipped(),
            [SkippedKey {
                line: 1,
                key_type: "ecdsa-sha2-nistp256".into(),
                fingerprint: crate::signing::probe::tests::ECDSA_FINGERPRINT.into(),
            }]
        );
        assert_eq!(
            parsed.notices(),
            [format!(
                "signers:1: skipped the ecdsa-sha2-nistp256 key {}: lockstep trusts ed25519 keys only",
                crate::signing::probe::tests::ECDSA_FINGERPRINT
            )]
        );
    }

    #[test]
    fn patterns_match_like_openssh() {
        assert!(match_pattern("lockstep", "lockstep"));
        assert!(match_pattern("lockstep", "*"));
        assert!(match_pattern("lockstep", "l*p"));
        assert!(match_pattern("lockstep", "lock?tep"));
        assert!(match_pattern("", "*"));
        assert!(match_pattern("a*b", "a*b"));
        assert!(!match_pattern("lockstep", "lock"));
        assert!(!match_pattern("lockstep", "?lockstep"));
        assert!(!match_pattern("Lockstep", "lockstep"));
        assert!(match_pattern(&"a".repeat(60), &"*a".repeat(30)));
        assert!(!match_pattern(
            &"a".repeat(60),
            &format!("{}b", "*a".repeat(30))
        ));
        assert!(match_pattern_list("lockstep", "git,lockstep"));
        assert!(!match_pattern_list("lockstep", "git,file"));
        assert!(!match_pattern_list("lockstep", "*,!lock*"));
        assert!(!match_pattern_list("lockstep", "!lockstep"));
    }
}
