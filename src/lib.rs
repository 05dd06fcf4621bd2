//! lockstep makes a Git commit alone determine what runs in a Kubernetes cluster.
//!
//! Data flow (each stage a module; the pure core in the middle, I/O at the edges):
//! - **lock**: `source::fs` reads the manifests → `manifest::scan` finds every image →
//!   `resolve` asks the registry for each distinct tag's digest → `manifest::rewrite` pins
//!   the image scalars → `lockfile` records digests and the manifests binding →
//!   `signing` signs the exact lockfile bytes → `source` writes (and with `--commit`, `git`
//!   commits) the result.
//! - **verify**: `source` reads the bytes (work tree or a Git revision) → `signing::verify`
//!   checks the signatures against trusted keys *before* the lockfile is parsed →
//!   `lockfile` parses → `manifest::scan` → `check` gives the verdict. No network.
//! - **mirror**: copy every pinned digest to a second registry (`resolve::oci`) and record
//!   it in a new signed generation, so a commit stays deployable if the source loses images.
//! - **render**: verify, then print the verified, pinned manifests as one YAML stream.
//! - **reconcile** (in the cluster): `source::git` fetches the commit a `LockstepSync` follows
//!   → the same verification, with trust from the cluster, never from the repository →
//!   `cluster::plan` (only from a verified directory) → `cluster::apply` (server-side apply,
//!   prune) → `cluster::health` → the resource's status.

pub mod cli;
pub mod cluster;
pub mod resolve;
pub mod source;

// The pure core, under the names the edges and the tests use.
pub use lockstep_core::{
    audit, check, exists, files, lock, lockfile, manifest, mirror, model, registry, signing, verify,
};
