//! STUB (replaced by the config branch).
#[derive(Debug, Clone)]
pub struct HostIdFormat;
pub fn first_host_id(
    _formats: &[HostIdFormat],
    headers: &http::HeaderMap,
    _remote: Option<std::net::SocketAddr>,
) -> Option<String> {
    headers
        .get("x-node-id")
        .or_else(|| headers.get("x-cluster-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
pub fn expected_headers(_formats: &[HostIdFormat]) -> Vec<String> {
    vec!["x-node-id".into(), "x-cluster-id".into()]
}
