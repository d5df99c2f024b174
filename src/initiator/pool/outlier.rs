//! Outlier ejection for a local cluster's endpoints, pure (time comes in as `now`).
//!
//! Envoy's `consecutive_gateway_failure` detector in small: an endpoint that fails
//! `consecutive_failures` times in a row (a connect that fails, a request that breaks before
//! its response head) is ejected for `ejection_time`, doubled on each ejection in a row up to
//! `max_ejection_time`; a response head resets both counts. An ejected endpoint gets no new
//! connections and no requests until its time is up; it then gets traffic again (and is
//! ejected again, for longer, if it keeps failing). The last endpoint in service is never
//! ejected (the spirit of Envoy's `max_ejection_percent`: ejecting it would turn a sick service
//! into no service), so failures there only count.

use std::time::{Duration, Instant};

/// When to eject (`clusters.NAME.consecutive_failures`, `ejection_time`, `max_ejection_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierSettings {
    pub consecutive_failures: u32,
    pub ejection_time: Duration,
    pub max_ejection_time: Duration,
}

/// An endpoint taken out of service by a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub endpoint: usize,
    /// How long it is out.
    pub duration: Duration,
    /// Ejections in a row, this one included.
    pub times: u32,
}

#[derive(Debug, Clone, Default)]
struct Health {
    failures: u32,
    ejected_until: Option<Instant>,
    /// Ejections in a row without a success in between.
    ejections: u32,
}

/// The health of each endpoint of one cluster on one shard.
#[derive(Debug, Clone)]
pub struct Outliers {
    settings: OutlierSettings,
    endpoints: Vec<Health>,
}

impl Outliers {
    pub fn new(endpoints: usize, settings: OutlierSettings) -> Self {
        Self {
            settings,
            endpoints: vec![Health::default(); endpoints],
        }
    }

    /// Whether `endpoint` may take traffic at `now`.
    pub fn usable(&self, endpoint: usize, now: Instant) -> bool {
        self.endpoints
            .get(endpoint)
            .is_some_and(|h| h.ejected_until.is_none_or(|until| until <= now))
    }

    /// Endpoints in service at `now`.
    #[cfg(test)]
    pub fn usable_count(&self, now: Instant) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.usable(i, now))
            .count()
    }

    /// A response head from `endpoint`: its failures, and its ejections in a row, are forgiven.
    pub fn success(&mut self, endpoint: usize) {
        if let Some(h) = self.endpoints.get_mut(endpoint) {
            h.failures = 0;
            h.ejections = 0;
        }
    }

    /// A failure of `endpoint` at `now`; `Some` when it ejects the endpoint.
    pub fn failure(&mut self, endpoint: usize, now: Instant) -> Option<Ejection> {
        let usable_others = (0..self.endpoints.len())
            .filter(|&i| i != endpoint && self.usable(i, now))
            .count();
        let settings = self.settings;
        let h = self.endpoints.get_mut(endpoint)?;
        if h.ejected_until.is_some_and(|until| until > now) {
            // Already out: late failures of connections opened before the ejection.
            return None;
        }
        h.ejected_until = None;
        h.failures = h.failures.saturating_add(1);
        if h.failures < settings.consecutive_failures || usable_others == 0 {
            return None;
        }
        h.failures = 0;
        h.ejections = h.ejections.saturating_add(1);
        let duration = ejection_duration(settings, h.ejections);
        h.ejected_until = Some(now + duration);
        Some(Ejection {
            endpoint,
            duration,
            times: h.ejections,
        })
    }
}

/// `ejection_time` doubled for each earlier ejection in a row, at most `max_ejection_time`
/// (and never below `ejection_time`).
fn ejection_duration(settings: OutlierSettings, times: u32) -> Duration {
    let cap = settings.max_ejection_time.max(settings.ejection_time);
    let factor = 1u32
        .checked_shl(times.saturating_sub(1))
        .unwrap_or(u32::MAX);
    settings
        .ejection_time
        .checked_mul(factor)
        .map_or(cap, |d| d.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_forgives() {
        let now = Instant::now();
        let mut o = Outliers::new(2, settings());
        assert_eq!(o.failure(0, now), None);
        assert_eq!(o.failure(0, now), None);
        o.success(0);
        assert_eq!(o.failure(0, now), None);
        assert_eq!(o.failure(0, now), None);
        let ejection = o.failure(0, now).expect("third failure in a row ejects");
        assert_eq!(ejection.duration, Duration::from_secs(30));
        assert_eq!(ejection.times, 1);
        assert!(!o.usable(0, now));
        assert!(o.usable(1, now));
        assert_eq!(o.usable_count(now), 1);
        // Failures while out are late news: nothing changes.
        assert_eq!(o.failure(0, now), None);
        assert!(o.usable(0, now + Duration::from_secs(30)));
    }

    #[test]
    fn ejections_in_a_row_double_up_to_the_cap() {
        let mut now = Instant::now();
        let mut o = Outliers::new(2, settings());
        let mut durations = Vec::new();
        for _ in 0..4 {
            let mut ejected = None;
            for _ in 0..3 {
                ejected = o.failure(0, now);
            }
            let e = ejected.expect("ejected");
            durations.push(e.duration.as_secs());
            now += e.duration;
        }
        assert_eq!(durations, [30, 60, 100, 100]);
        // A success resets the doubling.
        o.success(0);
        for _ in 0..2 {
            assert_eq!(o.failure(0, now), None);
        }
        assert_eq!(o.failure(0, now).map(|e| e.duration.as_secs()), Some(30));
    }

    #[test]
    fn the_last_endpoint_in_service_is_never_ejected() {
        let now = Instant::now();
        let mut single = Outliers::new(1, settings());
        for _ in 0..10 {
            assert_eq!(single.failure(0, now), None);
        }
        assert!(single.usable(0, now));

        let mut two = Outliers::new(2, settings());
        for _ in 0..3 {
            two.failure(1, now);
        }
        assert!(!two.usable(1, now));
        for _ in 0..10 {
            assert_eq!(two.failure(0, now), None, "endpoint 1 is out: 0 must stay");
        }
        assert!(two.usable(0, now));
        assert_eq!(two.usable_count(now), 1);
    }

    #[test]
    fn a_cap_below_the_first_ejection_is_the_first_ejection() {
        let s = OutlierSettings {
            max_ejection_time: Duration::from_secs(1),
            ..settings()
        };
        assert_eq!(ejection_duration(s, 1), Duration::from_secs(30));
        assert_eq!(ejection_duration(s, 40), Duration::from_secs(30));
        assert_eq!(ejection_duration(settings(), 40), Duration::from_secs(100));
    }
}
