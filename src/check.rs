//! The shared verdict (stub).
