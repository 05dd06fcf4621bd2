//! Finding image references in manifests and pinning them in place (pure: bytes in, bytes
//! out). `config` reads `lockstep.toml` (image paths of custom resources), `scan` finds
//! every image scalar with its exact byte span, `rewrite` splices pinned references into
//! those spans and nowhere else.

pub mod config;
pub mod rewrite;
pub mod scan;

pub use config::{CONFIG_FILE, ConfigError, ScanConfig};
pub use rewrite::{Edit, RewriteError, pin_uses, rewrite};
pub use scan::{FileScan, Notice, NoticeReason, ScanError, scan_file};
