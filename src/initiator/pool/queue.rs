//! A local cluster's connections, request slots and queue of pending requests on one shard:
//! the pool's bookkeeping, with no I/O (time comes in as `now`, connections as opaque handles).
//! The shell in `initiator::pool` carries out the [`Action`]s it returns.
//!
//! The model is HAProxy's `maxconn` + queue and Envoy's circuit breakers (ARCHITECTURE.md §7):
//!
//! - Every request enters at the back of one FIFO queue (at most `max_pending` waiting; beyond
//!   that it is refused at once) and leaves it from the front, as soon as a connection is ready
//!   for it and fewer than `max_requests` requests are in flight. So a request waits for the
//!   next free connection instead of opening its own: whatever connection frees up or comes up
//!   first goes to the oldest request.
//! - Connections are opened for demand only — one per waiting HTTP/1.1 request that could get
//!   a request slot, one per endpoint for HTTP/2 (which multiplexes) — within
//!   `max_connections` open (connecting ones included) and `max_connecting` connects in
//!   flight per endpoint.
//! - Endpoints take turns (round-robin), for new connections and for idle ones; an endpoint
//!   the [`Outliers`] ejected takes no traffic until its ejection ends.
//! - A connect that fails is charged to the request it was opened for (every waiting request
//!   for HTTP/2): that request tries another endpoint in service if there is one, else waits
//!   for the connections that exist, else fails with the connect's error. A request never
//!   tries the same endpoint twice while connections exist, so a refusing endpoint cannot
//!   make the pool spin.
//! - HTTP/1.1 connections carry one request at a time and come back after their response
//!   body ended (`finish`, then `returned` once the connection is ready again); at most
//!   `max_idle` of them wait idle. A connection whose request was abandoned is never returned.
//! - A connection the pool closes counts as open until the shell reports it gone
//!   ([`PoolState::closed`]: an HTTP/2 connection's task ended; an HTTP/1.1 connection was
//!   dropped, its socket with it), so `max_connections` bounds the sockets the service sees,
//!   not only the connections the pool still uses. An idle HTTP/1.1 connection the service
//!   closed is forgotten when the shell finds it ([`PoolState::prune`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::outlier::{Ejection, OutlierSettings, Outliers};

pub type ConnId = u64;
pub type WaiterId = u64;

/// The bounds of one cluster on one shard (`clusters.NAME.max_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connecting: usize,
    pub max_pending: usize,
    pub max_requests: usize,
    pub max_idle: usize,
    /// HTTP/2: a connection carries any number of requests at once (each endpoint gets one).
    pub multiplexed: bool,
}

/// A connection's request handle.
pub trait Handle: Sized {
    /// Another handle to the same connection when it multiplexes requests; `None` when a
    /// request needs the connection to itself.
    fn share(&self) -> Option<Self>;
}

/// A request that cannot even wait: the queue holds `max_pending` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A connection handed to a request. The request holds one of `max_requests` slots until it
/// calls [`PoolState::finish`] (or [`PoolState::give_back`] when it never used it).
#[derive(Debug)]
pub struct Grant<C> {
    pub conn: ConnId,
    pub endpoint: usize,
    pub handle: C,
}

/// What the shell must do, in order.
#[derive(Debug)]
pub enum Action<C, W> {
    /// Give `grant` to the waiting request `waiter`.
    Grant { waiter: W, grant: Grant<C> },
    /// The request's connects failed and nothing else can serve it: fail it with the connect's
    /// error.
    Fail { waiter: W },
    /// Open connection `conn` to `endpoint`; report [`PoolState::connected`] or
    /// [`PoolState::connect_failed`].
    Connect { conn: ConnId, endpoint: usize },
    /// Close this idle connection (beyond `max_idle`, or its endpoint was ejected).
    Close { conn: ConnId, handle: C },
}

#[derive(Debug)]
enum State<C> {
    /// Being established; for HTTP/1.1, on behalf of that waiting request.
    Connecting { for_waiter: Option<WaiterId> },
    /// Ready for a request: an idle HTTP/1.1 connection, or a live HTTP/2 one.
    Ready(C),
    /// HTTP/1.1: carrying a request.
    Busy,
    /// HTTP/1.1: its request is over; it comes back once ready for the next one.
    Recycling,
    /// HTTP/1.1: the shell is closing it. Its socket may still be open (in a response body
    /// being dropped), so it counts against `max_connections` until the shell reports
    /// [`PoolState::closed`]: the service never sees more than `max_connections` at once.
    Closing,
}

#[derive(Debug)]
struct Conn<C> {
    endpoint: usize,
    state: State<C>,
}

#[derive(Debug)]
struct Waiter<W> {
    id: WaiterId,
    token: W,
    /// Endpoints whose connect failed for this request.
    tried: Vec<bool>,
    /// The connect in flight on its behalf (HTTP/1.1).
    connect: Option<ConnId>,
}

/// Per endpoint: connections open (connecting included) and connects in flight.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    open: usize,
    connecting: usize,
}

/// One cluster's pool state on one shard. `C` is a connection handle, `W` a waiting request's
/// token (the shell wakes it with what it is given).
#[derive(Debug)]
pub struct PoolState<C, W> {
    limits: Limits,
    outliers: Outliers,
    counts: Vec<Counts>,
    conns: BTreeMap<ConnId, Conn<C>>,
    /// Ready connections, oldest first (HTTP/1.1 reuses the newest, trims the oldest).
    ready: VecDeque<ConnId>,
    queue: VecDeque<Waiter<W>>,
    requests: usize,
    round_robin: usize,
    next_id: u64,
}

impl<C: Handle, W> PoolState<C, W> {
    pub fn new(limits: Limits, endpoints: usize, outliers: OutlierSettings) -> Self {
        Self {
            limits,
            outliers: Outliers::new(endpoints, outliers),
            counts: vec![Counts::default(); endpoints],
            conns: BTreeMap::new(),
            ready: VecDeque::new(),
            queue: VecDeque::new(),
            requests: 0,
            round_robin: 0,
            next_id: 0,
        }
    }

    /// A request arrives: it queues (and may be granted a connection at once, among the
    /// actions), or is refused when `max_pending` requests wait already.
    pub fn checkout(
        &mut self,
        token: W,
        now: Instant,
    ) -> Result<(WaiterId, Vec<Action<C, W>>), QueueFull> {
        // The queue is never left non-empty while something could serve its front, so a full
        // queue means this request could not be served now either.
        if self.queue.len() >= self.limits.max_pending {
            return Err(QueueFull);
        }
        let id = self.next_id();
        self.queue.push_back(Waiter {
            id,
            token,
            tried: vec![false; self.counts.len()],
            connect: None,
        });
        Ok((id, self.dispatch(now)))
    }

    /// A waiting request left (its queue timeout, or its client went away). Nothing happens
    /// if it was granted or failed already.
    pub fn cancel(&mut self, waiter: WaiterId, now: Instant) -> Vec<Action<C, W>> {
        let Some(pos) = self.queue.iter().position(|w| w.id == waiter) else {
            return Vec::new();
        };
        if let Some(w) = self.queue.remove(pos) {
            self.hand_over(w.connect);
        }
        self.dispatch(now)
    }

    /// Connection `conn` is established.
    pub fn connected(&mut self, conn: ConnId, handle: C, now: Instant) -> Vec<Action<C, W>> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return vec![Action::Close { conn, handle }];
        };
        if let State::Connecting { for_waiter } = c.state {
            if let Some(w) = for_waiter.and_then(|id| self.queue.iter_mut().find(|w| w.id == id)) {
                w.connect = None;
            }
            self.counts[c.endpoint].connecting -= 1;
        }
        c.state = State::Ready(handle);
        self.ready.push_back(conn);
        self.dispatch(now)
    }

    /// Connection `conn` could not be established: a failure of its endpoint, charged to the
    /// request it was opened for (every waiting request for HTTP/2).
    pub fn connect_failed(
        &mut self,
        conn: ConnId,
        now: Instant,
    ) -> (Vec<Action<C, W>>, Option<Ejection>) {
        let Some(c) = self.conns.remove(&conn) else {
            return (Vec::new(), None);
        };
        let endpoint = c.endpoint;
        let for_waiter = match c.state {
            State::Connecting { for_waiter } => {
                self.counts[endpoint].connecting -= 1;
                for_waiter
            }
            _ => None,
        };
        self.counts[endpoint].open -= 1;
        let mut actions = Vec::new();
        let ejection = self.endpoint_failed(endpoint, now, &mut actions);
        let multiplexed = self.limits.multiplexed;
        for w in self.queue.iter_mut() {
            if multiplexed || Some(w.id) == for_waiter {
                w.tried[endpoint] = true;
                if w.connect == Some(conn) {
                    w.connect = None;
                }
            }
        }
        // Those with nowhere left to go fail now.
        let mut i = 0;
        while i < self.queue.len() {
            let w = &self.queue[i];
            let charged = multiplexed || Some(w.id) == for_waiter;
            if charged && !self.can_still_serve(w, now) {
                if let Some(w) = self.queue.remove(i) {
                    actions.push(Action::Fail { waiter: w.token });
                }
            } else {
                i += 1;
            }
        }
        actions.extend(self.dispatch(now));
        (actions, ejection)
    }

    /// A request on `conn` is over: its slot is free. `reusable`: an HTTP/1.1 connection whose
    /// response ended whole, to come back with [`returned`](Self::returned) once ready again;
    /// otherwise it is gone (the shell closes it). HTTP/2 connections stay either way.
    pub fn finish(&mut self, conn: ConnId, reusable: bool, now: Instant) -> Vec<Action<C, W>> {
        self.requests = self.requests.saturating_sub(1);
        if !self.limits.multiplexed {
            match self.conns.get_mut(&conn) {
                Some(c) if reusable && matches!(c.state, State::Busy) => c.state = State::Recycling,
                _ => self.closing(conn),
            }
        }
        self.dispatch(now)
    }

    /// An HTTP/1.1 connection that finished its request is ready for the next one.
    pub fn returned(&mut self, conn: ConnId, handle: C, now: Instant) -> Vec<Action<C, W>> {
        match self.conns.get_mut(&conn) {
            Some(c) if matches!(c.state, State::Busy | State::Recycling) => {
                c.state = State::Ready(handle);
                self.ready.push_back(conn);
                self.dispatch(now)
            }
            _ => vec![Action::Close { conn, handle }],
        }
    }

    /// A grant that carried no request: its slot is free and its connection ready as it was.
    pub fn give_back(&mut self, grant: Grant<C>, now: Instant) -> Vec<Action<C, W>> {
        self.requests = self.requests.saturating_sub(1);
        match self.conns.get_mut(&grant.conn) {
            Some(c) if matches!(c.state, State::Busy) => {
                c.state = State::Ready(grant.handle);
                self.ready.push_back(grant.conn);
            }
            // HTTP/2: the shared handle is simply dropped.
            _ => {}
        }
        self.dispatch(now)
    }

    /// Connection `conn` is gone: its socket is closed (HTTP/1.1: the shell dropped it;
    /// HTTP/2: its task ended, by itself or because the shell closed it).
    pub fn closed(&mut self, conn: ConnId, now: Instant) -> Vec<Action<C, W>> {
        if self.forget(conn) {
            self.dispatch(now)
        } else {
            Vec::new()
        }
    }

    /// Forgets every ready connection whose handle `dead` says is gone (an HTTP/1.1
    /// connection the service closed while it was idle), dropping its handle, and makes use
    /// of the room. Also returns how many ready connections are left.
    pub fn prune(
        &mut self,
        mut dead: impl FnMut(&mut C) -> bool,
        now: Instant,
    ) -> (usize, Vec<Action<C, W>>) {
        let mut gone = Vec::new();
        for id in &self.ready {
            if let Some(Conn {
                state: State::Ready(handle),
                ..
            }) = self.conns.get_mut(id)
            {
                if dead(handle) {
                    gone.push(*id);
                }
            }
        }
        let pruned = !gone.is_empty();
        for id in gone {
            self.forget(id);
        }
        let actions = if pruned {
            self.dispatch(now)
        } else {
            Vec::new()
        };
        (self.ready.len(), actions)
    }

    /// A response head from `endpoint`.
    pub fn success(&mut self, endpoint: usize) {
        self.outliers.success(endpoint);
    }

    /// A request to `endpoint` broke before its response head.
    pub fn failure(
        &mut self,
        endpoint: usize,
        now: Instant,
    ) -> (Vec<Action<C, W>>, Option<Ejection>) {
        let mut actions = Vec::new();
        let ejection = self.endpoint_failed(endpoint, now, &mut actions);
        if ejection.is_some() {
            actions.extend(self.dispatch(now));
        }
        (actions, ejection)
    }

    /// Requests waiting in the queue.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Connections ready for a request.
    #[cfg(test)]
    pub fn ready(&self) -> usize {
        self.ready.len()
    }

    /// Requests holding a slot.
    #[cfg(test)]
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// Open connections (connecting ones included) to `endpoint`.
    #[cfg(test)]
    pub fn open(&self, endpoint: usize) -> usize {
        self.counts.get(endpoint).map_or(0, |c| c.open)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Counts a failure; on ejection, closes the endpoint's ready connections.
    fn endpoint_failed(
        &mut self,
        endpoint: usize,
        now: Instant,
        actions: &mut Vec<Action<C, W>>,
    ) -> Option<Ejection> {
        let ejection = self.outliers.failure(endpoint, now)?;
        if self.limits.multiplexed {
            // Its connection carries requests in flight: it is only passed over from now on.
            return Some(ejection);
        }
        let doomed: Vec<ConnId> = self
            .ready
            .iter()
            .copied()
            .filter(|id| self.conns.get(id).is_some_and(|c| c.endpoint == endpoint))
            .collect();
        for id in doomed {
            self.ready.retain(|r| *r != id);
            if let Some(handle) = self.take_for_closing(id) {
                actions.push(Action::Close { conn: id, handle });
            }
        }
        Some(ejection)
    }

    /// Marks HTTP/1.1 connection `conn` as closing (see [`State::Closing`]).
    fn closing(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !matches!(c.state, State::Connecting { .. }) {
                c.state = State::Closing;
                self.ready.retain(|r| *r != conn);
            }
        }
    }

    /// The handle of ready connection `conn`, which is closing from now on.
    fn take_for_closing(&mut self, conn: ConnId) -> Option<C> {
        let c = self.conns.get_mut(&conn)?;
        match std::mem::replace(&mut c.state, State::Closing) {
            State::Ready(handle) => Some(handle),
            other => {
                c.state = other;
                None
            }
        }
    }

    /// Removes `conn` wherever it is; false if it was not known.
    fn forget(&mut self, conn: ConnId) -> bool {
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        self.ready.retain(|r| *r != conn);
        self.counts[c.endpoint].open -= 1;
        if let State::Connecting { .. } = c.state {
            self.counts[c.endpoint].connecting -= 1;
        }
        true
    }

    /// Whether `w` may still be served after a connect failed for it: an endpoint in service
    /// it has not tried, or established connections that may free up for it. (Connects in
    /// flight for others do not count: they may fail as well.)
    fn can_still_serve(&self, w: &Waiter<W>, now: Instant) -> bool {
        self.has_untried(w, now) || self.any_established()
    }

    fn has_untried(&self, w: &Waiter<W>, now: Instant) -> bool {
        (0..self.counts.len()).any(|e| !w.tried[e] && self.outliers.usable(e, now))
    }

    fn any_established(&self) -> bool {
        self.conns
            .values()
            .any(|c| !matches!(c.state, State::Connecting { .. } | State::Closing))
    }

    /// Gives the connect in flight for a request that no longer waits to the oldest waiting
    /// request without one that has not seen that endpoint fail.
    fn hand_over(&mut self, connect: Option<ConnId>) {
        let Some(conn) = connect else { return };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let endpoint = c.endpoint;
        let heir = self
            .queue
            .iter_mut()
            .find(|w| w.connect.is_none() && !w.tried[endpoint]);
        let heir_id = heir.map(|w| {
            w.connect = Some(conn);
            w.id
        });
        if let State::Connecting { for_waiter } = &mut c.state {
            *for_waiter = heir_id;
        }
    }

    /// Grants ready connections to the front of the queue, opens connections for the demand
    /// left, trims idle connections.
    fn dispatch(&mut self, now: Instant) -> Vec<Action<C, W>> {
        let mut actions = Vec::new();
        while !self.queue.is_empty() && self.requests < self.limits.max_requests {
            let Some(conn) = self.pick_ready(now) else {
                break;
            };
            let Some(grant) = self.take(conn) else {
                continue;
            };
            let Some(w) = self.queue.pop_front() else {
                break;
            };
            self.hand_over(w.connect);
            self.requests += 1;
            actions.push(Action::Grant {
                waiter: w.token,
                grant,
            });
        }
        self.start_connects(now, &mut actions);
        if !self.limits.multiplexed {
            while self.ready.len() > self.limits.max_idle {
                let Some(id) = self.ready.pop_front() else {
                    break;
                };
                if let Some(handle) = self.take_for_closing(id) {
                    actions.push(Action::Close { conn: id, handle });
                }
            }
        }
        actions
    }

    /// The next ready connection, endpoints taking turns; HTTP/1.1 reuses an endpoint's most
    /// recently used idle connection.
    fn pick_ready(&mut self, now: Instant) -> Option<ConnId> {
        let n = self.counts.len();
        for k in 0..n {
            let e = (self.round_robin + k) % n;
            if !self.outliers.usable(e, now) {
                continue;
            }
            let found = self
                .ready
                .iter()
                .rev()
                .copied()
                .find(|id| self.conns.get(id).is_some_and(|c| c.endpoint == e));
            if found.is_some() {
                self.round_robin = e + 1;
                return found;
            }
        }
        None
    }

    /// A grant on ready connection `conn`: shared (HTTP/2) or taken (HTTP/1.1).
    fn take(&mut self, conn: ConnId) -> Option<Grant<C>> {
        let Some(c) = self.conns.get_mut(&conn) else {
            self.ready.retain(|r| *r != conn);
            return None;
        };
        let endpoint = c.endpoint;
        let shared = match &c.state {
            State::Ready(handle) if self.limits.multiplexed => handle.share(),
            State::Ready(_) => None,
            _ => {
                self.ready.retain(|r| *r != conn);
                return None;
            }
        };
        let handle = match shared {
            Some(handle) => handle,
            None => {
                // `pick_ready` found it searching from the newest end: look there first.
                if let Some(i) = self.ready.iter().rposition(|r| *r == conn) {
                    self.ready.remove(i);
                }
                match std::mem::replace(&mut c.state, State::Busy) {
                    State::Ready(handle) => handle,
                    _ => return None,
                }
            }
        };
        Some(Grant {
            conn,
            endpoint,
            handle,
        })
    }

    fn start_connects(&mut self, now: Instant, actions: &mut Vec<Action<C, W>>) {
        // Nobody waits: nothing to open. This is every dispatch of a warm pool (a request is
        // granted at once, a response ends), and what follows walks every connection.
        if self.queue.is_empty() {
            return;
        }
        if !self.any_established() {
            // A request that tried every endpoint and waited for the established connections
            // has none left to wait for: it tries afresh (and fails if that fails too).
            let stranded: Vec<bool> = self
                .queue
                .iter()
                .map(|w| !self.has_untried(w, now))
                .collect();
            for (w, stranded) in self.queue.iter_mut().zip(stranded) {
                if stranded {
                    w.tried.fill(false);
                }
            }
        }
        let grantable = self.limits.max_requests.saturating_sub(self.requests);
        if grantable == 0 {
            return;
        }
        if self.limits.multiplexed {
            for e in 0..self.counts.len() {
                let wanted = self.counts[e].open == 0
                    && self.outliers.usable(e, now)
                    && self.queue.iter().any(|w| !w.tried[e]);
                if wanted && self.room_for_connect(e) {
                    let conn = self.open_connection(e, None);
                    actions.push(Action::Connect { conn, endpoint: e });
                }
            }
            return;
        }
        // Connections finishing a request will serve as many waiting requests.
        let mut coming = self
            .conns
            .values()
            .filter(|c| matches!(c.state, State::Recycling))
            .count();
        for i in 0..self.queue.len().min(grantable) {
            if self.queue[i].connect.is_some() {
                continue;
            }
            if coming > 0 {
                coming -= 1;
                continue;
            }
            if self.total_open() >= self.limits.max_connections {
                break;
            }
            let Some(e) = self.pick_endpoint(i, now) else {
                continue;
            };
            let id = self.queue[i].id;
            let conn = self.open_connection(e, Some(id));
            self.queue[i].connect = Some(conn);
            actions.push(Action::Connect { conn, endpoint: e });
        }
    }

    /// The next endpoint (round-robin) for a connect on behalf of waiter `i`: in service, not
    /// tried by it, below `max_connecting`.
    fn pick_endpoint(&mut self, i: usize, now: Instant) -> Option<usize> {
        let n = self.counts.len();
        for k in 0..n {
            let e = (self.round_robin + k) % n;
            if !self.queue[i].tried[e] && self.outliers.usable(e, now) && self.room_for_connect(e) {
                self.round_robin = e + 1;
                return Some(e);
            }
        }
        None
    }

    fn room_for_connect(&self, endpoint: usize) -> bool {
        self.total_open() < self.limits.max_connections
            && self.counts[endpoint].connecting < self.limits.max_connecting
    }

    fn total_open(&self) -> usize {
        self.conns.len()
    }

    fn open_connection(&mut self, endpoint: usize, for_waiter: Option<WaiterId>) -> ConnId {
        let conn = self.next_id();
        self.conns.insert(
            conn,
            Conn {
                endpoint,
                state: State::Connecting { for_waiter },
            },
        );
        self.counts[endpoint].open += 1;
        self.counts[endpoint].connecting += 1;
        conn
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An HTTP/1.1 connection handle: exclusive.
    #[derive(Debug, PartialEq, Eq)]
    struct H1(u64);

    impl Handle for H1 {
        fn share(&self) -> Option<Self> {
            None
        }
    }

    /// An HTTP/2 connection handle: shared.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct H2(u64);

    impl Handle for H2 {
        fn share(&self) -> Option<Self> {
            Some(self.clone())
        }
    }

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_connecting: 8,
            max_pending: 1024,
            max_requests: 1024,
            max_idle: 64,
            multiplexed: false,
        }
    }

    fn outliers() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 2,
            ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
        }
    }

    /// A pool with the actions it asked for, sorted by kind, and the time.
    struct Sim<C: Handle> {
        pool: PoolState<C, u32>,
        now: Instant,
        grants: Vec<(u32, Grant<C>)>,
        failed: Vec<u32>,
        connects: Vec<(ConnId, usize)>,
        closed: Vec<ConnId>,
    }

    impl<C: Handle> Sim<C> {
        fn new(limits: Limits, endpoints: usize) -> Self {
            Self {
                pool: PoolState::new(limits, endpoints, outliers()),
                now: Instant::now(),
                grants: Vec::new(),
                failed: Vec::new(),
                connects: Vec::new(),
                closed: Vec::new(),
            }
        }

        fn absorb(&mut self, actions: Vec<Action<C, u32>>) {
            for a in actions {
                match a {
                    Action::Grant { waiter, grant } => self.grants.push((waiter, grant)),
                    Action::Fail { waiter } => self.failed.push(waiter),
                    Action::Connect { conn, endpoint } => self.connects.push((conn, endpoint)),
                    Action::Close { conn, .. } => self.closed.push(conn),
                }
            }
        }

        fn request(&mut self, token: u32) -> WaiterId {
            let (id, actions) = self
                .pool
                .checkout(token, self.now)
                .expect("room in the queue");
            self.absorb(actions);
            id
        }

        /// Completes the oldest connect in flight with `handle`.
        fn connect_ok(&mut self, handle: impl FnOnce(ConnId) -> C) -> ConnId {
            let (conn, _) = self.connects.remove(0);
            let actions = self.pool.connected(conn, handle(conn), self.now);
            self.absorb(actions);
            conn
        }

        fn connect_fail(&mut self) -> Option<Ejection> {
            let (conn, _) = self.connects.remove(0);
            let (actions, ejection) = self.pool.connect_failed(conn, self.now);
            self.absorb(actions);
            ejection
        }

        /// The tasks of the connections the pool closed report their sockets gone.
        fn sockets_gone(&mut self) {
            for conn in std::mem::take(&mut self.closed) {
                let actions = self.pool.closed(conn, self.now);
                self.absorb(actions);
            }
        }

        fn granted(&self) -> Vec<u32> {
            self.grants.iter().map(|(w, _)| *w).collect()
        }
    }

    impl Sim<H1> {
        /// The request holding the grant of `token` ends with a whole response; its connection
        /// comes back ready.
        fn complete(&mut self, token: u32) {
            let pos = self
                .grants
                .iter()
                .position(|(w, _)| *w == token)
                .expect("granted");
            let (_, grant) = self.grants.remove(pos);
            let actions = self.pool.finish(grant.conn, true, self.now);
            self.absorb(actions);
            let actions = self.pool.returned(grant.conn, grant.handle, self.now);
            self.absorb(actions);
        }
    }

    #[test]
    fn a_burst_waits_for_a_few_connections_and_is_served_in_order() {
        let mut sim = Sim::<H1>::new(limits(4), 1);
        for t in 0..200 {
            sim.request(t);
        }
        // Four connects for the demand, no more; the rest wait.
        assert_eq!(sim.connects.len(), 4);
        assert_eq!(sim.pool.pending(), 200);
        for _ in 0..4 {
            sim.connect_ok(H1);
        }
        assert_eq!(sim.granted(), [0, 1, 2, 3]);
        assert!(
            sim.connects.is_empty(),
            "at max_connections: no more connects"
        );
        // Each connection that comes back serves the next in line.
        let mut served = 4;
        while served < 200 {
            let token = sim.grants[0].0;
            sim.complete(token);
            served += 1;
            assert_eq!(sim.grants.last().map(|(w, _)| *w), Some(served - 1));
            assert_eq!(sim.pool.open(0), 4);
            assert!(sim.connects.is_empty());
        }
        for t in 196..200 {
            sim.complete(t);
        }
        assert_eq!(sim.pool.pending(), 0);
        assert_eq!(sim.pool.requests(), 0);
        assert_eq!(sim.pool.open(0), 4, "idle, kept for the next requests");
    }

    #[test]
    fn idle_connections_found_closed_are_forgotten_and_their_room_used() {
        let mut sim = Sim::<H1>::new(limits(2), 1);
        sim.request(0);
        sim.request(1);
        let a = sim.connect_ok(H1);
        let b = sim.connect_ok(H1);
        sim.complete(0);
        sim.complete(1);
        assert_eq!((sim.pool.ready(), sim.pool.open(0)), (2, 2));
        // Nothing is dead: nothing changes.
        let (left, actions) = sim.pool.prune(|_| false, sim.now);
        assert_eq!((left, actions.len()), (2, 0));
        // One idle connection is found closed: it is forgotten (no Close action: its handle
        // went with it), the other stays.
        let (left, actions) = sim.pool.prune(|h| h.0 == a, sim.now);
        sim.absorb(actions);
        assert_eq!((left, sim.pool.open(0)), (1, 1));
        assert!(sim.closed.is_empty());
        // Two requests: the idle one takes one, and there is room to connect for the other.
        sim.request(2);
        sim.request(3);
        assert_eq!(sim.grants.last().map(|(w, g)| (*w, g.conn)), Some((2, b)));
        assert_eq!(sim.connects.len(), 1, "room for a new connection");
    }

    #[test]
    fn connects_in_flight_are_bounded_per_endpoint() {
        let mut l = limits(100);
        l.max_connecting = 3;
        let mut sim = Sim::<H1>::new(l, 1);
        for t in 0..10 {
            sim.request(t);
        }
        assert_eq!(sim.connects.len(), 3);
        // A connect that completes serves the oldest request and makes room for one more.
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [0]);
        assert_eq!(sim.connects.len(), 3);
    }

    #[test]
    fn a_freed_connection_goes_to_the_oldest_request_not_to_its_own_connect() {
        let mut sim = Sim::<H1>::new(limits(2), 1);
        sim.request(0);
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [0]);
        sim.request(1); // a connect on its behalf
        assert_eq!(sim.connects.len(), 1);
        sim.request(2); // at max_connections: waits
        assert_eq!(sim.connects.len(), 1);
        sim.complete(0);
        assert_eq!(sim.granted(), [1], "the idle connection serves the oldest");
        // The connect opened for 1 now serves 2.
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [1, 2]);
        assert_eq!(sim.pool.open(0), 2);
    }

    #[test]
    fn the_queue_is_bounded_and_leaving_it_frees_a_place() {
        let mut l = limits(1);
        l.max_pending = 3;
        let mut sim = Sim::<H1>::new(l, 1);
        let ids: Vec<WaiterId> = (0..3).map(|t| sim.request(t)).collect();
        assert_eq!(sim.pool.checkout(3, sim.now).err(), Some(QueueFull));
        // The request the connect was opened for times out: the connect passes to the next.
        let actions = sim.pool.cancel(ids[0], sim.now);
        sim.absorb(actions);
        assert_eq!(sim.connects.len(), 1, "no second connect");
        sim.request(3);
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [1]);
        // Cancelling a request that was served already changes nothing.
        assert!(sim.pool.cancel(ids[1], sim.now).is_empty());
    }

    #[test]
    fn max_requests_bounds_requests_in_flight() {
        let mut l = limits(10);
        l.max_requests = 2;
        let mut sim = Sim::<H1>::new(l, 1);
        for t in 0..5 {
            sim.request(t);
        }
        assert_eq!(
            sim.connects.len(),
            2,
            "connects only for requests that could run"
        );
        sim.connect_ok(H1);
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [0, 1]);
        sim.complete(0);
        assert_eq!(sim.granted(), [1, 2]);
        assert_eq!(sim.pool.requests(), 2);
    }

    #[test]
    fn an_abandoned_request_closes_its_connection() {
        let mut sim = Sim::<H1>::new(limits(4), 1);
        sim.request(0);
        sim.connect_ok(H1);
        let (_, grant) = sim.grants.remove(0);
        let actions = sim.pool.finish(grant.conn, false, sim.now);
        sim.absorb(actions);
        assert_eq!(
            sim.pool.open(0),
            1,
            "closing: counted until its socket is gone"
        );
        assert_eq!(sim.pool.requests(), 0);
        // Were it returned anyway, it is closed, not pooled.
        let actions = sim.pool.returned(grant.conn, grant.handle, sim.now);
        assert!(matches!(actions[..], [Action::Close { .. }]));
        let actions = sim.pool.closed(grant.conn, sim.now);
        sim.absorb(actions);
        assert_eq!(sim.pool.open(0), 0);
    }

    #[test]
    fn an_unused_grant_comes_back_ready() {
        let mut sim = Sim::<H1>::new(limits(1), 1);
        sim.request(0);
        sim.connect_ok(H1);
        sim.request(1);
        let (_, grant) = sim.grants.remove(0);
        let actions = sim.pool.give_back(grant, sim.now);
        sim.absorb(actions);
        assert_eq!(sim.granted(), [1]);
        assert!(sim.connects.is_empty());
    }

    #[test]
    fn idle_connections_beyond_max_idle_are_closed() {
        let mut l = limits(10);
        l.max_idle = 1;
        let mut sim = Sim::<H1>::new(l, 1);
        for t in 0..3 {
            sim.request(t);
        }
        for _ in 0..3 {
            sim.connect_ok(H1);
        }
        for t in 0..3 {
            sim.complete(t);
        }
        assert_eq!(sim.closed.len(), 2);
        assert_eq!(sim.pool.open(0), 3, "counted until their sockets are gone");
        sim.sockets_gone();
        assert_eq!(sim.pool.open(0), 1);
    }

    #[test]
    fn a_closing_connection_counts_against_max_connections_until_its_socket_is_gone() {
        let mut sim = Sim::<H1>::new(limits(2), 1);
        for t in 0..3 {
            sim.request(t);
        }
        sim.connect_ok(H1);
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [0, 1]);
        // Request 0 is abandoned: its connection is closed, never reused.
        let (_, grant) = sim.grants.remove(0);
        let actions = sim.pool.finish(grant.conn, false, sim.now);
        sim.absorb(actions);
        assert!(
            sim.connects.is_empty(),
            "no third socket while the closed one may still be open"
        );
        assert_eq!(sim.pool.open(0), 2);
        let actions = sim.pool.closed(grant.conn, sim.now);
        sim.absorb(actions);
        assert_eq!(sim.connects.len(), 1, "its place is taken once it is gone");
        sim.connect_ok(H1);
        assert_eq!(sim.granted(), [1, 2]);
    }

    #[test]
    fn a_failed_connect_tries_the_other_endpoint_then_fails_the_request() {
        let mut sim = Sim::<H1>::new(limits(10), 2);
        sim.request(0);
        assert_eq!(sim.connects[0].1, 0);
        assert_eq!(sim.connect_fail(), None);
        assert!(sim.failed.is_empty());
        assert_eq!(sim.connects[0].1, 1, "retried on the other endpoint");
        sim.connect_fail();
        assert_eq!(sim.failed, [0], "nothing left to try");
        assert_eq!(sim.pool.pending(), 0);
    }

    #[test]
    fn a_failed_connect_waits_for_connections_that_exist() {
        let mut sim = Sim::<H1>::new(limits(10), 1);
        sim.request(0);
        sim.connect_ok(H1);
        sim.request(1);
        sim.connect_fail();
        assert!(sim.failed.is_empty(), "a busy connection will free up");
        assert!(sim.connects.is_empty(), "and the endpoint is not hammered");
        sim.complete(0);
        assert_eq!(sim.granted(), [1]);
    }

    #[test]
    fn with_no_connection_left_a_waiting_request_tries_again() {
        let mut sim = Sim::<H1>::new(limits(10), 1);
        sim.request(0);
        sim.connect_ok(H1);
        sim.request(1);
        sim.connect_fail();
        assert!(sim.connects.is_empty());
        // The busy connection dies: request 1 gets a fresh connect, not an endless wait.
        let (_, grant) = sim.grants.remove(0);
        let actions = sim.pool.finish(grant.conn, false, sim.now);
        sim.absorb(actions);
        assert_eq!(sim.connects.len(), 1);
        sim.connect_fail();
        assert_eq!(sim.failed, [1]);
    }

    #[test]
    fn an_ejected_endpoint_gets_no_traffic_until_its_time_is_up() {
        let mut sim = Sim::<H1>::new(limits(10), 2);
        // Requests stay in flight, so each needs a connection of its own; endpoint 0 refuses
        // (consecutive_failures: 2).
        let mut ejection = None;
        for t in 0..6 {
            sim.request(t);
            while let Some(&(_, e)) = sim.connects.first() {
                if e == 0 {
                    ejection = ejection.or(sim.connect_fail());
                } else {
                    sim.connect_ok(H1);
                }
            }
        }
        let ejection = ejection.expect("endpoint 0 ejected");
        assert_eq!(ejection.endpoint, 0);
        assert!(sim.failed.is_empty(), "every request went on to endpoint 1");
        assert_eq!(sim.granted(), [0, 1, 2, 3, 4, 5]);
        assert!(sim.grants.iter().all(|(_, g)| g.endpoint == 1));
        assert_eq!((sim.pool.open(0), sim.pool.open(1)), (0, 6));
        // Back in service once the ejection is over: the endpoints take turns again.
        sim.now += ejection.duration;
        sim.request(6);
        sim.request(7);
        let endpoints: Vec<usize> = sim.connects.iter().map(|(_, e)| *e).collect();
        assert!(endpoints.contains(&0), "{endpoints:?}");
    }

    #[test]
    fn a_refusing_endpoint_fails_each_request_once_without_spinning() {
        let mut sim = Sim::<H1>::new(limits(100), 1);
        for t in 0..20 {
            sim.request(t);
        }
        assert_eq!(sim.connects.len(), 8, "max_connecting");
        let mut attempts = 0;
        while !sim.connects.is_empty() {
            sim.connect_fail();
            attempts += 1;
            assert!(attempts <= 20, "spinning");
        }
        assert_eq!(attempts, 20);
        assert_eq!(sim.failed.len(), 20);
        assert_eq!(sim.pool.pending(), 0);
    }

    #[test]
    fn connections_never_outnumber_the_requests_that_need_them() {
        // Random interleavings of arrivals, connects completing or failing, requests ending
        // and leaving the queue: never more connections than requests in flight or waiting,
        // plus the idle ones.
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut sim = Sim::<H1>::new(limits(1024), 2);
            let mut waiting: Vec<WaiterId> = Vec::new();
            let mut next = 0;
            for _ in 0..400 {
                match rng.u8(0..10) {
                    0..=3 => {
                        waiting.push(sim.request(next));
                        next += 1;
                    }
                    4..=5 if !sim.connects.is_empty() => {
                        let i = rng.usize(0..sim.connects.len());
                        let (conn, _) = sim.connects.remove(i);
                        let actions = sim.pool.connected(conn, H1(conn), sim.now);
                        sim.absorb(actions);
                    }
                    6 if !sim.connects.is_empty() => {
                        let i = rng.usize(0..sim.connects.len());
                        let (conn, _) = sim.connects.remove(i);
                        let (actions, _) = sim.pool.connect_failed(conn, sim.now);
                        sim.absorb(actions);
                    }
                    7 if !sim.grants.is_empty() => {
                        let token = sim.grants[rng.usize(0..sim.grants.len())].0;
                        sim.complete(token);
                    }
                    8 if !waiting.is_empty() => {
                        let id = waiting.swap_remove(rng.usize(0..waiting.len()));
                        let actions = sim.pool.cancel(id, sim.now);
                        sim.absorb(actions);
                    }
                    9 => sim.sockets_gone(),
                    _ => {}
                }
                let open = sim.pool.open(0) + sim.pool.open(1);
                let idle = sim.pool.ready.len();
                let demand = sim.pool.pending() + sim.pool.requests();
                // Connections finishing a request, and connects whose request left without
                // an heir, become idle connections.
                let spare = sim
                    .pool
                    .conns
                    .values()
                    .filter(|c| {
                        matches!(
                            c.state,
                            State::Recycling
                                | State::Closing
                                | State::Connecting { for_waiter: None }
                        )
                    })
                    .count();
                assert!(
                    open <= demand + idle + spare,
                    "seed {seed}: {open} open for {demand} requests, {idle} idle, {spare} spare"
                );
                assert_eq!(sim.pool.requests(), sim.grants.len(), "seed {seed}");
            }
        }
    }

    #[test]
    fn endpoints_take_turns() {
        let mut sim = Sim::<H1>::new(limits(10), 3);
        for t in 0..6 {
            sim.request(t);
        }
        let endpoints: Vec<usize> = sim.connects.iter().map(|(_, e)| *e).collect();
        assert_eq!(endpoints, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn http2_opens_one_connection_per_endpoint_and_shares_it() {
        let mut l = limits(10);
        l.multiplexed = true;
        l.max_requests = 150;
        let mut sim = Sim::<H2>::new(l, 2);
        for t in 0..200 {
            sim.request(t);
        }
        assert_eq!(sim.connects.len(), 2, "one per endpoint");
        sim.connect_ok(H2);
        assert_eq!(sim.grants.len(), 150, "max_requests streams at once");
        sim.connect_ok(H2);
        assert_eq!(sim.grants.len(), 150);
        // Each freed slot goes to the next request, the two connections taking turns.
        for i in 0..2 {
            let actions = sim.pool.finish(sim.grants[i].1.conn, true, sim.now);
            sim.absorb(actions);
        }
        assert_eq!(sim.grants.len(), 152);
        assert_ne!(sim.grants[150].1.conn, sim.grants[151].1.conn);
        assert!(sim.connects.is_empty());
    }

    #[test]
    fn http2_connect_failures_fail_every_waiting_request() {
        let mut l = limits(10);
        l.multiplexed = true;
        let mut sim = Sim::<H2>::new(l, 1);
        for t in 0..3 {
            sim.request(t);
        }
        sim.connect_fail();
        assert_eq!(sim.failed, [0, 1, 2]);
        // The next request tries again.
        sim.request(3);
        assert_eq!(sim.connects.len(), 1);
    }
}
