//! Git through gix (stub).
