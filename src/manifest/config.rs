//! `lockstep.toml`: extra image paths for custom resources (stub).
