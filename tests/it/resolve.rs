//! resolve integration tests (stub).
