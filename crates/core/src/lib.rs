//! lockstep's pure core: everything that decides, nothing that asks. No network, Git,
//! Kubernetes client or async runtime is in this crate's dependency tree (the build says
//! so: see `Cargo.toml`); the `lockstep` crate holds the edges and the CLI and gives this
//! crate bytes, registry answers and the time as values.
//!
//! - [`model`]: digests, image references, image uses, object names.
//! - [`files`]: which files of a directory are inputs, and the limits on them.
//! - [`manifest`]: the one reading of a manifest (`yaml`, Kubernetes' semantics or a
//!   refusal), the images on the decoded objects (`scan`), pinning image scalars in place
//!   (`rewrite`), and `lockstep.toml` (`config`).
//! - [`lockfile`]: the lockfile, its deterministic bytes and the manifests binding.
//! - [`signing`]: SSHSIG signing and verification, allowed signers, keys.
//! - [`registry`]: what a registry answers and how asking fails (the edge's vocabulary).
//! - [`check`]: the verdict of manifests against a lockfile.
//! - [`verify`]: signatures, then binding, then the one reading: a `VerifiedDir`.
//! - [`lock`]: the next lockfile from the scan and the registry's answers.
//! - [`mirror`], [`exists`], [`audit`]: planning a mirror, judging a registry check,
//!   comparing the commits of a history.
//! - [`plan`]: what to apply, built only from a `VerifiedDir`.
//! - [`error_chain`]: an error and its causes, rendered once for everyone.

pub mod audit;
pub mod check;
pub mod error_chain;
pub mod exists;
pub mod files;
pub mod lock;
pub mod lockfile;
pub mod manifest;
pub mod mirror;
pub mod model;
pub mod plan;
pub mod promotion;
pub mod provenance;
pub mod prune;
pub mod registry;
pub mod render;
pub mod signing;
pub mod verify;
