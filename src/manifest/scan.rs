//! bytes -> image uses (stub).
