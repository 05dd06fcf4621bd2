//! Finding image references in manifests and pinning them in place.

pub mod config;
pub mod rewrite;
pub mod scan;
