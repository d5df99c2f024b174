//! HTTP plumbing shared by both roles: body bridging between h1 and h2, the host_id formatter,
//! request targets (`Host` rules, path normalization), route matching, proxy headers, local
//! replies, the copy of a request head for a second attempt (`replay`), and hyper's runtime
//! hooks on a shard; `h1` is the HTTP/1.1 client of the initiator's local hop.

pub mod body;
pub mod h1;
pub mod host_id;
pub mod io;
pub mod local_reply;
pub mod path;
pub mod proxy_headers;
pub mod replay;
pub mod route;
pub mod rt;
pub mod target;
