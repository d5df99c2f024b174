//! rtun: a reverse-tunnel proxy on thread-per-core io_uring shards.
//!
//! See `DESIGN.md` (shared) for the roles: an **initiator** dials out to a **responder** and keeps
//! tunnels open; the responder's clients reach the initiator's local services through h2 streams
//! on those tunnels.

pub mod admin;
pub mod app;
pub mod config;
pub mod demo;
pub mod http;
pub mod initiator;
pub mod net;
pub mod protocol;
pub mod responder;
pub mod service;
pub mod shard;
pub mod stats;
pub mod tls;
