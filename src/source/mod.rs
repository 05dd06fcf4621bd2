//! Reading and writing the manifests directory: work tree and Git (edge).

pub mod fs;
pub mod git;
