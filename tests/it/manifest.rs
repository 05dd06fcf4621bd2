//! manifest integration tests (stub).
