//! The work tree (stub).
