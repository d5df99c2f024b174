//! The access log's line format, parsed once at config load (sans-I/O).
//!
//! `json` (the default) writes one JSON object per line with fixed keys (`render`). Anything
//! else is an Envoy-style format string: literal text and command operators such as
//! `%START_TIME%`, `%REQ(:AUTHORITY)%` or `%RESPONSE_CODE%`. An unknown operator, an
//! unterminated one or a malformed `%REQ(...)%` is an error at load, never a surprise in the
//! log. `%%` is a literal `%`.

use http::HeaderName;

/// How access log lines look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line, stable keys.
    Json,
    /// An Envoy-style format string, compiled.
    Template(Vec<Piece>),
}

/// One part of a format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Op(Operator),
}

/// A command operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    /// `%START_TIME%`: when the request head arrived, RFC 3339 UTC with milliseconds.
    StartTime,
    /// `%REQ(name?alt):max%`: a request header (or `:method`, `:path`, `:authority`,
    /// `:scheme`), the alternative when the first is absent, truncated to `max` bytes.
    Req(ReqHeader),
    /// `%RESPONSE_CODE%`.
    ResponseCode,
    /// `%RESPONSE_FLAGS%`: the failure's label (`no_tunnel`, `timeout`, …), `-` when none.
    ResponseFlags,
    /// `%DURATION%`: request head to the end of the response, in milliseconds.
    Duration,
    /// `%BYTES_RECEIVED%`: request body bytes.
    BytesReceived,
    /// `%BYTES_SENT%`: response body bytes.
    BytesSent,
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`.
    Protocol,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`: the client's IP:port (egress).
    DownstreamRemoteAddress,
    /// `%HOST_ID%`: the host id the request was routed by (egress).
    HostId,
    /// `%TENANT%`.
    Tenant,
    /// `%TUNNEL_ID%`: the tunnel that carried the request.
    TunnelId,
    /// `%SHARD%`.
    Shard,
    /// `%REQUEST_ID%`.
    RequestId,
    /// `%LISTENER%`: `egress` or `initiator`.
    Listener,
    /// `%CLUSTER%`: the local cluster that served the request (initiator).
    Cluster,
}

/// What `%REQ(...)%` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReqHeader {
    pub name: ReqName,
    pub alternative: Option<ReqName>,
    /// At most this many bytes of the value.
    pub max_len: Option<usize>,
}

/// A request header, or one of the pseudo-headers Envoy's `%REQ()%` knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReqName {
    Method,
    Path,
    /// `Host` on HTTP/1.1, `:authority` on HTTP/2.
    Authority,
    Scheme,
    Header(HeaderName),
}

/// Why a format string does not parse; `at` is the byte offset of the problem in the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {} of the format)", .at + 1)]
pub struct FormatError {
    pub at: usize,
    pub message: String,
}

/// The operators without arguments, by name.
const SIMPLE: &[(&str, Operator)] = &[
    ("START_TIME", Operator::StartTime),
    ("RESPONSE_CODE", Operator::ResponseCode),
    ("RESPONSE_FLAGS", Operator::ResponseFlags),
    ("DURATION", Operator::Duration),
    ("BYTES_RECEIVED", Operator::BytesReceived),
    ("BYTES_SENT", Operator::BytesSent),
    ("PROTOCOL", Operator::Protocol),
    (
        "DOWNSTREAM_REMOTE_ADDRESS",
        Operator::DownstreamRemoteAddress,
    ),
    ("HOST_ID", Operator::HostId),
    ("TENANT", Operator::Tenant),
    ("TUNNEL_ID", Operator::TunnelId),
    ("SHARD", Operator::Shard),
    ("REQUEST_ID", Operator::RequestId),
    ("LISTENER", Operator::Listener),
    ("CLUSTER", Operator::Cluster),
];

impl Format {
    /// `json`, or a format string.
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        if text == "json" {
            return Ok(Format::Json);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(start) = rest.find('%') {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let at = offset + start;
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                offset = at + 2;
                rest = tail;
                continue;
            }
            let Some(end) = operator_end(after) else {
                return Err(FormatError {
                    at,
                    message: "`%` starts an operator that is not closed by `%` (write `%%` for a \
                              literal `%`)"
                        .into(),
                });
            };
            let op = parse_operator(&after[..end], at)?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Op(op));
            offset = at + 1 + end + 1;
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if pieces.is_empty() {
            return Err(FormatError {
                at: 0,
                message: "the format is empty: give `json` or a format string".into(),
            });
        }
        Ok(Format::Template(pieces))
    }

    /// The request headers this format reads (captured in phase 1; pseudo-headers are read
    /// from the request's context instead).
    pub fn headers(&self) -> Vec<HeaderName> {
        let mut names = Vec::new();
        match self {
            Format::Json => names.push(http::header::USER_AGENT),
            Format::Template(pieces) => {
                for piece in pieces {
                    if let Piece::Op(Operator::Req(req)) = piece {
                        for name in std::iter::once(&req.name).chain(&req.alternative) {
                            if let ReqName::Header(h) = name {
                                if !names.contains(h) {
                                    names.push(h.clone());
                                }
                            }
                        }
                    }
                }
            }
        }
        names
    }
}

/// Where the operator that starts `s` (after its `%`) ends: the next `%` outside parentheses.
fn operator_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '%' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_operator(body: &str, at: usize) -> Result<Operator, FormatError> {
    let err = |message: String| FormatError { at, message };
    if let Some((_, op)) = SIMPLE.iter().find(|(name, _)| *name == body) {
        return Ok(op.clone());
    }
    let Some(args) = body.strip_prefix("REQ(") else {
        let known: Vec<String> = SIMPLE
            .iter()
            .map(|(n, _)| format!("%{n}%"))
            .chain(["%REQ(header)%".to_owned()])
            .collect();
        return Err(err(format!(
            "unknown operator `%{body}%`; known: {}",
            known.join(", ")
        )));
    };
    let Some(close) = args.rfind(')') else {
        return Err(err(format!("`%{body}%`: `REQ(` is not closed by `)`")));
    };
    let (inner, tail) = (&args[..close], &args[close + 1..]);
    let max_len = match tail {
        "" => None,
        _ => match tail.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(err(format!(
                    "`%{body}%`: after `REQ(...)` only `:N` (a maximum length of at least 1) may follow"
                )))
            }
        },
    };
    let mut names = inner.splitn(2, '?');
    let name = req_name(names.next().unwrap_or_default()).map_err(&err)?;
    let alternative = names.next().map(req_name).transpose().map_err(&err)?;
    Ok(Operator::Req(ReqHeader {
        name,
        alternative,
        max_len,
    }))
}

fn req_name(name: &str) -> Result<ReqName, String> {
    match name.to_ascii_lowercase().as_str() {
        ":method" => Ok(ReqName::Method),
        ":path" => Ok(ReqName::Path),
        ":authority" | "host" => Ok(ReqName::Authority),
        ":scheme" => Ok(ReqName::Scheme),
        "" => Err("`%REQ()%` needs a header name".into()),
        other if other.starts_with(':') => Err(format!(
            "unknown pseudo-header `{name}` in `%REQ()%`: known are :METHOD, :PATH, :AUTHORITY, \
             :SCHEME"
        )),
        other => HeaderName::from_bytes(other.as_bytes())
            .map(ReqName::Header)
            .map_err(|_| format!("`{name}` is not a valid header name in `%REQ()%`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_a_keyword() {
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::Json.headers(), [http::header::USER_AGENT]);
    }

    #[test]
    fn every_operator_parses() {
        let all = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%\" %RESPONSE_CODE% \
                   %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
                   %REQ(X-FORWARDED-FOR)% %REQ(:AUTHORITY)% %REQ(:SCHEME)% \
                   %DOWNSTREAM_REMOTE_ADDRESS% %HOST_ID% %TENANT% %TUNNEL_ID% %SHARD% \
                   %REQUEST_ID% %LISTENER% %CLUSTER% 100%%";
        let Format::Template(pieces) = Format::parse(all).expect("parses") else {
            panic!("a template");
        };
        let ops = pieces.iter().filter(|p| matches!(p, Piece::Op(_))).count();
        assert_eq!(ops, 20);
        assert_eq!(pieces.last(), Some(&Piece::Literal(" 100%".into())));
    }

    #[test]
    fn req_takes_an_alternative_and_a_length() {
        let f = Format::parse("%REQ(X-Real-IP?X-Forwarded-For):12%").unwrap();
        assert_eq!(
            f,
            Format::Template(vec![Piece::Op(Operator::Req(ReqHeader {
                name: ReqName::Header(HeaderName::from_static("x-real-ip")),
                alternative: Some(ReqName::Header(HeaderName::from_static("x-forwarded-for"))),
                max_len: Some(12),
            }))])
        );
        assert_eq!(f.headers().len(), 2);
        let host = Format::parse("%REQ(host)%").unwrap();
        assert!(
            host.headers().is_empty(),
            "the authority comes from the context"
        );
    }

    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../README.md");
        let example = readme
            .lines()
            .find_map(|l| l.strip_prefix("  format: '[%START_TIME%]"))
            .expect("README's format string example");
        let format = format!("[%START_TIME%]{}", example.trim_end_matches('\''));
        assert!(matches!(Format::parse(&format), Ok(Format::Template(_))));
    }

    #[test]
    fn mistakes_are_errors_with_their_position() {
        let e = Format::parse("ok %NOPE% x").unwrap_err();
        assert_eq!(e.at, 3);
        assert!(e.to_string().contains("unknown operator `%NOPE%`"), "{e}");
        assert!(e.to_string().contains("at character 4"), "{e}");
        for bad in [
            "%START_TIME",
            "%REQ()%",
            "%REQ(:nope)%",
            "%REQ(a b)%",
            "%REQ(x):0%",
            "%REQ(x)z%",
            "%REQ(x%",
            "",
            "%duration%",
        ] {
            assert!(Format::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
