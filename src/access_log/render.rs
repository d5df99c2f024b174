//! Turns a finished request, or a tunnel event, into one access log line.
//!
//! A line is always exactly one line: in JSON every string is escaped by `serde_json`; in a
//! format string every value is escaped here (`"`, `\`, control bytes and non-ASCII bytes as
//! `\"`, `\\`, `\n`, `\xNN`), so no header a client sends can end a line or a quoted field
//! early. Missing values are `null` in JSON and `-` in a format string, as Envoy prints them.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, Version};

use super::format::{Format, Operator, Piece, ReqHeader, ReqName};
use crate::pipeline::RequestCtx;

/// What phase 1 captured of the request for the access log, in the layout the access log stage
/// writes into `RequestCtx::captured`: the authority first, then the format's headers in
/// [`Format::headers`] order.
pub struct Captured<'a> {
    pub names: &'a [HeaderName],
    pub values: &'a [Option<HeaderValue>],
}

impl Captured<'_> {
    fn authority(&self) -> Option<&HeaderValue> {
        self.values.first().and_then(Option::as_ref)
    }

    fn header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        let i = self.names.iter().position(|n| n == name)?;
        self.values.get(i + 1).and_then(Option::as_ref)
    }
}

/// The status the log reports: the response's, else the failure's (a request cancelled before
/// its head is a 499).
fn status(ctx: &RequestCtx) -> Option<u16> {
    ctx.outcome
        .status
        .map(|s| s.as_u16())
        .or_else(|| ctx.outcome.failure.as_ref().map(|f| f.status().as_u16()))
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// When the request head arrived, on the wall clock.
fn start_time(ctx: &RequestCtx, now: SystemTime) -> SystemTime {
    now.checked_sub(ctx.duration()).unwrap_or(now)
}

/// One request's line (without the newline).
pub fn request_line(
    format: &Format,
    captured: &Captured<'_>,
    ctx: &RequestCtx,
    now: SystemTime,
) -> String {
    match format {
        Format::Json => request_json(captured, ctx, now),
        Format::Template(pieces) => {
            let mut out = String::with_capacity(256);
            for piece in pieces {
                match piece {
                    Piece::Literal(text) => out.push_str(text),
                    Piece::Op(op) => operator(&mut out, op, captured, ctx, now),
                }
            }
            out
        }
    }
}

fn operator(
    out: &mut String,
    op: &Operator,
    captured: &Captured<'_>,
    ctx: &RequestCtx,
    now: SystemTime,
) {
    let number = |out: &mut String, n: Option<u64>| match n {
        Some(n) => {
            let _ = write!(out, "{n}");
        }
        None => out.push('-'),
    };
    let text = |out: &mut String, s: Option<&str>| escape_text(out, s.map(str::as_bytes), None);
    match op {
        Operator::StartTime => out.push_str(&rfc3339_millis(start_time(ctx, now))),
        Operator::Req(req) => escape_text(out, req_value(req, captured, ctx), req.max_len),
        Operator::ResponseCode => number(out, status(ctx).map(u64::from)),
        Operator::ResponseFlags => out.push_str(ctx.failure_label()),
        Operator::Duration => number(out, Some(ctx.duration().as_millis() as u64)),
        Operator::BytesReceived => number(out, Some(ctx.outcome.request_body.bytes())),
        Operator::BytesSent => number(out, Some(ctx.outcome.bytes_sent)),
        Operator::Protocol => out.push_str(protocol(ctx.version)),
        Operator::DownstreamRemoteAddress => match ctx.peer {
            Some(peer) => {
                let _ = write!(out, "{peer}");
            }
            None => out.push('-'),
        },
        Operator::HostId => text(out, ctx.host_id.as_deref()),
        Operator::Tenant => text(out, ctx.tenant.as_deref()),
        Operator::TunnelId => number(out, ctx.tunnel_id),
        Operator::Shard => number(out, Some(ctx.shard as u64)),
        Operator::RequestId => text(out, Some(ctx.request_id.as_str())),
        Operator::Listener => out.push_str(ctx.role.label()),
        Operator::Cluster => text(out, ctx.cluster.as_deref()),
    }
}

fn req_value<'a>(
    req: &ReqHeader,
    captured: &'a Captured<'_>,
    ctx: &'a RequestCtx,
) -> Option<&'a [u8]> {
    let one = |name: &ReqName| -> Option<&'a [u8]> {
        match name {
            ReqName::Method => Some(ctx.method.as_str().as_bytes()),
            ReqName::Path => Some(ctx.path.as_str().as_bytes()),
            ReqName::Scheme => Some(ctx.scheme.as_str().as_bytes()),
            ReqName::Authority => captured.authority().map(HeaderValue::as_bytes),
            ReqName::Header(h) => captured.header(h).map(HeaderValue::as_bytes),
        }
    };
    one(&req.name).or_else(|| req.alternative.as_ref().and_then(one))
}

/// Appends `value` escaped so that it cannot end the line or a quoted field; `-` when absent.
fn escape_text(out: &mut String, value: Option<&[u8]>, max_len: Option<usize>) {
    let Some(value) = value else {
        return out.push('-');
    };
    let value = &value[..max_len.map_or(value.len(), |m| m.min(value.len()))];
    for &b in value {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// A JSON object written key by key, in a fixed order.
struct JsonLine(String);

impl JsonLine {
    fn new() -> Self {
        JsonLine(String::with_capacity(512))
    }

    fn key(&mut self, key: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    fn str(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            // Serializing a str cannot fail.
            Some(v) => self
                .0
                .push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".into())),
            None => self.0.push_str("null"),
        }
    }

    fn bytes(&mut self, key: &str, value: Option<&[u8]>) {
        self.str(key, value.map(String::from_utf8_lossy).as_deref());
    }

    fn num(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(n) => {
                let _ = write!(self.0, "{n}");
            }
            None => self.0.push_str("null"),
        }
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

fn request_json(captured: &Captured<'_>, ctx: &RequestCtx, now: SystemTime) -> String {
    let mut j = JsonLine::new();
    j.str("event", Some("request"));
    j.str("start_time", Some(&rfc3339_millis(start_time(ctx, now))));
    j.str("listener", Some(ctx.role.label()));
    j.str("request_id", Some(ctx.request_id.as_str()));
    j.str("method", Some(ctx.method.as_str()));
    j.str("path", Some(ctx.path.as_str()));
    j.bytes("authority", captured.authority().map(HeaderValue::as_bytes));
    j.str("protocol", Some(protocol(ctx.version)));
    j.num("status", status(ctx).map(u64::from));
    j.str("response_flags", Some(ctx.failure_label()));
    j.num("duration_ms", Some(ctx.duration().as_millis() as u64));
    j.num("bytes_received", Some(ctx.outcome.request_body.bytes()));
    j.num("bytes_sent", Some(ctx.outcome.bytes_sent));
    j.str(
        "downstream_remote_address",
        ctx.peer.map(|p| p.to_string()).as_deref(),
    );
    j.str("host_id", ctx.host_id.as_deref());
    j.str("tenant", ctx.tenant.as_deref());
    j.num("tunnel_id", ctx.tunnel_id);
    j.str("cluster", ctx.cluster.as_deref());
    j.num("shard", Some(ctx.shard as u64));
    j.bytes(
        "user_agent",
        captured
            .header(&http::header::USER_AGENT)
            .map(HeaderValue::as_bytes),
    );
    j.finish()
}

/// What happened to a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEventKind {
    /// Responder: a tunnel was accepted and registered.
    Opened,
    /// Responder: a tunnel's TLS or handshake was refused.
    Rejected,
    /// Responder: a registered tunnel ended.
    Closed,
    /// Initiator: a dialed tunnel is up.
    Up,
    /// Initiator: a dialed tunnel ended.
    Down,
}

impl TunnelEventKind {
    pub fn label(&self) -> &'static str {
        match self {
            TunnelEventKind::Opened => "tunnel_opened",
            TunnelEventKind::Rejected => "tunnel_rejected",
            TunnelEventKind::Closed => "tunnel_closed",
            TunnelEventKind::Up => "tunnel_up",
            TunnelEventKind::Down => "tunnel_down",
        }
    }
}

/// One tunnel event; absent facts are `null` / `-`.
#[derive(Debug, Clone, Default)]
pub struct TunnelEvent<'a> {
    pub kind: Option<TunnelEventKind>,
    pub tunnel_id: Option<u64>,
    pub node: Option<&'a str>,
    pub cluster: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// Responder: the initiator's address; initiator: the responder's.
    pub peer: Option<SocketAddr>,
    /// Rejected: the `Rejection` label or the TLS failure class; closed/down: the `End` label.
    pub reason: Option<&'a str>,
    /// Rejected: the status answered (none for a TLS failure).
    pub status: Option<u16>,
    /// Closed/down: how long the tunnel lived.
    pub duration: Option<Duration>,
}

impl TunnelEvent<'_> {
    /// The event's line (without the newline): JSON, or for a format string a fixed readable
    /// line (`[time] event key=value …`).
    pub fn line(&self, format: &Format, shard: usize, now: SystemTime) -> String {
        let event = self.kind.map_or("tunnel", |k| k.label());
        let peer = self.peer.map(|p| p.to_string());
        let duration = self.duration.map(|d| d.as_millis() as u64);
        match format {
            Format::Json => {
                let mut j = JsonLine::new();
                j.str("event", Some(event));
                j.str("time", Some(&rfc3339_millis(now)));
                j.num("tunnel_id", self.tunnel_id);
                j.str("node", self.node);
                j.str("cluster", self.cluster);
                j.str("tenant", self.tenant);
                j.str("peer", peer.as_deref());
                j.num("shard", Some(shard as u64));
                j.str("reason", self.reason);
                j.num("status", self.status.map(u64::from));
                j.num("duration_ms", duration);
                j.finish()
            }
            Format::Template(_) => {
                let mut out = format!("[{}] {event}", rfc3339_millis(now));
                let fields: [(&str, Option<String>); 9] = [
                    ("tunnel_id", self.tunnel_id.map(|n| n.to_string())),
                    ("node", self.node.map(str::to_owned)),
                    ("cluster", self.cluster.map(str::to_owned)),
                    ("tenant", self.tenant.map(str::to_owned)),
                    ("peer", peer),
                    ("shard", Some(shard.to_string())),
                    ("reason", self.reason.map(str::to_owned)),
                    ("status", self.status.map(|s| s.to_string())),
                    ("duration_ms", duration.map(|d| d.to_string())),
                ];
                for (key, value) in fields {
                    out.push(' ');
                    out.push_str(key);
                    out.push('=');
                    escape_text(&mut out, value.as_deref().map(str::as_bytes), None);
                }
                out
            }
        }
    }
}

/// `2026-11-23T08:24:00.123Z`, as Envoy's `%START_TIME%` prints by default.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{ProxyError, Role};
    use http::StatusCode;

    fn ctx(headers: &[(&str, &[u8])]) -> (RequestCtx, Vec<Option<HeaderValue>>) {
        let mut req = http::Request::get("/p?q=1").version(Version::HTTP_11);
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_bytes(v).unwrap());
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        let peer = Some("10.0.0.7:5555".parse().unwrap());
        let ctx = RequestCtx::new(Role::Egress, 3, peer, &parts, false);
        let authority = parts.headers.get(http::header::HOST).cloned();
        (ctx, vec![authority])
    }

    fn render(format: &str, ctx: &RequestCtx, authority: Option<HeaderValue>) -> String {
        let format = Format::parse(format).expect("format");
        let names = format.headers();
        let (mut parts, ()) = http::Request::get("/").body(()).unwrap().into_parts();
        parts
            .headers
            .insert("x-evil", HeaderValue::from_static("x"));
        let mut values = vec![authority];
        values.extend(names.iter().map(|_| None));
        let captured = Captured {
            names: &names,
            values: &values,
        };
        request_line(
            &format,
            &captured,
            ctx,
            UNIX_EPOCH + Duration::from_secs(86_400),
        )
    }

    #[test]
    fn every_operator_renders() {
        let (mut ctx, values) = ctx(&[("host", b"app.example")]);
        ctx.host_id = Some("edge-1".into());
        ctx.tenant = Some("acme".into());
        ctx.tunnel_id = Some(42);
        ctx.outcome.status = Some(StatusCode::OK);
        ctx.outcome.bytes_sent = 1234;
        ctx.timings.end = Some(ctx.timings.start + Duration::from_millis(250));
        let line = render(
            "%START_TIME% %REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(:SCHEME)% \
             %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION% %BYTES_RECEIVED% \
             %BYTES_SENT% %DOWNSTREAM_REMOTE_ADDRESS% %HOST_ID% %TENANT% %TUNNEL_ID% %SHARD% \
             %LISTENER% %CLUSTER% %REQ(x-missing)%",
            &ctx,
            values[0].clone(),
        );
        assert_eq!(
            line,
            "1970-01-01T23:59:59.750Z GET /p?q=1 app.example http HTTP/1.1 200 - 250 0 1234 \
             10.0.0.7:5555 edge-1 acme 42 3 egress - -"
        );
        let id = render("%REQUEST_ID%", &ctx, None);
        assert_eq!(id, ctx.request_id.as_str());
    }

    #[test]
    fn missing_values_are_dashes_and_failures_have_their_status() {
        let (mut ctx, _) = ctx(&[]);
        ctx.outcome.failure = Some(ProxyError::ClientClosed);
        let line = render(
            "%RESPONSE_CODE% %RESPONSE_FLAGS% %HOST_ID% %TUNNEL_ID% %REQ(:AUTHORITY)% %REQ(a?b)%",
            &ctx,
            None,
        );
        assert_eq!(line, "499 client_closed - - - -");
    }

    #[test]
    fn hostile_values_cannot_break_the_line() {
        // What a header value may carry (no CR, LF or other controls but tab: hyper and `http`
        // refuse those), with quotes, backslashes, JSON and non-ASCII bytes.
        let hostile: &[u8] = b"a\"b\\c\td\xff {\"x\":1}";
        let (ctx, _) = ctx(&[]);
        let format = Format::parse("\"%REQ(x-evil)%\" %REQ(x-evil):3%").unwrap();
        let names = format.headers();
        let values = vec![None, Some(HeaderValue::from_bytes(hostile).unwrap())];
        let captured = Captured {
            names: &names,
            values: &values,
        };
        let line = request_line(&format, &captured, &ctx, SystemTime::now());
        assert_eq!(line, r#""a\"b\\c\td\xff {\"x\":1}" a\"b"#);

        // Whatever the bytes (a path or id from elsewhere), nothing ends the line.
        let mut out = String::new();
        escape_text(&mut out, Some(b"x\ny\rz\x01\x7f\"\n"), None);
        assert_eq!(out, r#"x\ny\rz\x01\x7f\"\n"#);

        // JSON: the same value is one string; the line parses back to it.
        let names = vec![http::header::USER_AGENT];
        let values = vec![
            Some(HeaderValue::from_static("host\"}")),
            Some(HeaderValue::from_bytes(hostile).unwrap()),
        ];
        let captured = Captured {
            names: &names,
            values: &values,
        };
        let line = request_line(&Format::Json, &captured, &ctx, SystemTime::now());
        assert!(!line.contains('\n'), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v["authority"], "host\"}");
        assert_eq!(
            v["user_agent"].as_str().unwrap(),
            String::from_utf8_lossy(hostile)
        );
        assert_eq!(v.as_object().unwrap().len(), 20, "no key injected");
    }

    #[test]
    fn json_has_stable_keys_and_nulls() {
        let (mut ctx, values) = ctx(&[("host", b"h")]);
        ctx.outcome.status = Some(StatusCode::NOT_FOUND);
        ctx.outcome.failure = Some(ProxyError::NoRoute { path: "/p".into() });
        let names = Format::Json.headers();
        let mut values = values;
        values.push(None);
        let captured = Captured {
            names: &names,
            values: &values,
        };
        let line = request_line(&Format::Json, &captured, &ctx, SystemTime::now());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "event",
            "start_time",
            "listener",
            "request_id",
            "method",
            "path",
            "authority",
            "protocol",
            "status",
            "response_flags",
            "duration_ms",
            "bytes_received",
            "bytes_sent",
            "downstream_remote_address",
            "host_id",
            "tenant",
            "tunnel_id",
            "cluster",
            "shard",
            "user_agent",
        ];
        expected.sort();
        assert_eq!(keys, expected, "serde_json sorts keys");
        assert!(line.starts_with("{\"event\":\"request\",\"start_time\":"));
        assert_eq!(v["status"], 404);
        assert_eq!(v["response_flags"], "no_route");
        assert_eq!(v["host_id"], serde_json::Value::Null);
        assert_eq!(v["downstream_remote_address"], "10.0.0.7:5555");
        assert_eq!(v["shard"], 3);
    }

    #[test]
    fn tunnel_events_in_both_forms() {
        let event = TunnelEvent {
            kind: Some(TunnelEventKind::Rejected),
            peer: Some("127.0.0.1:9".parse().unwrap()),
            node: Some("n\"1\n"),
            reason: Some("unauthenticated"),
            status: Some(401),
            ..TunnelEvent::default()
        };
        let at = UNIX_EPOCH;
        let json: serde_json::Value =
            serde_json::from_str(&event.line(&Format::Json, 1, at)).unwrap();
        assert_eq!(json["event"], "tunnel_rejected");
        assert_eq!(json["reason"], "unauthenticated");
        assert_eq!(json["status"], 401);
        assert_eq!(json["node"], "n\"1\n");
        assert_eq!(json["tunnel_id"], serde_json::Value::Null);
        let text = event.line(&Format::parse("%DURATION%").unwrap(), 1, at);
        assert_eq!(
            text,
            "[1970-01-01T00:00:00.000Z] tunnel_rejected tunnel_id=- node=n\\\"1\\n cluster=- \
             tenant=- peer=127.0.0.1:9 shard=1 reason=unauthenticated status=401 duration_ms=-"
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_423_440_123);
        assert_eq!(rfc3339_millis(t), "2026-11-23T08:44:00.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
