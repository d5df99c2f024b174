//! HTTP plumbing shared by both roles.

pub mod host_id;
