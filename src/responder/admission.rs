//! Admission: the stages a parsed handshake passes before its tunnel is accepted.
//!
//! The acceptor reads and parses the handshake (the codec in `protocol` rejects what is
//! malformed), then asks [`Admission`] whether this identity may open a tunnel over this
//! connection. Each [`AdmissionStage`] sees the handshake and the connection's facts and
//! returns accept or a typed [`Rejection`]; the first rejection wins. Authentication (401) and
//! authorization (403) are stages here; placement (per-node and total caps) follows in the
//! acceptor because it reserves a slot.

use std::net::SocketAddr;

use crate::config::TunnelListenerConfig;
use crate::protocol::{AcceptedHandshake, Rejection};
use crate::shard::shutdown::ShutdownSignal;

/// What is known about the connection a handshake arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionFacts {
    /// The initiator's address as seen by the tunnel listener.
    pub peer: SocketAddr,
}

/// One check on a handshake.
pub trait AdmissionStage {
    fn admit(
        &self,
        handshake: &AcceptedHandshake,
        connection: &ConnectionFacts,
    ) -> Result<(), Rejection>;
}

/// The tunnel listener's admission stages, in order.
pub struct Admission {
    stages: Vec<Box<dyn AdmissionStage>>,
}

impl Admission {
    pub fn new(stages: Vec<Box<dyn AdmissionStage>>) -> Self {
        Self { stages }
    }

    /// The stages a tunnel listener runs: the one list to extend with a new check.
    pub fn for_listener(_cfg: &TunnelListenerConfig, shutdown: &ShutdownSignal) -> Self {
        Self::new(vec![Box::new(NotDraining(shutdown.clone()))])
    }

    /// Runs every stage; the first rejection wins.
    pub fn admit(
        &self,
        handshake: &AcceptedHandshake,
        connection: &ConnectionFacts,
    ) -> Result<(), Rejection> {
        self.stages
            .iter()
            .try_for_each(|stage| stage.admit(handshake, connection))
    }
}

/// A responder that is shutting down takes no new tunnels (503).
struct NotDraining(ShutdownSignal);

impl AdmissionStage for NotDraining {
    fn admit(&self, _: &AcceptedHandshake, _: &ConnectionFacts) -> Result<(), Rejection> {
        match self.0.is_triggered() {
            true => Err(Rejection::ShuttingDown),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TunnelIdentity;
    use crate::shard::shutdown::Shutdown;

    fn handshake(node: &str) -> AcceptedHandshake {
        AcceptedHandshake {
            identity: TunnelIdentity {
                node_id: node.into(),
                cluster_id: "c".into(),
                tenant_id: String::new(),
            },
            upstream_cluster: None,
            headers: Vec::new(),
        }
    }

    fn facts() -> ConnectionFacts {
        ConnectionFacts {
            peer: "127.0.0.1:4000".parse().expect("address"),
        }
    }

    /// Refuses one node id.
    struct Deny(&'static str);

    impl AdmissionStage for Deny {
        fn admit(&self, hs: &AcceptedHandshake, _: &ConnectionFacts) -> Result<(), Rejection> {
            match hs.identity.node_id == self.0 {
                true => Err(Rejection::Forbidden("denied".into())),
                false => Ok(()),
            }
        }
    }

    #[test]
    fn first_rejection_wins_and_others_pass() {
        let (shutdown, signal) = Shutdown::new();
        let admission = Admission::new(vec![Box::new(NotDraining(signal)), Box::new(Deny("bad"))]);
        assert_eq!(admission.admit(&handshake("good"), &facts()), Ok(()));
        let denied = admission.admit(&handshake("bad"), &facts());
        assert_eq!(denied.as_ref().map_err(Rejection::status), Err(403));
        shutdown.trigger();
        let draining = admission.admit(&handshake("bad"), &facts());
        assert_eq!(
            draining,
            Err(Rejection::ShuttingDown),
            "draining is checked first"
        );
    }
}
