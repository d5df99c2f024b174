//! Connection balance: how many connections of one listener each shard serves, and which
//! shard serves a new one.
//!
//! Each shard accepts on its own socket of a reuseport group (this module's parent, "Listeners"),
//! and the kernel picks the socket by a hash of the connection's addresses. Over many connections
//! that is even; over a few long-lived ones it is not: four HTTP/2 connections from a load balancer
//! all land on one of two shards one time in eight, and the other shard (with the tunnel peer it is
//! paired with) then idles while this one saturates (bench/README.md, "four h2 connections split
//! unevenly"). [`Balance::Exact`], the default, corrects that at accept: a shard that holds more
//! open connections than another hands the new one to the shard holding the fewest (the socket
//! moves as tunnels do between shards), as Envoy's `exact_balance` (opt-in there) and Seastar's
//! connection distribution (its default) do. It costs a `dup` and a message per moved connection,
//! nothing per request; `kernel` leaves every connection where it was accepted, for clients that
//! open a connection per request.
//!
//! [`ShardLoad`] counts open connections per shard with one relaxed atomic each, touched when a
//! connection starts and when it ends. Counting is always on, so that switching to `exact` on a
//! reload starts from true counts. Two shards placing at the same instant may both pick the
//! same target: the counts stay right, the split is off by one at most, and the next
//! connection corrects it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::ShardId;

/// `egress_listener.connection_balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each connection is served where the kernel's reuseport hash put it.
    Kernel,
    /// A new connection goes to the shard with the fewest open ones (the accepting shard on
    /// ties). The default: a thread-per-core proxy's shards should share the connections it
    /// holds, however few.
    #[default]
    Exact,
}

/// Open connections of one listener per shard, shared by every shard.
#[derive(Debug)]
pub struct ShardLoad {
    open: Box<[AtomicUsize]>,
}

impl ShardLoad {
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            open: (0..shards.max(1)).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Places a connection `here` accepted: on `here`, or with [`Balance::Exact`] on the shard
    /// with strictly fewer open connections than any other (the first such on ties with each
    /// other, `here` on ties with it). The connection counts on the chosen shard until the
    /// returned place drops.
    pub fn place(self: &Arc<Self>, here: ShardId, balance: Balance) -> Placed {
        let here = here.min(self.open.len() - 1);
        let shard = match balance {
            Balance::Kernel => here,
            Balance::Exact => {
                let mut best = here;
                let mut fewest = self.open[here].load(Ordering::Relaxed);
                for (shard, open) in self.open.iter().enumerate() {
                    let open = open.load(Ordering::Relaxed);
                    if open < fewest {
                        (best, fewest) = (shard, open);
                    }
                }
                best
            }
        };
        self.open[shard].fetch_add(1, Ordering::Relaxed);
        Placed {
            load: self.clone(),
            shard,
        }
    }

    /// Open connections on each shard, shard 0 first.
    pub fn open(&self) -> Vec<usize> {
        self.open
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect()
    }
}

/// One connection counted on [`Placed::shard`]; dropping it (the connection ended, or never
/// reached that shard) takes it off the count. Travels with a connection handed to that shard.
#[derive(Debug)]
pub struct Placed {
    load: Arc<ShardLoad>,
    shard: ShardId,
}

impl Placed {
    /// The shard that serves the connection.
    pub fn shard(&self) -> ShardId {
        self.shard
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.load.open[self.shard].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_keeps_every_connection_where_it_was_accepted() {
        let load = ShardLoad::new(2);
        let held: Vec<Placed> = (0..3).map(|_| load.place(0, Balance::Kernel)).collect();
        assert!(held.iter().all(|p| p.shard() == 0));
        assert_eq!(load.open(), [3, 0], "counted all the same");
    }

    #[test]
    fn exact_moves_a_connection_to_the_shard_with_fewest() {
        let load = ShardLoad::new(3);
        let a = load.place(1, Balance::Exact);
        assert_eq!(a.shard(), 1, "a tie with here stays here");
        let b = load.place(1, Balance::Exact);
        assert_eq!(b.shard(), 0, "the first of the shards with fewest");
        let c = load.place(1, Balance::Exact);
        assert_eq!(c.shard(), 2);
        let d = load.place(0, Balance::Exact);
        assert_eq!(d.shard(), 0, "every shard holds one: stays");
        assert_eq!(load.open(), [2, 1, 1]);
        drop((a, d));
        assert_eq!(
            load.open(),
            [1, 0, 1],
            "dropping a place takes it off its shard"
        );
        assert_eq!(load.place(2, Balance::Exact).shard(), 1);
    }

    /// Connections accepted on one shard only (the worst reuseport split) end up even, at
    /// every step, whichever shard accepts them.
    #[test]
    fn exact_keeps_every_prefix_balanced() {
        let load = ShardLoad::new(2);
        let mut held = Vec::new();
        for i in 0..9 {
            held.push(load.place(i % 3 / 2, Balance::Exact));
            let open = load.open();
            assert!(open[0].abs_diff(open[1]) <= 1, "after {}: {open:?}", i + 1);
        }
    }

    #[test]
    fn a_shard_out_of_range_counts_on_the_last() {
        let load = ShardLoad::new(2);
        assert_eq!(load.place(7, Balance::Kernel).shard(), 1);
    }
}
