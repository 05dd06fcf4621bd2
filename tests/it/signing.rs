//! signing integration tests (stub).
