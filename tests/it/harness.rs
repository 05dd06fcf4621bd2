//! harness integration tests (stub).
