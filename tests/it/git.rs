//! git integration tests (stub).
