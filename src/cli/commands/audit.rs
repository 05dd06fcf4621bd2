//! `lockstep audit`: walk the Git history of a manifests directory, verify every commit that
//! changed its inputs exactly as `lockstep verify --rev` would, and report who approved what,
//! which images changed, and the findings of [`crate::audit`].
//!
//! Each commit is judged as of its committer time: an allowed_signers validity window says
//! when a key may sign, so a commit made while a since-retired key was valid stays valid, and
//! one signed by a key before its `valid-after` is still caught. Committer time is claimed by
//! the committer, not proven; a key holder can backdate a commit into its window, which is why
//! retiring a key by deleting its line (rather than only closing its window) is the stronger
//! revocation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::audit::{
    Audit, AuditPolicy, CommitFacts, ImageChange, LockFacts, PromotionFacts, UnknownSigner, audit,
};
use crate::cli::error::{Class, CliError, Message};
use crate::cli::printer::Printer;
use crate::lockfile::Lockfile;
use crate::promotion::PromotionPolicy;
use crate::signing::AllowedSigners;
use crate::signing::{self, SignatureFile, SignatureProblem};
use crate::source::{SourceFiles, git};
use crate::verify::{TrustPolicy, VerifyError, verify_dir};

/// `lockstep audit` arguments.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The manifests directory, inside a Git work tree (or a bare repository's root).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Stop at this revision (exclusive): audit only the commits after it.
    #[arg(long, value_name = "REV")]
    pub since: Option<String>,
    /// Follow every parent of merges, not only the first.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub signers: crate::cli::args::SignersArgs,
    /// Policy: every new lockfile must record a promotion (`lockstep promote`) from this
    /// environment, with its source verified in history; others are findings.
    #[arg(long, value_name = "ENV")]
    pub require_promotion_from: Option<String>,
    /// Who may sign promotions' source lockfiles (allowed_signers format); without it,
    /// --allowed-signers.
    #[arg(long, value_name = "FILE")]
    pub from_allowed_signers: Option<PathBuf>,
    /// How many distinct principals must have signed a promotion's source lockfile.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub from_threshold: usize,
}

/// Run the audit; a finding is a [`Class::Check`] failure (exit 1).
pub fn run(args: AuditArgs, printer: Printer) -> Result<(), CliError> {
    if args.signers.threshold == 0 {
        return Err(CliError::usage(Message(
            "--threshold must be at least 1".into(),
        )));
    }
    let trust = super::verify::load_trust(&args.signers.allowed_signers, &args.dir, printer)?;
    let from_trust = match &args.from_allowed_signers {
        Some(file) => super::verify::load_trust(file, &args.dir, printer)?,
        None => trust.clone(),
    };
    let history =
        git::read_history(&args.dir, args.since.as_deref(), args.all).map_err(CliError::usage)?;
    let facts: Vec<CommitFacts> = history
        .into_iter()
        .map(|commit| {
            let time =
                Timestamp::from_second(commit.committer_seconds).unwrap_or(Timestamp::UNIX_EPOCH);
            let policy = TrustPolicy {
                signers: &trust,
                at: time,
                threshold: args.signers.threshold,
                environment: args.signers.environment.as_deref(),
                strict: false,
            };
            let mut facts = CommitFacts {
                id: commit.info.id,
                time,
                summary: commit.info.summary,
                verdict: Err(String::new()),
                lock: None,
                unknown_signers: Vec::new(),
            };
            match &commit.files {
                Ok(files) => {
                    let id = facts.id.clone();
                    judge(files, &policy, &mut facts, |lock| {
                        promotion_source(&args, &from_trust, &id, lock)
                    })
                }
                Err(e) => facts.verdict = Err(one_line(e)),
            }
            facts
        })
        .collect();
    let policy = AuditPolicy {
        require_promotion_from: args.require_promotion_from.clone(),
    };
    let audit = audit(&facts, &policy);
    report(&audit, &args, printer)
}

/// For a verified lockfile recording a promotion from an environment: its source looked for
/// in the history from `commit`, as `verify --promoted-from` does (`None` when the source
/// records no environment to verify it for).
fn promotion_source(
    args: &AuditArgs,
    from_trust: &AllowedSigners,
    commit: &str,
    lock: &Lockfile,
) -> Option<Result<String, String>> {
    let from = lock.promoted_from.as_ref()?.environment.as_deref()?;
    let policy = PromotionPolicy {
        from,
        signers: from_trust,
        threshold: args.from_threshold,
    };
    Some(
        crate::source::promotion::confirm(&args.dir, commit, lock, &policy)
            .map(|source| source.commit)
            .map_err(|e| one_line(&e)),
    )
}

/// Verify one commit's files and fill in the verdict, the lockfile and unknown signers.
fn judge(
    files: &SourceFiles,
    policy: &TrustPolicy<'_>,
    facts: &mut CommitFacts,
    promotion_source: impl Fn(&Lockfile) -> Option<Result<String, String>>,
) {
    let accepted: Vec<String> = match verify_dir(files, policy) {
        Ok(verified) => {
            facts.verdict = Ok(verified
                .signers()
                .iter()
                .flat_map(|s| s.principals.iter().cloned())
                .collect());
            let mut lock = lock_facts(verified.lockfile(), verified.lockfile_bytes());
            if let Some(p) = &mut lock.promoted_from {
                p.source = promotion_source(verified.lockfile());
            }
            facts.lock = Some(lock);
            verified.signers().iter().map(|s| s.file.clone()).collect()
        }
        Err(e) => {
            facts.verdict = Err(first_reason(&e));
            facts.lock = files.lockfile().and_then(|bytes| {
                Lockfile::parse_unverified(bytes)
                    .ok()
                    .map(|lock| lock_facts(&lock, bytes))
            });
            Vec::new()
        }
    };
    facts.unknown_signers = unknown_signers(files, policy, &accepted);
}

/// The signature files made by keys no allowed signer lists. Each file not among the
/// accepted ones is checked on its own, so a valid lock's stray signature is found too.
fn unknown_signers(
    files: &SourceFiles,
    policy: &TrustPolicy<'_>,
    accepted: &[String],
) -> Vec<UnknownSigner> {
    let Some(lock_bytes) = files.lockfile() else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    for (signer, armored) in files.signatures() {
        let file = SignatureFile {
            name: crate::source::signature_path(signer),
            armored: armored.to_vec(),
        };
        if accepted.contains(&file.name) {
            continue;
        }
        let name = file.name.clone();
        let Err(signing::VerifyError::ThresholdNotMet { rejected, .. }) =
            signing::verify(lock_bytes, &[file], policy.signers, policy.at, 1)
        else {
            continue;
        };
        for r in rejected {
            if let SignatureProblem::UntrustedKey { fingerprint } = r.problem {
                unknown.push(UnknownSigner {
                    file: name.clone(),
                    fingerprint,
                });
            }
        }
    }
    unknown
}

fn lock_facts(lock: &Lockfile, bytes: &[u8]) -> LockFacts {
    LockFacts {
        generation: lock.generation,
        images: lock
            .images
            .iter()
            .map(|e| (e.reference.clone(), e.digest.to_string()))
            .collect::<BTreeMap<_, _>>(),
        sha256: hex::encode(Sha256::digest(bytes)),
        mirrors: lock
            .images
            .iter()
            .filter(|e| !e.mirrors.is_empty())
            .map(|e| (e.reference.clone(), e.mirrors.clone()))
            .collect(),
        environment: lock.environment.clone(),
        promoted_from: lock.promoted_from.as_ref().map(|p| PromotionFacts {
            environment: p.environment.clone(),
            generation: p.generation,
            source: None,
        }),
    }
}

/// Why a commit does not verify, on one line: the first manifest finding, or the error and
/// its causes.
fn first_reason(e: &VerifyError) -> String {
    match e {
        VerifyError::Findings(findings) if !findings.is_empty() => {
            let more = findings.len() - 1;
            let first = findings[0].to_string();
            if more > 0 {
                format!("{first} (and {more} more)")
            } else {
                first
            }
        }
        _ => one_line(e),
    }
}

fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    crate::error_chain::one_line(e).replace('\n', " ")
}

fn short(id: &str) -> &str {
    &id[..id.len().min(10)]
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn report(audit: &Audit, args: &AuditArgs, printer: Printer) -> Result<(), CliError> {
    let findings = audit.findings().count();
    printer.json(&json!({"commits": audit.rows, "summary": summary(audit, args)}));
    if !printer.json {
        printer.result(table(audit).trim_end());
        printer.note(format!(
            "audited {} commit(s) that changed the inputs; {} finding(s); each judged as of its committer time",
            audit.rows.len(),
            findings
        ));
    }
    if findings == 0 {
        return Ok(());
    }
    Err(CliError {
        class: Class::Check,
        error: Message(format!(
            "{findings} finding(s) in {} audited commit(s)",
            audit.rows.len()
        ))
        .into(),
        hint: None,
    })
}

/// The `--json` summary: counts by kind of finding.
fn summary(audit: &Audit, args: &AuditArgs) -> serde_json::Value {
    let count = |kind: &str| {
        audit
            .findings()
            .filter(|(_, f)| {
                serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(|k| k == kind))
                    .unwrap_or(false)
            })
            .count()
    };
    let findings = audit.findings().count();
    json!({
        "ok": findings == 0,
        "commits": audit.rows.len(),
        "valid": audit.rows.iter().filter(|r| r.valid).count(),
        "findings": findings,
        "unlocked_changes": count("unlocked-change"),
        "generation_regressions": count("generation-regression"),
        "unknown_signers": count("unknown-signer"),
        "promotions": audit.rows.iter().filter(|r| r.promoted_from.is_some()).count(),
        "promotions_unverified": count("promotion-unverified"),
        "not_promoted": count("not-promoted"),
        "require_promotion_from": args.require_promotion_from,
        "since": args.since,
        "all_parents": args.all,
        "judged_at": "committer-time",
    })
}

/// The table for people: a line per commit, its image changes and findings below it.
fn table(audit: &Audit) -> String {
    let mut out =
        String::from("COMMIT      DATE              GEN  VALID  SIGNERS             SUMMARY\n");
    for row in &audit.rows {
        let date = row.date.get(..16).unwrap_or(&row.date).replace('T', " ");
        let generation = row.generation.map_or("-".to_owned(), |g| g.to_string());
        let signers = if row.signers.is_empty() {
            "-".to_owned()
        } else {
            row.signers.join(",")
        };
        out.push_str(&format!(
            "{:<10}  {date:<16}  {generation:>3}  {:<5}  {signers:<18}  {}\n",
            short(&row.commit),
            if row.valid { "yes" } else { "NO" },
            row.summary
        ));
        if let Some(p) = &row.promoted_from {
            let env = |e: &Option<String>| e.clone().unwrap_or_else(|| "(no environment)".into());
            let source = p.source_commit.as_deref().map_or_else(
                || "source not verified".to_owned(),
                |c| format!("source verified at {}", short(c)),
            );
            out.push_str(&format!(
                "    < promoted: {} generation {} -> {} generation {} ({source})\n",
                env(&p.from_environment),
                p.from_generation,
                env(&p.to_environment),
                p.to_generation
            ));
        }
        for change in &row.changes {
            out.push_str(&change_line(change));
        }
        for finding in &row.findings {
            out.push_str(&format!("    ! {finding}\n"));
        }
    }
    out
}

fn change_line(change: &ImageChange) -> String {
    match change {
        ImageChange::Added { reference, digest } => {
            format!("    + {reference} @{}\n", short_digest(digest))
        }
        ImageChange::Removed { reference, digest } => {
            format!("    - {reference} @{}\n", short_digest(digest))
        }
        ImageChange::DigestChanged {
            reference,
            old,
            new,
        } => format!(
            "    ~ {reference} @{} -> @{}\n",
            short_digest(old),
            short_digest(new)
        ),
        ImageChange::Mirrored { reference, mirrors } => {
            format!("    > {reference} copied to {}\n", mirrors.join(", "))
        }
    }
}
