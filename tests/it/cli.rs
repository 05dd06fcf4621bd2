//! cli integration tests (stub).
