//! Tunnels up per `initiator.tunnels` entry, across every shard: what the admin endpoint's
//! `/ready` reads (README, "Readiness and liveness").
//!
//! One relaxed atomic per entry, owned by the app and shared by the shards; a tunnel counts
//! from the moment its handshake is accepted until its HTTP/2 service ends
//! ([`TunnelsUp::hold`] in `dialer::keep_tunnel`). Entries that say the same thing (the same
//! identity, remote cluster and count) share one counter: they are one requirement.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::{ReadyWhen, TunnelSpec};

/// Tunnels up per distinct `initiator.tunnels` entry.
#[derive(Debug, Default)]
pub struct TunnelsUp {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Position of the entry's first occurrence in `initiator.tunnels`.
    index: usize,
    spec: TunnelSpec,
    up: AtomicU32,
}

/// One tunnel counted as up until dropped.
#[must_use = "the tunnel counts as up only while the guard lives"]
#[derive(Debug)]
pub struct UpGuard<'a>(Option<&'a AtomicU32>);

impl TunnelsUp {
    /// Counters for `specs` (the `initiator.tunnels` list).
    pub fn new(specs: &[TunnelSpec]) -> Self {
        let mut entries: Vec<Entry> = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            if !entries.iter().any(|e| &e.spec == spec) {
                entries.push(Entry {
                    index,
                    spec: spec.clone(),
                    up: AtomicU32::new(0),
                });
            }
        }
        TunnelsUp { entries }
    }

    /// Counts one tunnel of `spec`'s entry as up while the guard lives; a spec that is not in
    /// the list counts nowhere.
    pub fn hold(&self, spec: &TunnelSpec) -> UpGuard<'_> {
        let up = self.entries.iter().find(|e| &e.spec == spec).map(|e| &e.up);
        if let Some(up) = up {
            up.fetch_add(1, Ordering::Relaxed);
        }
        UpGuard(up)
    }

    /// Tunnels up now for the entry at `index` of `initiator.tunnels` (0 for a repeated or
    /// unknown index).
    pub fn up(&self, index: usize) -> u32 {
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map_or(0, |e| e.up.load(Ordering::Relaxed))
    }

    /// `None` when ready under `when`; otherwise what is missing, one short phrase per entry
    /// without a tunnel (by position and remote cluster: no identities, since the probe
    /// needs no token). Entries of 0 connections ask for nothing and never block readiness.
    pub fn missing(&self, when: ReadyWhen) -> Option<String> {
        let wanted: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.spec.connections > 0)
            .collect();
        let down: Vec<&Entry> = wanted
            .iter()
            .copied()
            .filter(|e| e.up.load(Ordering::Relaxed) == 0)
            .collect();
        let describe = |e: &Entry| {
            format!(
                "initiator.tunnels[{}] (to {})",
                e.index, e.spec.remote_cluster
            )
        };
        match when {
            _ if down.is_empty() => None,
            ReadyWhen::Any if down.len() < wanted.len() => None,
            ReadyWhen::Any => Some(format!(
                "no tunnel up for any initiator.tunnels entry ({} entries)",
                wanted.len()
            )),
            ReadyWhen::All => Some(format!(
                "no tunnel up for {}",
                down.iter()
                    .map(|e| describe(e))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl Drop for UpGuard<'_> {
    fn drop(&mut self) {
        if let Some(up) = self.0 {
            up.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_rc_address;

    fn spec(s: &str) -> TunnelSpec {
        parse_rc_address(s).expect("rc address")
    }

    #[test]
    fn ready_follows_the_tunnels_of_each_entry() {
        let (a, b, idle) = (
            spec("rc://n1:c1:@cloud:2"),
            spec("rc://n1:c1:@backup:1"),
            spec("rc://n1:c1:@spare:0"),
        );
        let up = TunnelsUp::new(&[a.clone(), b.clone(), a.clone(), idle]);
        assert_eq!(
            up.missing(ReadyWhen::All).as_deref(),
            Some("no tunnel up for initiator.tunnels[0] (to cloud), initiator.tunnels[1] (to backup)")
        );
        assert!(up.missing(ReadyWhen::Any).is_some());
        let first = up.hold(&a);
        let second = up.hold(&a);
        assert_eq!(up.up(0), 2);
        assert_eq!(up.missing(ReadyWhen::Any), None);
        assert_eq!(
            up.missing(ReadyWhen::All).as_deref(),
            Some("no tunnel up for initiator.tunnels[1] (to backup)")
        );
        let other = up.hold(&b);
        assert_eq!(
            up.missing(ReadyWhen::All),
            None,
            "the repeated entry is the same one"
        );
        drop((first, second));
        assert_eq!(up.up(0), 0);
        assert!(up.missing(ReadyWhen::All).is_some());
        drop(other);
        assert_eq!(up.up(1), 0);
        let _stranger = up.hold(&spec("rc://x:y:@elsewhere:1"));
        assert!(up.missing(ReadyWhen::Any).is_some());
    }

    #[test]
    fn nothing_wanted_is_ready() {
        let up = TunnelsUp::new(&[spec("rc://n1:c1:@cloud:0")]);
        assert_eq!(up.missing(ReadyWhen::All), None);
        assert_eq!(up.missing(ReadyWhen::Any), None);
        assert_eq!(TunnelsUp::default().missing(ReadyWhen::All), None);
    }
}
