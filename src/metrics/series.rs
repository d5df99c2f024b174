//! Bounded tables for families whose label values come from handshakes and requests:
//! (tenant, cluster) for tunnels, (tenant, host id) for detailed request counts.
//!
//! Such values are strings a peer chose, so their number is bounded: a [`SeriesTable`] holds
//! at most `max_series` label pairs per shard, allocated up front; what comes after counts
//! into one overflow series (label values [`OVERFLOW`]) and `rtun_series_overflow_total`.
//!
//! Single writer, no lock: the table belongs to one shard, which alone claims slots; the
//! scrape reads the slots published so far (`len`, released after the slot's key is set).
//! The writer finds a pair's slot through its [`SeriesIndex`], a shard-local map (not
//! `Sync`) kept next to the code that records: looked up once per tunnel (when it
//! registers), or once per request for detailed stats.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The label value of the overflow series.
pub const OVERFLOW: &str = "__overflow__";

/// Where one label pair's counters are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesSlot {
    At(usize),
    Overflow,
}

struct Slot<C> {
    key: OnceLock<(Arc<str>, Arc<str>)>,
    counters: C,
}

/// One shard's series of one family, at most `capacity` label pairs plus the overflow.
pub struct SeriesTable<C> {
    slots: Box<[Slot<C>]>,
    /// Slots claimed and published.
    len: AtomicUsize,
    overflow: C,
}

impl<C> std::fmt::Debug for SeriesTable<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesTable")
            .field("capacity", &self.slots.len())
            .field("len", &self.len.load(Ordering::Relaxed))
            .finish()
    }
}

impl<C: Default> SeriesTable<C> {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity)
                .map(|_| Slot {
                    key: OnceLock::new(),
                    counters: C::default(),
                })
                .collect(),
            len: AtomicUsize::new(0),
            overflow: C::default(),
        }
    }
}

impl<C> SeriesTable<C> {
    pub fn get(&self, slot: SeriesSlot) -> &C {
        match slot {
            SeriesSlot::At(i) => self.slots.get(i).map_or(&self.overflow, |s| &s.counters),
            SeriesSlot::Overflow => &self.overflow,
        }
    }

    /// Claims the next slot for `key`; `None` when the table is full. The owning shard only.
    fn claim(&self, key: (Arc<str>, Arc<str>)) -> Option<usize> {
        let i = self.len.load(Ordering::Relaxed);
        let slot = self.slots.get(i)?;
        let _ = slot.key.set(key);
        self.len.store(i + 1, Ordering::Release);
        Some(i)
    }

    /// Every published label pair with its counters, then the overflow series.
    pub fn for_each(&self, mut f: impl FnMut(&str, &str, &C)) {
        let len = self.len.load(Ordering::Acquire).min(self.slots.len());
        for slot in &self.slots[..len] {
            if let Some((a, b)) = slot.key.get() {
                f(a, b, &slot.counters);
            }
        }
        f(OVERFLOW, OVERFLOW, &self.overflow);
    }
}

/// Slots by first label value, then second (two levels, so a lookup borrows two `&str`).
type Slots = HashMap<Arc<str>, HashMap<Arc<str>, usize>>;

/// The writer's map from label pair to slot: shard-local, so looking up takes no lock.
#[derive(Debug, Default)]
pub struct SeriesIndex {
    slots: RefCell<Slots>,
    full: std::cell::Cell<bool>,
}

impl SeriesIndex {
    /// The slot of `(a, b)` in `table`, claimed on first sight. `Overflow` when the table is
    /// full (the caller counts it).
    pub fn slot<C>(&self, table: &SeriesTable<C>, a: &str, b: &str) -> SeriesSlot {
        let mut slots = self.slots.borrow_mut();
        if let Some(i) = slots.get(a).and_then(|inner| inner.get(b)) {
            return SeriesSlot::At(*i);
        }
        if self.full.get() {
            return SeriesSlot::Overflow;
        }
        let (a, b): (Arc<str>, Arc<str>) = (a.into(), b.into());
        match table.claim((a.clone(), b.clone())) {
            Some(i) => {
                slots.entry(a).or_default().insert(b, i);
                SeriesSlot::At(i)
            }
            None => {
                self.full.set(true);
                SeriesSlot::Overflow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn pairs_get_their_own_slot_until_the_cap_then_overflow() {
        let table: SeriesTable<AtomicU64> = SeriesTable::new(2);
        let index = SeriesIndex::default();
        let a = index.slot(&table, "t", "a");
        assert_eq!(
            index.slot(&table, "t", "a"),
            a,
            "found again, not claimed twice"
        );
        let b = index.slot(&table, "t", "b");
        assert_ne!(a, b);
        assert_eq!(index.slot(&table, "t", "c"), SeriesSlot::Overflow);
        assert_eq!(index.slot(&table, "u", "a"), SeriesSlot::Overflow);
        assert_eq!(
            index.slot(&table, "t", "b"),
            b,
            "known pairs keep their slot"
        );
        for (slot, n) in [(a, 1), (b, 2), (SeriesSlot::Overflow, 3)] {
            table.get(slot).fetch_add(n, Ordering::Relaxed);
        }
        let mut seen = Vec::new();
        table.for_each(|x, y, c| seen.push(format!("{x}/{y}={}", c.load(Ordering::Relaxed))));
        assert_eq!(seen, ["t/a=1", "t/b=2", "__overflow__/__overflow__=3"]);
    }

    #[test]
    fn a_table_without_room_counts_everything_as_overflow() {
        let table: SeriesTable<AtomicU64> = SeriesTable::new(0);
        let index = SeriesIndex::default();
        assert_eq!(index.slot(&table, "t", "a"), SeriesSlot::Overflow);
    }
}
