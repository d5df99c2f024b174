//! STUB
use std::time::Duration;
pub const DEFAULT_REQUEST_PATH: &str = "/reverse_connections/request";
pub const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelIdentity { pub node_id: String, pub cluster_id: String, pub tenant_id: String }
pub struct HandshakeRequest<'a> { pub host: &'a str, pub path: &'a str, pub identity: &'a TunnelIdentity, pub upstream_cluster: &'a str, pub extra_headers: &'a [(String, String)] }
impl HandshakeRequest<'_> { pub fn encode(&self) -> Vec<u8> { Vec::new() } }
#[derive(Debug)]
pub struct HandshakeResponse { pub status: u16, pub retry_after: Option<Duration>, pub body: String }
#[derive(Debug, thiserror::Error)]
#[error("bad handshake response")]
pub struct HandshakeError;
pub fn parse_response(_buf: &[u8]) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> { Err(HandshakeError) }
#[derive(Debug)]
pub struct AcceptedHandshake { pub identity: TunnelIdentity, pub upstream_cluster: Option<String>, pub headers: Vec<(String, Vec<u8>)> }
#[derive(Debug)]
pub struct Rejection { pub status: u16, pub reason: String }
pub fn parse_request(_buf: &[u8], _expected_path: &str) -> Result<Option<(AcceptedHandshake, usize)>, Rejection> { Err(Rejection{status: 400, reason: String::new()}) }
pub fn encode_response(_status: u16, _body: &str, _retry_after: Option<u64>) -> Vec<u8> { Vec::new() }
