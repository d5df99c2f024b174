//! HTTP plumbing shared by both roles.
