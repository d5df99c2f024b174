//! STUB (replaced by the protocol branch).
pub mod handshake;
pub mod rping;
pub use handshake::*;
pub use rping::*;
