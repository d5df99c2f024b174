//! Wire protocol: the handshake codec, the id rule, and the RPING echo.
//!
//! Pure and synchronous: functions over byte slices that the async read loops of the initiator
//! and the responder call on whatever they have buffered. Nothing here does I/O.

pub mod handshake;
pub mod ids;
pub mod rping;

pub use handshake::{
    encode_accept, encode_response, parse_request, parse_response, AcceptedHandshake,
    HandshakeError, HandshakeForm, HandshakeRequest, HandshakeResponse, Rejection, TunnelIdentity,
    CLUSTER_ID_HEADER, DEFAULT_REQUEST_PATH, INITIATION_TIME_HEADER, MAX_HANDSHAKE_BYTES,
    MAX_HEADERS, MAX_RETRY_AFTER, NODE_ID_HEADER, TENANT_ID_HEADER, UPGRADE_PROTOCOL,
    UPSTREAM_CLUSTER_HEADER,
};
pub use ids::{validate_id, IdError, MAX_ID_LEN};
pub use rping::{RpingFilter, RpingStep, RPING};
