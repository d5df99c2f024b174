//! The built-in stages. Each is one concept; [`super::Pipeline::for_role`] lists them.

mod access_log;
mod counting;
mod proxy_headers;
mod route_headers;
mod tenant;

pub(super) use access_log::AccessLog;
pub(super) use counting::Counting;
pub(super) use proxy_headers::ProxyHeaders;
pub(super) use route_headers::RouteHeaders;
pub use route_headers::RouteRewrites;
pub(super) use tenant::Tenant;
