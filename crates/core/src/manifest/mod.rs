//! Reading manifests once, the way Kubernetes does, and pinning their images in place (pure:
//! bytes in, bytes out). `yaml` reads a file into decoded documents (or refuses what readers
//! could see differently), `config` reads `lockstep.toml` (image paths of custom resources),
//! `scan` walks the decoded objects for every image with its exact byte span, `rewrite`
//! splices pinned references into those spans and nowhere else.

pub mod config;
pub mod pin_sources;
pub mod rewrite;
pub mod scan;
pub mod yaml;

pub use config::{CONFIG_FILE, ConfigError, ScanConfig};
pub use rewrite::{Edit, RewriteError, pin_uses, rewrite};
pub use scan::{DecodedObject, FileScan, Notice, NoticeReason, ScanError, scan_file};
