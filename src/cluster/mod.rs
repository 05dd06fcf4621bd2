//! The in-cluster reconciler: a [`crd::LockstepSync`] names a Git repository, a ref and whom
//! to trust; each pass fetches the commit, verifies it with the same code as `lockstep
//! verify`, holds it to what was applied before ([`rollback`], pure), plans ([`plan`],
//! pure), applies and prunes ([`apply`], the only writer to the cluster), judges health
//! ([`health`], pure) and reports in the resource's status ([`reconcile`]).

pub mod apply;
pub mod crd;
pub mod health;
pub mod kube_error;
pub mod lease;
mod live;
pub mod metrics;
mod prune;
pub mod reconcile;
pub mod rollback;
pub mod wait;
pub mod webhook;

pub use lockstep_core::plan;
