//! One module per command; each takes validated settings and a printer.

pub mod audit;
pub mod check;
pub mod controller;
pub mod inspect;
pub mod keygen;
pub mod lock;
pub mod mirror;
mod pin_sources;
pub mod promote;
pub mod provenance;
mod publish;
pub mod sign;
pub mod verify;
pub mod wait;
