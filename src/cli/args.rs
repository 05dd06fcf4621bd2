//! Command-line arguments (clap). Parsing only: turning them into settings, and checking
//! what clap cannot, happens in the commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use super::duration;

/// lockstep: make a Git commit alone determine what runs in the cluster.
///
/// Exit codes: 0 ok, 1 a check failed, 2 usage or environment error.
#[derive(Debug, Parser)]
#[command(name = "lockstep", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print less: only errors and the result.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve every image tag to its digest, pin the manifests, write and sign lockstep.lock.
    Lock(LockArgs),
    /// Lock TO_DIR at exactly the digests FROM_DIR's verified lockfile pins (no tag resolved
    /// again), recording the source lockfile in the signed lockfile (staging → production).
    Promote(PromoteArgs),
    /// Check a directory (or a Git revision of it) against its signed lockfile, offline.
    Verify(VerifyArgs),
    /// Print the verified, pinned manifests of a directory or revision as one YAML stream.
    Render(RenderArgs),
    /// Confirm that every digest the lockfile pins still exists (by digest) in its registry and
    /// in every mirror the lockfile records: exit 1 listing the missing ones.
    Check(CheckArgs),
    /// Walk the Git history and verify every commit that changed the manifests: who signed,
    /// which images changed, and unlocked changes, generation regressions, unknown signers.
    Audit(crate::cli::commands::audit::AuditArgs),
    /// Copy every pinned image (all platforms) to another registry and record the mirror in a
    /// new signed generation, so the commit stays deployable if the source loses images.
    Mirror(MirrorArgs),
    /// Add a signature to the existing lockfile without changing it (a second approver).
    Sign(SignArgs),
    /// Re-sign the lockfile as a new generation with a new expiry; digests unchanged, offline.
    Refresh(RefreshArgs),
    /// Show what lockstep sees for one image: its digest, platforms and cosign signatures,
    /// judged by a directory's provenance rule (--dir) or given keys (--cosign-key).
    Inspect(crate::cli::commands::inspect::InspectArgs),
    /// Make an OpenSSH ed25519 signing key and print the allowed_signers line that trusts it.
    Keygen(KeygenArgs),
    /// Run the in-cluster reconciler: apply the verified commits that LockstepSyncs follow.
    Controller(ControllerArgs),
    /// Wait until a LockstepSync has applied a commit and it is healthy (for CI): exit 0 when
    /// it is, 1 when it was refused, is unhealthy or the timeout passed, 2 on usage errors.
    Wait(WaitArgs),
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The manifests directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Write nothing; exit 1 if the lockfile is missing or stale (for CI).
    #[arg(long)]
    pub check: bool,
    /// Commit the pinned manifests, lockfile and signatures on the current branch.
    #[arg(long)]
    pub commit: bool,
    /// The commit message (with --commit).
    #[arg(long, requires = "commit")]
    pub message: Option<String>,
    /// Record an expiry this long after creation (e.g. 30d, 12h, 2w; a plain number is
    /// seconds) in a new lockfile; verify refuses it afterwards. An up-to-date lockfile keeps
    /// its expiry: see refresh.
    #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
    pub expires_in: Option<Duration>,
    /// Record the environment the lockfile is for (signed; verify --environment must match).
    /// The lockfile being continued must be for it too.
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Ignore the lockfile on disk and start again at generation 1 (when it is not signed
    /// by a key you trust, or is for another environment). Reconcilers refuse the new
    /// history as a rollback until its generation exceeds the one they applied.
    #[arg(long, conflicts_with = "check")]
    pub new_history: bool,
    /// Refuse objects of kinds lockstep has no image paths for that hold `image` fields
    /// (without it they are locked with a warning, their images unpinned): declare them in
    /// lockstep.toml.
    #[arg(long)]
    pub strict: bool,
    /// Hold an image at a digest: every use of REF (`name:tag`, as in the manifests) is
    /// pinned to DIGEST, and later locks keep it there whatever the tag says, until
    /// --release. The way to roll an image back. Repeatable.
    #[arg(long, value_name = "REF@DIGEST")]
    pub hold: Vec<String>,
    /// Let a held image follow its tag again (from this lock on). Repeatable.
    #[arg(long, value_name = "REF")]
    pub release: Vec<String>,
    /// Also write the locked digests into the sources of the render steps: each kustomize
    /// `images:` entry with a `newTag` gets `digest:` (Helm values are left, and named).
    /// With --check: exit 1 while a source is not pinned. With --commit: the sources are
    /// committed too.
    #[arg(long)]
    pub pin_sources: bool,
    #[command(flatten)]
    pub tools: ToolArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The renderers `[[render]]` steps run (found on PATH when not given).
#[derive(Debug, Args)]
pub struct ToolArgs {
    /// The kustomize binary for `kustomize` render steps (default: `kustomize` on PATH).
    #[arg(long, value_name = "PATH", env = "LOCKSTEP_KUSTOMIZE")]
    pub kustomize: Option<PathBuf>,
    /// The helm binary for `helm` render steps (default: `helm` on PATH).
    #[arg(long, value_name = "PATH", env = "LOCKSTEP_HELM")]
    pub helm: Option<PathBuf>,
}

impl ToolArgs {
    pub fn tools(&self) -> crate::hydrate::Tools {
        crate::hydrate::Tools {
            kustomize: self.kustomize.clone(),
            helm: self.helm.clone(),
        }
    }
}

/// Whom to believe about the lockfile already on disk, besides the signing key itself.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Trusted signers, in Git's allowed_signers format (as verify --allowed-signers): a
    /// lockfile on disk signed by one of them may be continued from or co-signed. Without
    /// it, only a lockfile signed by this command's own key is.
    #[arg(
        long = "trust",
        visible_alias = "allowed-signers",
        env = "LOCKSTEP_ALLOWED_SIGNERS",
        value_name = "FILE"
    )]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The manifests directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Commit the files this writes (signature, and a new lockfile) on the current branch.
    #[arg(long)]
    pub commit: bool,
    /// The commit message (with --commit).
    #[arg(long, requires = "commit")]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub sign: SignArgs,
    /// The new expiry, this long from now (e.g. 30d, 12h, 2w; a plain number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = duration::positive)]
    pub expires_in: Duration,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    #[command(flatten)]
    pub sign: SignArgs,
    /// Where to copy: REGISTRY[/PATH]; each image goes to REGISTRY/PATH/<its repository>.
    #[arg(long, value_name = "REGISTRY[/PATH]")]
    pub to: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// OpenSSH ed25519 private key file to sign with.
    #[arg(long, env = "LOCKSTEP_SIGNING_KEY_FILE", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Name of the signature file, lockstep.lock.<SIGNER>.sig [default: from the key comment].
    #[arg(long, value_name = "NAME")]
    pub signer: Option<String>,
    /// SSH-sign the commits --commit writes with this OpenSSH ed25519 key (a bot's Git
    /// signing key, say) instead of the lockfile's key; same passphrase variable.
    #[arg(long, value_name = "FILE")]
    pub commit_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The source directory (staging): its lockfile must verify; its digests are taken.
    pub from: PathBuf,
    /// Trusted signers of the source lockfile, in Git's allowed_signers format.
    #[arg(long, value_name = "FILE")]
    pub from_allowed_signers: PathBuf,
    /// How many distinct trusted principals must have signed the source lockfile.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub from_threshold: usize,
    /// Require the source lockfile to be for this environment.
    #[arg(long, value_name = "NAME")]
    pub from_environment: Option<String>,
    /// Promote the source as it is at this Git revision (read from the object database).
    #[arg(long, value_name = "REV")]
    pub from_rev: Option<String>,
    /// Resolve from the registry the images the source does not pin (named in a warning)
    /// instead of refusing.
    #[arg(long)]
    pub resolve_missing: bool,
    /// Refuse unless the source lockfile is the one this LockstepSync ([NAMESPACE/]NAME, in
    /// the source environment's cluster) has applied, and its objects are healthy.
    #[arg(long, value_name = "[NAMESPACE/]NAME")]
    pub require_applied: Option<String>,
    /// With --require-applied: and has been applied and healthy for at least this long
    /// (e.g. 30m, 2h; a plain number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, requires = "require_applied")]
    pub soak: Option<Duration>,
    /// The source cluster's kubeconfig for --require-applied [default: $KUBECONFIG,
    /// ~/.kube/config, or the in-cluster service account].
    #[arg(long, value_name = "FILE", requires = "require_applied")]
    pub kubeconfig: Option<PathBuf>,
    /// The target directory (production) and how to lock it, as for `lock`.
    #[command(flatten)]
    pub to: LockArgs,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// How many registry requests run at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub concurrency: usize,
    /// Allow plain HTTP to this registry (HOST[:PORT]); repeatable. Loopback registries
    /// fall back to HTTP on their own, as with Docker.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates (PEM) to trust for registries, besides the system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Per-request timeout (a plain number is seconds; or 90s, 2m); at least a second is
    /// waited.
    #[arg(long, default_value = "30", value_name = "DURATION", value_parser = duration::parse)]
    pub timeout: Duration,
}

/// Whom to trust and what to require of each lockfile: the same options for verify, render
/// and audit.
#[derive(Debug, Args)]
pub struct SignersArgs {
    /// Trusted signers, in Git's allowed_signers format. Never taken from the repository
    /// being verified unless you point here.
    #[arg(long, env = "LOCKSTEP_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: PathBuf,
    /// How many distinct trusted principals must have signed (each lockfile, in an audit).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threshold: usize,
    /// Require the lockfile to be for this environment (lock --environment). Without it a
    /// lockfile for any environment passes, and its environment is printed.
    #[arg(long, value_name = "NAME")]
    pub environment: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The manifests directory (inside a Git work tree when --rev is given).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Verify this Git revision's tree (read from the object database, no checkout).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    #[command(flatten)]
    pub signers: SignersArgs,
    /// Refuse objects of kinds lockstep has no image paths for that hold `image` fields
    /// (without it they pass with a warning): declare them in lockstep.toml.
    #[arg(long)]
    pub strict: bool,
    /// Judge key validity windows and the lockfile's expiry as of this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Require the lockfile to record a promotion (`lockstep promote`) from a lockfile of
    /// this environment, and that source lockfile to be in the Git history (the recorded
    /// commit, or one reachable from the verified one) with exactly the recorded bytes,
    /// verified for ENV as of the promotion.
    #[arg(long, value_name = "ENV")]
    pub promoted_from: Option<String>,
    /// Who may sign the promotion's source lockfile (allowed_signers format); without it,
    /// --allowed-signers.
    #[arg(long, value_name = "FILE", requires = "promoted_from")]
    pub from_allowed_signers: Option<PathBuf>,
    /// How many distinct principals must have signed the promotion's source lockfile.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        requires = "promoted_from"
    )]
    pub from_threshold: usize,
    /// The verifier's own provenance requirement: every image (or those --cosign-images
    /// matches) must record a cosign signature that verifies under one of these public keys
    /// (PEM), whatever the directory's lockstep.toml says. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub cosign_key: Vec<PathBuf>,
    /// The verifier's own certificate requirement: signatures made with a certificate
    /// chaining to this root (PEM; repeatable), for --cosign-identity from --cosign-issuer.
    #[arg(long, value_name = "FILE")]
    pub cosign_root: Vec<PathBuf>,
    /// With --cosign-root: the SAN email or URI the signing certificate must name.
    #[arg(long, value_name = "IDENTITY")]
    pub cosign_identity: Option<String>,
    /// With --cosign-root: the OIDC issuer the signing certificate must carry.
    #[arg(long, value_name = "URL")]
    pub cosign_issuer: Option<String>,
    /// With --cosign-key or --cosign-root: the images it applies to (`registry/repository`
    /// patterns, `*` within a component, `**` across); default every image. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub cosign_images: Vec<String>,
    /// With --cosign-key or --cosign-root: each such image must also record an attestation
    /// of this in-toto predicate type (e.g. https://slsa.dev/provenance/v1) signed by that
    /// key or certificate identity. Repeatable.
    #[arg(long, value_name = "TYPE")]
    pub cosign_attestation: Vec<String>,
    /// Also re-run every render step from the inputs read (work tree or --rev) and require
    /// its output, pinned to the lockfile's digests, to be byte for byte the signed file.
    /// Needs the renderers; without it verify runs no tool.
    #[arg(long)]
    pub rerender: bool,
    #[command(flatten)]
    pub tools: ToolArgs,
    /// How --rerender reaches the registries of charts pinned there (by digest).
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Point every image at its copy in this mirror (REGISTRY[/PATH], as given to `lockstep
    /// mirror --to`), same digest; refused unless the signed lockfile records it for every image.
    #[arg(long, value_name = "REGISTRY[/PATH]")]
    pub from_mirror: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The manifests directory (inside a Git work tree when --rev is given).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Check this Git revision's lockfile (read from the object database, no checkout).
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the private key; the public key goes to FILE.pub.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// The key comment, also the default signer name.
    #[arg(long, short = 'C', default_value = "lockstep")]
    pub comment: String,
    /// The principal for the printed allowed_signers line [default: the comment].
    #[arg(long, value_name = "NAME")]
    pub principal: Option<String>,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Watch the LockstepSyncs of this namespace only [default: all namespaces].
    #[arg(long, env = "LOCKSTEP_NAMESPACE", value_name = "NAME")]
    pub namespace: Option<String>,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "LOCKSTEP_METRICS_ADDRESS",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR:PORT"
    )]
    pub metrics_address: SocketAddr,
    /// Receive Git push webhooks here (POST /hook/github, /hook/gitlab, /hook/generic):
    /// a valid push asks for a pass now of the syncs following that repository and ref.
    /// Needs --webhook-secret. [default: no receiver]
    #[arg(
        long,
        env = "LOCKSTEP_WEBHOOK_ADDRESS",
        value_name = "ADDR:PORT",
        requires = "webhook_secret"
    )]
    pub webhook_address: Option<SocketAddr>,
    /// The Secret holding the webhook secret (GitHub's and the generic format's HMAC key,
    /// GitLab's token), in --webhook-secret-namespace.
    #[arg(long, env = "LOCKSTEP_WEBHOOK_SECRET", value_name = "NAME")]
    pub webhook_secret: Option<String>,
    /// The key of --webhook-secret holding the secret.
    #[arg(long, default_value = "token", value_name = "KEY")]
    pub webhook_secret_key: String,
    /// The namespace of --webhook-secret [default: --lease-namespace, else --namespace, else
    /// the kubeconfig's].
    #[arg(long, value_name = "NAME")]
    pub webhook_secret_namespace: Option<String>,
    /// Where fetched repositories are cached (bare Git repositories, one per sync and URL).
    #[arg(
        long,
        env = "LOCKSTEP_CACHE_DIR",
        default_value = "/tmp/lockstep-cache",
        value_name = "DIR"
    )]
    pub cache_dir: PathBuf,
    /// A kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the in-cluster service
    /// account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This replica's name in Events [default: the host name].
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub instance: Option<String>,
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Reconcile only while holding a coordination.k8s.io Lease, so that replicas never
    /// apply at the same time.
    #[arg(long, env = "LOCKSTEP_LEADER_ELECTION")]
    pub leader_election: bool,
    /// The Lease's name (with --leader-election).
    #[arg(long, default_value = "lockstep-controller", value_name = "NAME")]
    pub lease_name: String,
    /// The Lease's namespace [default: --namespace, $POD_NAMESPACE, or the kubeconfig's].
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAME")]
    pub lease_namespace: Option<String>,
    /// How long the Lease stays valid without renewal (e.g. 15s, 1m; a plain number is
    /// seconds; at least 1s); the holder renews every fifth of it.
    #[arg(
        long,
        default_value = "15s",
        value_name = "DURATION",
        value_parser = duration::at_least_a_second
    )]
    pub lease_duration: Duration,
    /// How `checkImages` reaches registries.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The LockstepSync's name.
    pub name: String,
    /// The commit to wait for: its full id or a prefix of at least 7 hex digits.
    #[arg(long, value_name = "COMMIT")]
    pub rev: String,
    /// The LockstepSync's namespace [default: the kubeconfig's namespace].
    #[arg(long, short = 'n', value_name = "NAME")]
    pub namespace: Option<String>,
    /// Give up after this long (e.g. 90s, 5m, 1h; a plain number is seconds).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = duration::parse)]
    pub timeout: Duration,
    /// A kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the in-cluster service
    /// account].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// How the controller writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
