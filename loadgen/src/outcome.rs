//! What happened to one request: success or an error of a given kind, the counts of
//! each kind, and the mapping from hyper/io errors to kinds.

use std::error::Error as StdError;
use std::io;

use serde::Serialize;

/// Kinds of failed requests reported in the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Could not open the TCP connection (or the HTTP/2 handshake failed).
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection or stream was closed/reset before the response completed.
    Reset,
    /// Response status 400..=499.
    Status4xx,
    /// Response status 500..=599.
    Status5xx,
    /// Anything else (protocol errors, unexpected statuses such as 1xx finals).
    Other,
}

/// Error counts by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    pub connect: u64,
    pub timeout: u64,
    pub reset: u64,
    #[serde(rename = "4xx")]
    pub status_4xx: u64,
    #[serde(rename = "5xx")]
    pub status_5xx: u64,
    pub other: u64,
}

impl ErrorCounts {
    pub fn add(&mut self, kind: ErrorKind) {
        let slot = match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Timeout => &mut self.timeout,
            ErrorKind::Reset => &mut self.reset,
            ErrorKind::Status4xx => &mut self.status_4xx,
            ErrorKind::Status5xx => &mut self.status_5xx,
            ErrorKind::Other => &mut self.other,
        };
        *slot += 1;
    }

    pub fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.status_4xx += o.status_4xx;
        self.status_5xx += o.status_5xx;
        self.other += o.other;
    }

    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.status_4xx + self.status_5xx + self.other
    }

    /// `connect 0, timeout 0, reset 0, 4xx 3, 5xx 0, other 0`: the kinds in report order.
    pub fn describe(&self) -> String {
        let kinds: Vec<String> = self
            .by_kind()
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        kinds.join(", ")
    }

    /// `(label, count)` pairs in report order.
    pub fn by_kind(&self) -> [(&'static str, u64); 6] {
        [
            ("connect", self.connect),
            ("timeout", self.timeout),
            ("reset", self.reset),
            ("4xx", self.status_4xx),
            ("5xx", self.status_5xx),
            ("other", self.other),
        ]
    }
}

/// How many failed requests a run may have and still succeed (`--max-errors`): a count, or
/// a share of the measured requests (rounded down).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorBudget {
    Count(u64),
    Percent(f64),
}

impl ErrorBudget {
    /// Parses `N` or `P%` (0 ≤ P ≤ 100).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "invalid --max-errors {s:?} (expected a count such as 10 or a share such as 0.5%)"
            )
        };
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                match (0.0..=100.0).contains(&p) {
                    true => Ok(ErrorBudget::Percent(p)),
                    false => Err(bad()),
                }
            }
            None => s.parse().map(ErrorBudget::Count).map_err(|_| bad()),
        }
    }

    /// The most failures allowed among `requests`.
    pub fn allowed(self, requests: u64) -> u64 {
        match self {
            ErrorBudget::Count(n) => n,
            ErrorBudget::Percent(p) => (requests as f64 * p / 100.0).floor() as u64,
        }
    }
}

impl std::fmt::Display for ErrorBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorBudget::Count(n) => write!(f, "{n}"),
            ErrorBudget::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Classifies a response status: None for success (1xx-3xx), else the error kind.
pub fn classify_status(status: http::StatusCode) -> Option<ErrorKind> {
    match status.as_u16() {
        400..=499 => Some(ErrorKind::Status4xx),
        500..=599 => Some(ErrorKind::Status5xx),
        200..=399 => None,
        _ => Some(ErrorKind::Other),
    }
}

/// Classifies a hyper error from sending a request or reading its response.
pub fn classify_hyper(err: &hyper::Error) -> ErrorKind {
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_incomplete_message() || err.is_closed() || err.is_canceled() {
        return ErrorKind::Reset;
    }
    classify_source(err.source())
}

fn classify_source(mut source: Option<&(dyn StdError + 'static)>) -> ErrorKind {
    while let Some(e) = source {
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            return classify_io(ioe);
        }
        if let Some(h2e) = e.downcast_ref::<h2::Error>() {
            return crate::h2_client::classify_h2(h2e);
        }
        source = e.source();
    }
    ErrorKind::Other
}

/// Classifies an I/O error seen on an established connection.
pub fn classify_io(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::NotConnected => ErrorKind::Reset,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
}

/// Describes an I/O error for humans, without Rust's " (os error N)" suffix:
/// "Connection refused".
pub fn describe_io_error(err: &io::Error) -> String {
    let s = err.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind() {
        let mut c = ErrorCounts::default();
        c.add(ErrorKind::Connect);
        c.add(ErrorKind::Status5xx);
        c.add(ErrorKind::Status5xx);
        let mut d = ErrorCounts::default();
        d.add(ErrorKind::Timeout);
        c.merge(&d);
        assert_eq!(c.total(), 4);
        assert_eq!(c.status_5xx, 2);
        let json = serde_json::to_value(c).expect("serializes");
        assert_eq!(json["5xx"], 2);
        assert_eq!(json["timeout"], 1);
    }

    #[test]
    fn error_budgets() {
        assert_eq!(ErrorBudget::parse("0"), Ok(ErrorBudget::Count(0)));
        assert_eq!(ErrorBudget::parse("25"), Ok(ErrorBudget::Count(25)));
        assert_eq!(ErrorBudget::parse("1%"), Ok(ErrorBudget::Percent(1.0)));
        assert_eq!(ErrorBudget::parse("0.5 %"), Ok(ErrorBudget::Percent(0.5)));
        for bad in ["", "-1", "x", "101%", "-1%", "nan%", "1.5"] {
            assert!(ErrorBudget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ErrorBudget::Count(3).allowed(1_000_000), 3);
        assert_eq!(ErrorBudget::Percent(1.0).allowed(250), 2);
        assert_eq!(ErrorBudget::Percent(1.0).allowed(99), 0);
        assert_eq!(ErrorBudget::Percent(100.0).allowed(7), 7);
        assert_eq!(ErrorBudget::Percent(0.5).to_string(), "0.5%");
    }

    #[test]
    fn status_classes() {
        assert_eq!(classify_status(http::StatusCode::OK), None);
        assert_eq!(classify_status(http::StatusCode::FOUND), None);
        assert_eq!(
            classify_status(http::StatusCode::NOT_FOUND),
            Some(ErrorKind::Status4xx)
        );
        assert_eq!(
            classify_status(http::StatusCode::BAD_GATEWAY),
            Some(ErrorKind::Status5xx)
        );
    }

    #[test]
    fn io_errors() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(describe_io_error(&e), "Connection refused");
        assert_eq!(
            classify_io(&io::Error::from(io::ErrorKind::ConnectionReset)),
            ErrorKind::Reset
        );
    }
}
