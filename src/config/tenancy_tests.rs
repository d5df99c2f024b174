//! Tests of `responder.egress_listener.tenant` (every source, every shape, located errors) and
//! of the admin token (`admin.token_sha256`, `admin.token_file`).

use std::path::Path;

use super::*;
use crate::auth::tokens::sha256;
use crate::auth::TenantSource;

fn responder(tenant: &str) -> String {
    format!(
        "responder:
  tunnel_listener:
    listen: 127.0.0.1:9000
  egress_listener:
    listen: 127.0.0.1:8085
{tenant}"
    )
}

fn ok(source: &str) -> Config {
    parse(source, "t.yaml").unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

fn error(source: &str) -> (usize, usize, String) {
    match parse(source, "t.yaml") {
        Ok(_) => panic!("expected an error:\n{source}"),
        Err(e) => {
            let d = e.diagnostics();
            assert_eq!(d.len(), 1, "{e}");
            (d[0].line, d[0].column, d[0].message.clone())
        }
    }
}

fn source_of(config: &Config) -> Option<&TenantSource> {
    config
        .responder
        .as_ref()
        .expect("responder")
        .egress_listener
        .tenant
        .as_ref()
}

fn hex(secret: &str) -> String {
    sha256(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

#[test]
fn absent_is_no_isolation() {
    let config = ok(&responder(""));
    assert_eq!(source_of(&config), None);
    assert!(config.summary().contains("tenant isolation: off"));
    assert_eq!(source_of(&ok(&responder("    tenant:\n"))), None, "null");
}

#[test]
fn every_source_parses() {
    let fixed = ok(&responder("    tenant: { fixed: acme }\n"));
    assert_eq!(source_of(&fixed), Some(&TenantSource::Fixed("acme".into())));
    assert!(fixed
        .summary()
        .contains("tenant isolation: on, fixed tenant \"acme\""));
    let empty = ok(&responder("    tenant: { fixed: \"\" }\n"));
    assert_eq!(source_of(&empty), Some(&TenantSource::Fixed(String::new())));

    let keys = ok(&responder(&format!(
        "    tenant:
      api_keys:
        - {{ sha256: {}, tenant: a }}
        - sha256: {}
          tenant: b
",
        hex("key-a"),
        hex("key-b").to_ascii_uppercase()
    )));
    let Some(TenantSource::ApiKeys(api)) = source_of(&keys) else {
        panic!("api keys: {:?}", source_of(&keys));
    };
    assert_eq!(api.header, "x-rtun-api-key", "the default header");
    assert_eq!(api.keys.len(), 2);
    assert_eq!(
        (api.keys[1].sha256, api.keys[1].tenant.as_str()),
        (sha256(b"key-b"), "b")
    );
    let summary = keys.summary();
    assert!(
        summary.contains("tenant isolation: on, API keys (2) in header x-rtun-api-key"),
        "{summary}"
    );
    assert!(!summary.contains(&hex("key-a")), "no hashes in the summary");

    let header = ok(&responder(&format!(
        "    tenant: {{ api_keys: [{{ sha256: {}, tenant: a }}], header: X-Api-Key }}\n",
        hex("k")
    )));
    let Some(TenantSource::ApiKeys(api)) = source_of(&header) else {
        panic!("api keys");
    };
    assert_eq!(api.header, "x-api-key", "names are lowercased");

    let cert = ok(&responder(
        "    tenant: { client_certificate: { tenant_format: \"%DOWNSTREAM_PEER_URI_SAN%\" } }\n",
    ));
    let Some(TenantSource::ClientCertificate { tenant_format }) = source_of(&cert) else {
        panic!("client certificate");
    };
    assert_eq!(tenant_format.as_str(), "%DOWNSTREAM_PEER_URI_SAN%");

    let trusted = ok(&responder("    tenant: { trusted_header: x-tenant-id }\n"));
    assert_eq!(
        source_of(&trusted),
        Some(&TenantSource::TrustedHeader(http::HeaderName::from_static(
            "x-tenant-id"
        )))
    );
    assert!(trusted
        .summary()
        .contains("trusted header x-tenant-id (WARNING"));
}

#[test]
fn tenant_errors_are_located() {
    let h = hex("k");
    // (the `tenant:` value, the line and column of the error, a part of its message): a
    // mapping's own problems at its `{`, a value's at the value.
    let cases: Vec<(String, (usize, usize), &str)> = vec![
        (
            "{}".into(),
            (6, 13),
            "give exactly one of `fixed:`, `api_keys:`, `client_certificate:` or `trusted_header:`",
        ),
        (
            "{ fixed: a, trusted_header: x-t }".into(),
            (6, 13),
            "give exactly one of",
        ),
        ("{ fixed: \"a:b\" }".into(), (6, 22), "tenant id `a:b`"),
        ("{ fixed: [a] }".into(), (6, 22), "a tenant id"),
        ("{ header: x-k }".into(), (6, 13), "give exactly one of"),
        (
            "{ fixed: a, header: x-k }".into(),
            (6, 13),
            "`header:` names the API key header",
        ),
        ("{ api_keys: [] }".into(), (6, 25), "the list is empty"),
        (
            "{ api_keys: [{ sha256: abc, tenant: a }] }".into(),
            (6, 36),
            "64 hexadecimal digits (the SHA-256 of the API key",
        ),
        (
            format!("{{ api_keys: [{{ sha256: {h} }}] }}"),
            (6, 26),
            "missing field `tenant`",
        ),
        (
            format!("{{ api_keys: [{{ sha256: {h}, tenant: a, nodes: [n] }}] }}"),
            (6, 113),
            "unknown field `nodes`",
        ),
        (
            format!("{{ api_keys: [{{ sha256: {h}, tenant: a }}, {{ sha256: {h}, tenant: b }}] }}"),
            (6, 13),
            "api_keys entry #2 repeats the sha256",
        ),
        (
            format!("{{ api_keys: [{{ sha256: {h}, tenant: a }}], header: host }}"),
            (6, 124),
            "`host` cannot carry a tenant or an API key",
        ),
        (
            "{ trusted_header: \"bad header\" }".into(),
            (6, 31),
            "`bad header` is not a valid header name",
        ),
        (
            "{ trusted_header: x-request-id }".into(),
            (6, 31),
            "`x-request-id` cannot carry",
        ),
        (
            "{ client_certificate: { tenant_format: \"%NOPE%\" } }".into(),
            (6, 52),
            "tenant_format `%NOPE%`: column 1 of the format: unknown operator `%NOPE%`",
        ),
        (
            "{ client_certificate: {} }".into(),
            (6, 35),
            "missing field `tenant_format`",
        ),
        ("{ sources: x }".into(), (6, 15), "unknown field `sources`"),
    ];
    for (value, (line, column), needle) in cases {
        let (l, c, message) = error(&responder(&format!("    tenant: {value}\n")));
        assert!(
            message.contains(needle),
            "{value}: {needle:?} not in {message:?}"
        );
        assert_eq!((l, c), (line, column), "{value}: {message}");
    }
}

#[test]
fn admin_token_by_hash_or_file() {
    let plain = ok(&format!(
        "admin: {{ listen: 127.0.0.1:9901 }}\n{}",
        responder("")
    ));
    let admin = plain.admin.as_ref().expect("admin");
    assert_eq!(admin.token, None);
    assert!(!admin.exposed_without_token(), "loopback");
    assert!(plain
        .summary()
        .contains("admin: http://127.0.0.1:9901 (no token (loopback only))"));

    let exposed = ok(&format!(
        "admin: {{ listen: 0.0.0.0:9901 }}\n{}",
        responder("")
    ));
    let admin = exposed.admin.as_ref().expect("admin");
    assert!(admin.exposed_without_token());
    let summary = exposed.summary();
    assert!(
        summary.contains("admin: no token (WARNING: listens on 0.0.0.0:9901 without one"),
        "{summary}"
    );

    let hashed = ok(&format!(
        "admin: {{ listen: 0.0.0.0:9901, token_sha256: {} }}\n{}",
        hex("s3cret"),
        responder("")
    ));
    let admin = hashed.admin.as_ref().expect("admin");
    assert_eq!(
        admin.token.as_ref().map(|t| t.sha256),
        Some(sha256(b"s3cret"))
    );
    assert!(!admin.exposed_without_token());
    assert!(
        !format!("{admin:?}").contains(&hex("s3cret")),
        "Debug redacts"
    );
    assert!(hashed.summary().contains("admin: bearer token required"));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "admin-token", "  s3cret\n");
    let from_file = ok(&format!("admin:\n  token_file: {file}\n{}", responder("")));
    let admin = from_file.admin.as_ref().expect("admin");
    assert_eq!(admin.listen, "127.0.0.1:9901".parse().expect("addr"));
    let token = admin.token.as_ref().expect("token");
    assert_eq!(token.sha256, sha256(b"s3cret"), "trimmed, then hashed");
    assert_eq!(token.file.as_deref(), Some(Path::new(&file)));
    assert!(from_file.summary().contains("bearer token required (from"));
}

#[test]
fn admin_token_errors_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blank = write(dir.path(), "blank", " \n");
    let spaced = write(dir.path(), "spaced", "two words\n");
    let file = write(dir.path(), "token", "s3cret");
    let h = hex("s3cret");
    let cases = [
        (
            format!("admin: {{ token_sha256: {h}, token_file: {file} }}\n"),
            (1, 8),
            "give one of `token_sha256:` or `token_file:`, not both".to_owned(),
        ),
        (
            "admin: { token_sha256: 1234 }\n".into(),
            (1, 24),
            "64 hexadecimal digits".into(),
        ),
        (
            "admin: { token_file: /nonexistent/admin-token }\n".into(),
            (1, 22),
            "token_file /nonexistent/admin-token: cannot read".into(),
        ),
        (
            format!("admin: {{ token_file: {blank} }}\n"),
            (1, 22),
            format!("token_file {blank}: the token is empty"),
        ),
        (
            format!("admin: {{ token_file: {spaced} }}\n"),
            (1, 22),
            "a space, control or non-ASCII byte".into(),
        ),
        (
            "admin: { token: s3cret }\n".into(),
            (1, 10),
            "unknown field `token`".into(),
        ),
    ];
    for (admin, (line, column), needle) in cases {
        let (l, c, message) = error(&format!("{admin}{}", responder("")));
        assert!(
            message.contains(&needle),
            "{admin}: {needle:?} not in {message:?}"
        );
        assert_eq!((l, c), (line, column), "{admin}: {message}");
    }
}
