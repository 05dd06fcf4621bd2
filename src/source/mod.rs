//! Reading and writing the manifests directory: the work tree ([`fs`]) and Git ([`git`])
//! (edge). Which files are inputs, and the limits, are the core's
//! [`lockstep_core::files`], re-exported here: both sources return the same [`SourceFiles`].

pub mod fs;
pub mod git;
pub mod promotion;

pub use fs::SourceError;
pub use lockstep_core::files::*;
