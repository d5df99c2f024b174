//! The built-in stages. Each is one concept; [`super::Pipeline::for_role`] lists them.

mod counting;
mod proxy_headers;
mod tenant;

pub(super) use counting::Counting;
pub(super) use proxy_headers::ProxyHeaders;
pub(super) use tenant::Tenant;
