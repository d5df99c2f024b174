//! HTTP plumbing shared by both roles.
pub mod host_id;
pub mod body;
pub mod io;
pub mod proxy_headers;
pub mod route;
pub mod rt;
pub mod keepalive;
pub mod local_reply;
