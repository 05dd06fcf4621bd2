//! Resolving tags to digests against registries (edge).

pub mod oci;
