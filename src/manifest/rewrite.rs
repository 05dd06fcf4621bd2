//! (bytes, replacements) -> bytes, touching only image scalars (stub).
