//! `GET /tunnels[?tenant=ID][&format=text]`: every live tunnel of this process, with its
//! traffic, as JSON (`application/json`, the default) or as aligned text tables whose header
//! lines name every column (`format=text`).
//!
//! Each role lists its own tunnels from its `tunnel::info::TunnelBoard`: the responder the
//! tunnels initiators dialed to it (with the health its registry gives them, and a summary per
//! host id from the directory: tunnels per shard), the initiator the tunnels it dialed. A role
//! the process does not run is `null` in JSON and absent from the text. The page reads the
//! per-tunnel atomics the owning shards write; it takes each board's lock (held at tunnel open
//! and close only) and the directory's, never a shard's registry.
//!
//! `bytes_sent` / `bytes_received` are this process's view of the tunnel's connection: HTTP/2
//! bytes (frames of every stream, headers, bodies, PINGs) above TLS, from the end of the
//! handshake. On the responder, sent is toward the node (requests), received from it
//! (responses); on the initiator the other way round. `rtt_ms` is the last PING round trip,
//! `null` before the first PONG.
//!
//! `?tenant=ID` (percent-encoded) keeps one tenant's tunnels and hosts. On a responder it needs
//! tenant isolation, since otherwise every tunnel sits in one shared namespace and the
//! directory does not tell tenants apart (400).
//!
//! Ids are visible ASCII without `:` (`protocol::ids`, checked at the handshake); the JSON
//! escapes whatever it is given, and the text form prints any other byte as `?`, so a cell is
//! always one word and the table keeps its columns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::Serialize;

use crate::responder::registry::Tenancy;
use crate::responder::Responder;
use crate::tunnel::info::{TunnelBoard, TunnelInfo};

/// How the page is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Json,
    Text,
}

impl Format {
    pub(super) fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Text => "text/plain; charset=utf-8",
        }
    }
}

/// The page's status, format and body. A refused query is answered in text.
pub(super) fn page(
    query: Option<&str>,
    responder: Option<&Responder>,
    dialed: Option<&TunnelBoard>,
) -> (StatusCode, Format, String) {
    let query = match Query::parse(query) {
        Ok(query) => query,
        Err(reason) => return (StatusCode::BAD_REQUEST, Format::Text, reason),
    };
    if query.tenant.is_some() && responder.is_some_and(|r| r.tenancy() == Tenancy::Shared) {
        return (
            StatusCode::BAD_REQUEST,
            Format::Text,
            "Tenant isolation is off (responder.egress_listener.tenant): all tunnels share one \
             namespace; GET /tunnels lists them all"
                .into(),
        );
    }
    let tenant = query.tenant.as_deref();
    let listing = Listing {
        responder: responder.map(|r| ResponderView::of(r, tenant)),
        initiator: dialed.map(|board| InitiatorView {
            tunnels: views(board, tenant),
        }),
    };
    let body = match query.format {
        Format::Json => serde_json::to_string_pretty(&listing).unwrap_or_else(|e| {
            // Plain structs of strings and numbers always serialize; never a panic on it.
            format!("{{\"error\": \"{}\"}}", e.to_string().replace('"', "'"))
        }),
        Format::Text => listing.text(),
    };
    (StatusCode::OK, query.format, body)
}

/// The whole page.
#[derive(Debug, Serialize)]
struct Listing {
    /// `null` without a responder.
    responder: Option<ResponderView>,
    /// `null` without an initiator.
    initiator: Option<InitiatorView>,
}

#[derive(Debug, Serialize)]
struct ResponderView {
    /// `shared` (one namespace: `hosts[].tenant` is empty) or `isolated`.
    tenancy: &'static str,
    tunnels: Vec<TunnelView>,
    hosts: Vec<HostView>,
}

impl ResponderView {
    fn of(responder: &Responder, tenant: Option<&str>) -> Self {
        let hosts = responder
            .directory()
            .snapshot()
            .into_iter()
            .filter(|(namespace, _, _)| tenant.is_none_or(|t| t == namespace))
            .map(|(tenant, host, per_shard)| HostView {
                tenant,
                host,
                tunnels: per_shard.iter().sum(),
                per_shard,
            })
            .collect();
        ResponderView {
            tenancy: match responder.tenancy() {
                Tenancy::Shared => "shared",
                Tenancy::Isolated => "isolated",
            },
            tunnels: views(responder.tunnels(), tenant),
            hosts,
        }
    }
}

#[derive(Debug, Serialize)]
struct InitiatorView {
    tunnels: Vec<TunnelView>,
}

/// One host id of the directory: a cluster id (its nodes' tunnels included) or a node id.
#[derive(Debug, Serialize, PartialEq)]
struct HostView {
    /// The registry's namespace: the tenant under isolation, empty while tenants share one.
    tenant: String,
    host: String,
    tunnels: u32,
    /// Tunnels on each shard, shard 0 first.
    per_shard: Vec<u32>,
}

/// One tunnel.
#[derive(Debug, Serialize, PartialEq)]
struct TunnelView {
    id: u64,
    node: String,
    cluster: String,
    tenant: String,
    shard: usize,
    /// Initiator: the `tunnels` entry's responder cluster and the endpoint dialed.
    #[serde(skip_serializing_if = "Option::is_none")]
    remote_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// The other end's address.
    peer: String,
    tls: bool,
    /// `up`, or `draining` (GOAWAY sent, in-flight streams finishing).
    state: &'static str,
    /// RFC 3339, UTC, milliseconds.
    opened_at: String,
    opened_at_unix_ms: u64,
    age_seconds: f64,
    active_streams: usize,
    bytes_sent: u64,
    bytes_received: u64,
    /// The last PING round trip; `null` before the first PONG.
    rtt_ms: Option<f64>,
    /// Responder: `false` while its registry marks it unhealthy (its streams time out).
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy: Option<bool>,
}

impl TunnelView {
    fn of(info: &TunnelInfo) -> Self {
        let opened_ms = info
            .opened
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Self {
            id: info.id,
            node: info.identity.node_id.clone(),
            cluster: info.identity.cluster_id.clone(),
            tenant: info.identity.tenant_id.clone(),
            shard: info.shard,
            remote_cluster: info.dialed.as_ref().map(|d| d.remote_cluster.clone()),
            endpoint: info.dialed.as_ref().map(|d| d.endpoint.clone()),
            peer: info.peer.to_string(),
            tls: info.tls,
            state: if info.is_draining() { "draining" } else { "up" },
            opened_at: rfc3339(info.opened),
            opened_at_unix_ms: u64::try_from(opened_ms).unwrap_or(u64::MAX),
            age_seconds: millis(info.age()) / 1000.0,
            active_streams: info.active_streams(),
            bytes_sent: info.meter.bytes_sent(),
            bytes_received: info.meter.bytes_received(),
            rtt_ms: info.meter.rtt().map(millis),
            healthy: info.unhealthy().map(|unhealthy| !unhealthy),
        }
    }
}

/// A board's tunnels of `tenant` (all without one), by id.
fn views(board: &TunnelBoard, tenant: Option<&str>) -> Vec<TunnelView> {
    board
        .snapshot()
        .iter()
        .filter(|t| tenant.is_none_or(|tenant| t.identity.tenant_id == tenant))
        .map(|t| TunnelView::of(t))
        .collect()
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

// ---------------------------------------------------------------------------------------------
// Text

impl Listing {
    /// The roles' tables, each under a title line and a header line naming its columns.
    fn text(&self) -> String {
        let mut out = Vec::new();
        if let Some(r) = &self.responder {
            out.push(format!("responder tunnels ({}):", r.tunnels.len()));
            out.push(table(&tunnel_rows(&r.tunnels, false)));
            out.push(String::new());
            out.push(format!("responder hosts ({}):", r.hosts.len()));
            let mut rows = vec![["TENANT", "HOST", "TUNNELS", "PER_SHARD"].map(String::from)];
            rows.extend(r.hosts.iter().map(|h| {
                let shards: Vec<String> = h.per_shard.iter().map(u32::to_string).collect();
                [
                    cell(&h.tenant),
                    cell(&h.host),
                    h.tunnels.to_string(),
                    shards.join(","),
                ]
            }));
            out.push(table(&rows));
        }
        if let Some(i) = &self.initiator {
            if !out.is_empty() {
                out.push(String::new());
            }
            out.push(format!("initiator tunnels ({}):", i.tunnels.len()));
            out.push(table(&tunnel_rows(&i.tunnels, true)));
        }
        if out.is_empty() {
            out.push("no tunnels: this process runs neither role".into());
        }
        out.join("\n")
    }
}

/// The header and one row per tunnel; `dialed` adds the initiator's columns and drops health.
fn tunnel_rows(tunnels: &[TunnelView], dialed: bool) -> Vec<Vec<String>> {
    let mut header = vec!["ID", "NODE", "CLUSTER", "TENANT", "SHARD"];
    if dialed {
        header.extend(["REMOTE_CLUSTER", "ENDPOINT"]);
    }
    header.extend([
        "PEER",
        "TLS",
        "STATE",
        "AGE_S",
        "STREAMS",
        "BYTES_SENT",
        "BYTES_RECEIVED",
        "RTT_MS",
    ]);
    if !dialed {
        header.push("HEALTH");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect()];
    for t in tunnels {
        let mut row = vec![
            t.id.to_string(),
            cell(&t.node),
            cell(&t.cluster),
            cell(&t.tenant),
            t.shard.to_string(),
        ];
        if dialed {
            row.push(cell(t.remote_cluster.as_deref().unwrap_or_default()));
            row.push(cell(t.endpoint.as_deref().unwrap_or_default()));
        }
        row.extend([
            cell(&t.peer),
            if t.tls { "yes" } else { "no" }.to_owned(),
            t.state.to_owned(),
            format!("{}", t.age_seconds as u64),
            t.active_streams.to_string(),
            t.bytes_sent.to_string(),
            t.bytes_received.to_string(),
            t.rtt_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.3}")),
        ]);
        if !dialed {
            row.push(match t.healthy {
                Some(false) => "unhealthy".to_owned(),
                _ => "healthy".to_owned(),
            });
        }
        rows.push(row);
    }
    rows
}

/// One word for a table cell: `-` when empty; any byte outside visible ASCII as `?`, so an id
/// can never add a column or a line.
fn cell(value: &str) -> String {
    if value.is_empty() {
        return "-".into();
    }
    value
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, c) in row.as_ref().iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(c.len()),
                None => widths.push(c.len()),
            }
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .as_ref()
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

/// `t` as RFC 3339 in UTC with milliseconds (`2025-01-31T08:05:09.123Z`).
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

// ---------------------------------------------------------------------------------------------
// Query

/// What the query asks for.
#[derive(Debug, PartialEq, Eq)]
struct Query {
    tenant: Option<String>,
    format: Format,
}

impl Query {
    /// `tenant=ID` (decoded) and `format=json|text`, each at most once; nothing else.
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut parsed = Query {
            tenant: None,
            format: Format::Json,
        };
        let mut format_seen = false;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "tenant" => {
                    if parsed.tenant.is_some() {
                        return Err("Give tenant= once".into());
                    }
                    let decoded = percent_decode(value).ok_or_else(|| {
                        "The tenant is not valid percent-encoded UTF-8".to_owned()
                    })?;
                    parsed.tenant = Some(decoded);
                }
                "format" => {
                    if std::mem::replace(&mut format_seen, true) {
                        return Err("Give format= once".into());
                    }
                    parsed.format = match value {
                        "json" => Format::Json,
                        "text" => Format::Text,
                        _ => {
                            return Err("Unknown format: /tunnels takes format=json or text".into())
                        }
                    };
                }
                _ => {
                    return Err(format!(
                    "Unknown query parameter '{}': /tunnels takes tenant=ID and format=json|text",
                    cell(name)
                ))
                }
            }
        }
        Ok(parsed)
    }
}

/// RFC 3986 percent-decoding (`+` is a `+`: tenant ids may contain it).
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant_filter(query: Option<&str>) -> Result<Option<String>, String> {
        Query::parse(query).map(|q| q.tenant)
    }

    #[test]
    fn the_filter_is_read_from_the_query() {
        assert_eq!(tenant_filter(None), Ok(None));
        assert_eq!(tenant_filter(Some("")), Ok(None));
        assert_eq!(tenant_filter(Some("tenant=acme")), Ok(Some("acme".into())));
        assert_eq!(tenant_filter(Some("tenant=")), Ok(Some(String::new())));
        assert_eq!(tenant_filter(Some("tenant")), Ok(Some(String::new())));
        assert_eq!(
            tenant_filter(Some("tenant=a%2Bb+c%25")),
            Ok(Some("a+b+c%".into()))
        );
        for bad in [
            "tenant=a&tenant=b",
            "x=1",
            "tenant=%zz",
            "tenant=%4",
            "tenant=%ff",
            "format=xml",
            "format=text&format=json",
        ] {
            assert!(Query::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_format_is_json_unless_text_is_asked_for() {
        let format = |q| Query::parse(q).map(|q| q.format);
        assert_eq!(format(None), Ok(Format::Json));
        assert_eq!(format(Some("format=json")), Ok(Format::Json));
        assert_eq!(format(Some("tenant=a&format=text")), Ok(Format::Text));
        assert_eq!(Format::Json.content_type(), "application/json");
    }

    fn view(id: u64, node: &str, tenant: &str, dialed: bool) -> TunnelView {
        TunnelView {
            id,
            node: node.into(),
            cluster: "edge-west".into(),
            tenant: tenant.into(),
            shard: 1,
            remote_cluster: dialed.then(|| "cloud".into()),
            endpoint: dialed.then(|| "tunnel.example:9000".into()),
            peer: "127.0.0.1:40112".into(),
            tls: true,
            state: "up",
            opened_at: "2025-01-31T08:05:09.123Z".into(),
            opened_at_unix_ms: 1_738_310_709_123,
            age_seconds: 12.5,
            active_streams: 2,
            bytes_sent: 1234,
            bytes_received: 56789,
            rtt_ms: (id == 1).then_some(0.21),
            healthy: (!dialed).then_some(id != 2),
        }
    }

    fn listing() -> Listing {
        Listing {
            responder: Some(ResponderView {
                tenancy: "isolated",
                tunnels: vec![view(1, "edge-1", "acme", false), view(2, "e2", "", false)],
                hosts: vec![HostView {
                    tenant: "acme".into(),
                    host: "edge-1".into(),
                    tunnels: 3,
                    per_shard: vec![2, 1],
                }],
            }),
            initiator: None,
        }
    }

    #[test]
    fn the_json_names_every_field() {
        let json: serde_json::Value = serde_json::to_value(listing()).expect("serializes");
        assert!(json["initiator"].is_null(), "a role not run is null");
        let r = &json["responder"];
        assert_eq!(r["tenancy"], "isolated");
        let t = &r["tunnels"][0];
        let mut keys: Vec<&str> = t
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "active_streams",
                "age_seconds",
                "bytes_received",
                "bytes_sent",
                "cluster",
                "healthy",
                "id",
                "node",
                "opened_at",
                "opened_at_unix_ms",
                "peer",
                "rtt_ms",
                "shard",
                "state",
                "tenant",
                "tls"
            ]
        );
        assert_eq!(t["rtt_ms"], 0.21);
        assert!(r["tunnels"][1]["rtt_ms"].is_null(), "no PONG yet");
        assert_eq!(r["tunnels"][1]["healthy"], false);
        assert_eq!(r["hosts"][0]["per_shard"], serde_json::json!([2, 1]));
        // A dialed tunnel says where it leads and has no health.
        let dialed = serde_json::to_value(view(3, "n", "", true)).expect("serializes");
        assert_eq!(dialed["endpoint"], "tunnel.example:9000");
        assert_eq!(dialed["remote_cluster"], "cloud");
        assert!(dialed.get("healthy").is_none());
    }

    #[test]
    fn the_json_escapes_what_it_is_given() {
        let hostile = view(1, "a\"b\\c\n", "", false);
        let text = serde_json::to_string(&hostile).expect("serializes");
        let back: serde_json::Value = serde_json::from_str(&text).expect("parses");
        assert_eq!(back["node"], "a\"b\\c\n");
    }

    #[test]
    fn the_text_has_a_header_and_aligned_columns() {
        let text = listing().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "responder tunnels (2):");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "ID",
                "NODE",
                "CLUSTER",
                "TENANT",
                "SHARD",
                "PEER",
                "TLS",
                "STATE",
                "AGE_S",
                "STREAMS",
                "BYTES_SENT",
                "BYTES_RECEIVED",
                "RTT_MS",
                "HEALTH"
            ]
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "1",
                "edge-1",
                "edge-west",
                "acme",
                "1",
                "127.0.0.1:40112",
                "yes",
                "up",
                "12",
                "2",
                "1234",
                "56789",
                "0.210",
                "healthy"
            ]
        );
        let second: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!((second[3], second[12], second[13]), ("-", "-", "unhealthy"));
        // Every column starts where its header does.
        for name in ["NODE", "PEER", "BYTES_SENT", "HEALTH"] {
            let at = lines[1].find(name).expect("header");
            assert_eq!(&lines[1][at - 2..at], "  ");
            assert!(lines[2].as_bytes()[at] != b' ', "{name} column aligned");
            assert_eq!(&lines[2][at - 2..at], "  ", "{name} column aligned");
        }
        assert_eq!(lines[4], "");
        assert_eq!(lines[5], "responder hosts (1):");
        assert_eq!(
            lines[6].split_whitespace().collect::<Vec<_>>(),
            ["TENANT", "HOST", "TUNNELS", "PER_SHARD"]
        );
        assert_eq!(
            lines[7].split_whitespace().collect::<Vec<_>>(),
            ["acme", "edge-1", "3", "2,1"]
        );
    }

    #[test]
    fn a_hostile_id_cannot_break_the_table() {
        let mut listing = listing();
        if let Some(r) = listing.responder.as_mut() {
            r.tunnels[0].node = "evil id\n9 x\u{7f}é".into();
        }
        let text = listing.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(row.len(), 14, "{text}");
        assert_eq!(row[1], "evil?id?9?x??");
    }

    #[test]
    fn the_initiator_table_says_where_its_tunnels_lead() {
        let listing = Listing {
            responder: None,
            initiator: Some(InitiatorView {
                tunnels: vec![view(1, "edge-1", "", true)],
            }),
        };
        let text = listing.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "initiator tunnels (1):");
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&header[5..8], ["REMOTE_CLUSTER", "ENDPOINT", "PEER"]);
        assert!(!header.contains(&"HEALTH"));
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(&row[5..7], ["cloud", "tunnel.example:9000"]);
        let none = Listing {
            responder: None,
            initiator: None,
        };
        assert!(none.text().starts_with("no tunnels"));
    }

    #[test]
    fn rfc3339_in_utc() {
        let at = |ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_738_310_709_123), "2025-01-31T08:05:09.123Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
