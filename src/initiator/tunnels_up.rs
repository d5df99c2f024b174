//! Tunnels up per `initiator.tunnels` entry, across every shard: what the admin endpoint's
//! `/ready` reads (README, "Readiness and liveness").
//!
//! One relaxed atomic per entry, owned by the app and shared by the shards; a tunnel counts
//! from the moment its handshake is accepted until its HTTP/2 service ends
//! ([`TunnelsUp::hold`] in `dialer::keep_tunnel`). An entry is known by what it dials as
//! (its identity and remote cluster, [`EntryKey`]): entries that say the same thing are one
//! requirement, and an entry whose `connections` changed on a reload keeps its count.
//!
//! A reload makes the list follow the new entries ([`TunnelsUp::follow`], called by every
//! shard's applier with the same list, so it is idempotent): an added entry is not ready until
//! a tunnel of it is up; a removed one no longer counts, and its draining tunnels' guards
//! count into a counter no one reads. The lock is taken when a tunnel comes up or goes down,
//! on a reload and by `/ready`, never on the request path.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::{NodeIdentity, ReadyWhen, TunnelSpec};

/// What a `tunnels` entry dials as: its identity and the responder cluster. Two entries with
/// the same key are one requirement; a reload that changes only `connections` keeps the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub remote_cluster: String,
    pub node: String,
    pub cluster: String,
    pub tenant: String,
}

impl EntryKey {
    pub fn of(spec: &TunnelSpec) -> Self {
        let NodeIdentity {
            id,
            cluster,
            tenant,
            ..
        } = &spec.identity;
        EntryKey {
            remote_cluster: spec.remote_cluster.clone(),
            node: id.clone(),
            cluster: cluster.clone(),
            tenant: tenant.clone(),
        }
    }
}

/// Tunnels up per distinct `initiator.tunnels` entry.
#[derive(Debug, Default)]
pub struct TunnelsUp {
    entries: RwLock<Vec<Entry>>,
}

#[derive(Debug)]
struct Entry {
    /// Position of the entry's first occurrence in `initiator.tunnels`.
    index: usize,
    key: EntryKey,
    /// Tunnels wanted: the sum over the entries with this key.
    connections: u32,
    up: Arc<AtomicU32>,
}

/// One tunnel counted as up until dropped.
#[must_use = "the tunnel counts as up only while the guard lives"]
#[derive(Debug)]
pub struct UpGuard(Option<Arc<AtomicU32>>);

impl TunnelsUp {
    /// Counters for `specs` (the `initiator.tunnels` list).
    pub fn new(specs: &[TunnelSpec]) -> Self {
        let up = TunnelsUp::default();
        up.follow(specs);
        up
    }

    /// Makes the list `specs` (a reload's `initiator.tunnels`): entries that stay keep their
    /// counts, new ones start at 0, removed ones are forgotten.
    pub fn follow(&self, specs: &[TunnelSpec]) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let mut next: Vec<Entry> = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let key = EntryKey::of(spec);
            if let Some(e) = next.iter_mut().find(|e| e.key == key) {
                e.connections = e.connections.saturating_add(spec.connections);
                continue;
            }
            let up = entries
                .iter()
                .find(|e| e.key == key)
                .map_or_else(|| Arc::new(AtomicU32::new(0)), |e| e.up.clone());
            next.push(Entry {
                index,
                key,
                connections: spec.connections,
                up,
            });
        }
        *entries = next;
    }

    /// Counts one tunnel of `spec`'s entry as up while the guard lives; a spec that is not in
    /// the list counts nowhere.
    pub fn hold(&self, spec: &TunnelSpec) -> UpGuard {
        let key = EntryKey::of(spec);
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let up = entries.iter().find(|e| e.key == key).map(|e| e.up.clone());
        if let Some(up) = &up {
            up.fetch_add(1, Ordering::Relaxed);
        }
        UpGuard(up)
    }

    /// Tunnels up now for the entry at `index` of `initiator.tunnels` (0 for a repeated or
    /// unknown index).
    pub fn up(&self, index: usize) -> u32 {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .iter()
            .find(|e| e.index == index)
            .map_or(0, |e| e.up.load(Ordering::Relaxed))
    }

    /// `None` when ready under `when`; otherwise what is missing, one short phrase per entry
    /// without a tunnel (by position and remote cluster: no identities, since the probe
    /// needs no token). Entries of 0 connections ask for nothing and never block readiness.
    pub fn missing(&self, when: ReadyWhen) -> Option<String> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        let wanted: Vec<&Entry> = entries.iter().filter(|e| e.connections > 0).collect();
        let down: Vec<&Entry> = wanted
            .iter()
            .copied()
            .filter(|e| e.up.load(Ordering::Relaxed) == 0)
            .collect();
        let describe = |e: &Entry| {
            format!(
                "initiator.tunnels[{}] (to {})",
                e.index, e.key.remote_cluster
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

impl Drop for UpGuard {
    fn drop(&mut self) {
        if let Some(up) = &self.0 {
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
    fn the_list_follows_a_reload() {
        let (a, b) = (spec("rc://n1:c1:@cloud:2"), spec("rc://n1:c1:@backup:1"));
        let up = TunnelsUp::new(std::slice::from_ref(&a));
        let held = up.hold(&a);
        // `b` added, `a` grown to 3: `a` keeps its tunnel, `b` is not ready until up.
        let a3 = spec("rc://n1:c1:@cloud:3");
        up.follow(&[b.clone(), a3.clone()]);
        assert_eq!(up.up(1), 1, "a's count survives its change of connections");
        assert_eq!(
            up.missing(ReadyWhen::All).as_deref(),
            Some("no tunnel up for initiator.tunnels[0] (to backup)")
        );
        let b_up = up.hold(&b);
        assert_eq!(up.missing(ReadyWhen::All), None);
        // `a` removed: it no longer counts, its guard still drops cleanly.
        up.follow(std::slice::from_ref(&b));
        assert_eq!(up.missing(ReadyWhen::All), None);
        drop(held);
        drop(b_up);
        assert_eq!(
            up.missing(ReadyWhen::All).as_deref(),
            Some("no tunnel up for initiator.tunnels[0] (to backup)")
        );
        // Another identity is another entry.
        up.follow(&[spec("rc://n2:c1:@backup:1")]);
        let _old = up.hold(&b);
        assert!(up.missing(ReadyWhen::All).is_some());
    }

    #[test]
    fn nothing_wanted_is_ready() {
        let up = TunnelsUp::new(&[spec("rc://n1:c1:@cloud:0")]);
        assert_eq!(up.missing(ReadyWhen::All), None);
        assert_eq!(up.missing(ReadyWhen::Any), None);
        assert_eq!(TunnelsUp::default().missing(ReadyWhen::All), None);
    }
}
