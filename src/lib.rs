//! lockstep makes a Git commit alone determine what runs in a Kubernetes cluster.
//!
//! Two crates. **`lockstep-core`** (`crates/core`, re-exported here under the same module
//! names) is the pure core: it decides and never asks — no network, Git, Kubernetes or async
//! runtime in its dependency tree (`tests/it/layers.rs` checks it). **This crate** holds the
//! edges that ask — [`resolve`] (registries), [`source`] (work tree and Git), [`cluster`]
//! (the reconciler) — and the CLI ([`cli`]), where each command's pipeline is one file of
//! `cli/commands/`.
//!
//! Data flow (pure stages in the core, I/O only at the edges):
//! - **lock** (`cli/commands/lock.rs`): `source::fs` reads the files → `verify::scan_dir`
//!   reads every manifest once (`manifest::yaml`) and finds every image (`manifest::scan`) →
//!   `resolve` asks the registry for each distinct tag's digest → `lock::pin_files`
//!   (`manifest::rewrite` pins the image scalars) → `lock::next_lockfile` (digests and the
//!   manifests binding) → `signing` signs the exact lockfile bytes → `source::fs` writes
//!   (and with `--commit`, `source::git` commits).
//! - **verify / render / audit** (`cli/commands/{verify,audit}.rs`): `source` reads the bytes
//!   (work tree or a Git revision) → `verify::verify_dir`: signatures against trusted keys,
//!   then the lockfile, then the binding (hashes only), and only then the one reading of
//!   the manifests and `check`'s verdict. No network. `render` prints exactly the verified
//!   objects; `audit` compares the commits of a history (`audit`).
//! - **check / mirror** (`cli/commands/{check,mirror}.rs`): `exists` and `mirror` plan which
//!   digests to ask about or copy; `resolve` asks; the verdict is pure again.
//! - **reconcile** (`cli/commands/controller.rs` → `cluster::reconcile`, one pass read
//!   top-down in `cluster/reconcile/pass.rs`): the spec and its Secrets → `source::git`
//!   fetches the commit a `LockstepSync` follows (`source/git/fetch.rs`) → the same
//!   `verify_dir`, with trust from the cluster, never from the repository → the gate
//!   (rollback rule, images still in their registries) → `plan` (only from a `VerifiedDir`)
//!   → `cluster::apply` (server-side apply, prune) → `cluster::health` → the resource's
//!   status (`cluster/reconcile/status.rs`).

pub mod cli;
pub mod cluster;
pub mod hydrate;
pub mod resolve;
pub mod source;

// The pure core, under the names the edges and the tests use.
pub use lockstep_core::{
    audit, check, error_chain, exists, files, lock, lockfile, manifest, mirror, model, promotion,
    provenance, registry, render, signing, verify,
};
