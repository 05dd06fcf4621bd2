//! The only file that imports oci_client (stub).
