//! rtun: a reverse-tunnel proxy on thread-per-core io_uring shards.
//!
//! An **initiator** dials out to a **responder** and keeps tunnels open; the responder's clients
//! reach the initiator's local services through h2 streams on those tunnels.
//! `docs/ARCHITECTURE.md` is the map of this crate: the roles, the life of a request and of a
//! tunnel, the pipeline phases and which module owns each, the shard model, and the limits.

pub mod abort_on_panic;
pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
#[cfg(test)]
pub mod harness;
pub mod http;
pub mod initiator;
pub mod malloc_cache;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod protocol;
pub mod responder;
pub mod service;
pub mod shard;
pub mod tls;
pub mod tunnel;
