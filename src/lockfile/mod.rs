//! The lockfile (stub).
