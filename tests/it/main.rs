//! lockstep's integration tests: one binary, real registry, real ssh-keygen, real Git.

mod attacks;
mod audit;
mod cli;
mod deploy;
mod durations;
mod fuzz;
mod generations;
mod git;
mod git_http_server;
mod git_https;
mod harness;
mod holds;
mod hydrate;
mod images;
/// The fuzzing invariants and fixed inputs, shared with the cargo-fuzz targets.
#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod invariants;
mod k8s_reader;
mod layers;
mod manifest;
mod mirror;
mod one_reading;
mod promote;
mod provenance;
mod readme;
mod real_world;
mod reconcile;
mod referrers;
mod resolve;
mod signing;
mod snapshots;
mod ssh;
mod tamper;
