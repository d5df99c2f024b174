//! Cross-reference checks: a route or tunnel naming an unknown cluster, a map-form tunnel
//! without `node:`, listeners on the same port, backoffs that contradict each other.
//!
//! These checks need the whole file, yet their errors must point at the offending value. The
//! approach: [`super::parse`] deserializes the file twice. The first pass, without checks, yields
//! a `RawConfig` (or a located syntax/type error). The second pass installs what the checks need
//! of that result, a [`FirstPass`], in a thread-local [`Context`]; the value deserializers of each
//! section call [`check`], which consults it and fails *inside the visitor* of the offending
//! value, so serde_yaml gives the error that value's line and column — exactly as for any other
//! value error.
//!
//! serde stops at the first error, so to report several the second pass is repeated with
//! `skip = 0, 1, 2, ...`: pass `k` lets the first `k` failing checks through and fails at the
//! next one. Configuration files are small, so the extra passes cost microseconds.
//!
//! This module knows no schema type: the schema builds the [`FirstPass`] from its `RawConfig`
//! and calls in here, never the other way round.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// What the checks consult of the first pass: the values other values refer to.
#[derive(Debug, Clone, Default)]
pub(crate) struct FirstPass {
    /// The names defined under `clusters:`.
    pub(crate) clusters: BTreeSet<String>,
    /// Whether the top-level `node:` is given.
    pub(crate) node: bool,
    /// `admin.listen`, when `admin:` is given.
    pub(crate) admin_listen: Option<SocketAddr>,
    /// `responder.tunnel_listener.listen`, when `responder:` is given.
    pub(crate) tunnel_listen: Option<SocketAddr>,
    /// The initiator's redial backoffs, when `initiator:` is given.
    pub(crate) backoffs: Option<Backoffs>,
    /// Whether `responder.tunnel_listener.tls.client_ca` is set (client certificates).
    pub(crate) tunnel_client_ca: bool,
    /// Whether `initiator.auth` is given (it writes the `authorization` header).
    pub(crate) initiator_auth: bool,
    /// The headers `responder.egress_listener.host_id_format` reads (egress routes may not add
    /// them).
    pub(crate) host_id_headers: Vec<String>,
}

/// `initiator.initial_reconnect_backoff` and `initiator.max_reconnect_backoff`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoffs {
    /// The initial backoff; `None` when not written.
    pub(crate) initial: Option<Duration>,
    /// The cap, as written or its default.
    pub(crate) max: Duration,
}

struct Context {
    first_pass: Rc<FirstPass>,
    skip: usize,
    seen: usize,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Clears the context when the pass ends, even by panic.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        CONTEXT.with(|c| c.borrow_mut().take());
    }
}

/// Runs `pass` with checks enabled against `first_pass`, letting the first `skip` failures
/// through.
pub(crate) fn run<T>(first_pass: Rc<FirstPass>, skip: usize, pass: impl FnOnce() -> T) -> T {
    CONTEXT.with(|c| {
        *c.borrow_mut() = Some(Context {
            first_pass,
            skip,
            seen: 0,
        })
    });
    let _reset = Reset;
    pass()
}

/// Runs one check: `problem` returns a message when the value is wrong. Without a context
/// (first pass) every check passes.
pub(crate) fn check(problem: impl FnOnce(&FirstPass) -> Option<String>) -> Result<(), String> {
    CONTEXT.with(|c| {
        let mut guard = c.borrow_mut();
        let Some(ctx) = guard.as_mut() else {
            return Ok(());
        };
        match problem(&ctx.first_pass) {
            None => Ok(()),
            Some(_) if ctx.seen < ctx.skip => {
                ctx.seen += 1;
                Ok(())
            }
            Some(message) => Err(message),
        }
    })
}

/// A cluster name that is not defined under `clusters:`.
pub(crate) fn unknown_cluster(first: &FirstPass, name: &str) -> Option<String> {
    if first.clusters.contains(name) {
        return None;
    }
    let defined = if first.clusters.is_empty() {
        "none are defined".to_owned()
    } else {
        let names: Vec<&str> = first.clusters.iter().map(String::as_str).collect();
        format!("defined: {}", names.join(", "))
    };
    Some(format!(
        "unknown cluster `{name}`: it is not defined under `clusters:` ({defined})"
    ))
}

/// Listeners that are checked for collisions with the ones before them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// `responder.tunnel_listener.listen`, checked against admin.
    Tunnel,
    /// `responder.egress_listener.listen`, checked against admin and tunnel.
    Egress,
}

/// Two listeners on the same port whose addresses overlap (equal, or one is unspecified).
/// Every listener is bound with SO_REUSEPORT, so the kernel would not refuse this: it would
/// silently spread connections between two different listeners. Port 0 never collides.
pub(crate) fn listen_conflict(
    first: &FirstPass,
    addr: SocketAddr,
    listener: Listener,
) -> Option<String> {
    let mut earlier = vec![("admin.listen", first.admin_listen)];
    if listener == Listener::Egress {
        earlier.push(("responder.tunnel_listener.listen", first.tunnel_listen));
    }
    let overlaps = |other: SocketAddr| {
        addr.port() != 0
            && addr.port() == other.port()
            && (addr.ip() == other.ip()
                || addr.ip().is_unspecified()
                || other.ip().is_unspecified())
    };
    earlier.into_iter().find_map(|(key, other)| {
        let other = other.filter(|o| overlaps(*o))?;
        Some(format!(
            "listen address {addr} overlaps {key} {other}; every listener needs its own port"
        ))
    })
}
