//! `GET /ready`: can this process take traffic? (DESIGN.md §12)
//!
//! - initiator: every `initiator.tunnels` entry has a tunnel up (`admin.ready_when: all`, the
//!   default) or at least one has (`any`), counted across shards by
//!   [`TunnelsUp`](crate::initiator::tunnels_up::TunnelsUp);
//! - responder: every shard accepts on its listeners (they are bound before the shards start,
//!   so a port someone else holds stops the process instead);
//! - either: not draining.
//!
//! 200 `ready`, or 503 `not ready: …` naming what is missing, one reason after another. The
//! texts name config positions and remote clusters, never node, cluster or tenant ids: the
//! probe needs no token.

use http::StatusCode;

use crate::config::ReadyWhen;
use crate::initiator::tunnels_up::TunnelsUp;
use crate::responder::Responder;
use crate::shard::shutdown::ShutdownSignal;

/// The page's status and text.
pub(super) fn page(
    process: &ShutdownSignal,
    responder: Option<&Responder>,
    tunnels_up: Option<&TunnelsUp>,
    when: ReadyWhen,
) -> (StatusCode, String) {
    let mut missing = Vec::new();
    if process.is_triggered() {
        missing.push("draining".to_owned());
    }
    if let Some(r) = responder {
        let (accepting, shards) = r.accepting_shards();
        if accepting < shards {
            missing.push(format!(
                "responder listeners accept on {accepting} of {shards} shards"
            ));
        }
    }
    missing.extend(tunnels_up.and_then(|up| up.missing(when)));
    match missing.is_empty() {
        true => (StatusCode::OK, "ready".into()),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", missing.join("; ")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_rc_address;
    use crate::shard::shutdown::Shutdown;

    #[test]
    fn draining_and_missing_tunnels_are_named() {
        let (shutdown, signal) = Shutdown::new();
        let spec = parse_rc_address("rc://n1:c1:t@cloud:1").expect("rc");
        let up = TunnelsUp::new(std::slice::from_ref(&spec));
        assert_eq!(
            page(&signal, None, Some(&up), ReadyWhen::All),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no tunnel up for initiator.tunnels[0] (to cloud)".into()
            )
        );
        let guard = up.hold(&spec);
        assert_eq!(
            page(&signal, None, Some(&up), ReadyWhen::All),
            (StatusCode::OK, "ready".into())
        );
        assert_eq!(
            page(&signal, None, None, ReadyWhen::Any),
            (StatusCode::OK, "ready".into())
        );
        shutdown.trigger();
        let (status, text) = page(&signal, None, Some(&up), ReadyWhen::All);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(text, "not ready: draining");
        drop(guard);
        let (_, text) = page(&signal, None, Some(&up), ReadyWhen::All);
        assert!(!text.contains("n1") && !text.contains("c1"), "{text}");
    }
}
