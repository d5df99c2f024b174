//! Tests of the `auth:` sections: every shape, the files they name, and located errors.

use std::path::Path;

use super::*;
use crate::auth::jwt::testing as jwt_keys;
use crate::auth::tokens::sha256;

fn responder(auth: &str) -> String {
    format!(
        "responder:
  tunnel_listener:
    listen: 127.0.0.1:9000
{auth}  egress_listener:
    listen: 127.0.0.1:8085
"
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

fn auth_of(config: &Config) -> &TunnelAuthConfig {
    &config
        .responder
        .as_ref()
        .expect("responder")
        .tunnel_listener
        .auth
}

fn hex(token: &str) -> String {
    sha256(token.as_bytes())
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
fn no_auth_is_none_and_says_so() {
    let config = ok(&responder(""));
    assert!(!auth_of(&config).authenticates());
    assert_eq!(auth_of(&config).describe(), "none");
    let summary = config.summary();
    for line in [
        "authentication: none (WARNING",
        "TLS: off",
        "tenant isolation: off",
    ] {
        assert!(summary.contains(line), "{line:?} not in\n{summary}");
    }
    assert!(!auth_of(&ok(&responder("    auth: {}\n"))).authenticates());
}

#[test]
fn inline_tokens_and_file_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "tokens.yaml",
        &format!(
            "# one entry per line\n- {{ sha256: {}, tenant: globex, nodes: [\"*\"], clusters: [\"*-west\"] }}\n",
            hex("b")
        ),
    );
    let config = ok(&responder(&format!(
        "    auth:
      tokens:
        - sha256: {}
          tenant: \"\"
          nodes: [edge-1, \"edge-*\"]
          clusters: [edge]
      tokens_file: {file}
",
        hex("a")
    )));
    let auth = auth_of(&config);
    assert_eq!(auth.tokens.len(), 2);
    assert_eq!(auth.tokens[0].sha256, sha256(b"a"));
    assert_eq!(auth.tokens[0].grant.tenant, "");
    assert_eq!(auth.tokens[1].grant.tenant, "globex");
    assert_eq!(auth.tokens[1].grant.clusters[0].to_string(), "*-west");
    assert!(auth.authenticates());
    assert!(
        auth.describe().starts_with("tokens (2, file "),
        "{}",
        auth.describe()
    );
    let summary = config.summary();
    assert!(summary.contains("authentication: tokens (2"), "{summary}");
    assert!(!summary.contains(&hex("a")), "no hashes in the summary");

    // An empty file is no tokens, but still token authentication.
    let empty = write(dir.path(), "empty.yaml", "# nothing yet\n");
    let config = ok(&responder(&format!(
        "    auth:\n      tokens_file: {empty}\n"
    )));
    assert!(auth_of(&config).tokens.is_empty());
    assert!(auth_of(&config).authenticates());
}

#[test]
fn token_errors_are_located() {
    let entry = |fields: &str| {
        responder(&format!(
            "    auth:\n      tokens:\n        - {{ {fields} }}\n"
        ))
    };
    let h = hex("a");
    let cases = [
        (
            "sha256: abc, tenant: t, nodes: [n], clusters: [c]".to_owned(),
            "64 hexadecimal digits",
        ),
        (
            format!("sha256: {h}, tenant: t, nodes: [], clusters: [c]"),
            "the list is empty",
        ),
        (
            format!("sha256: {h}, tenant: t, nodes: [\"a*b\"], clusters: [c]"),
            "`*` in the middle",
        ),
        (
            format!("sha256: {h}, tenant: \"a:b\", nodes: [n], clusters: [c]"),
            "tenant id `a:b`",
        ),
        (
            format!("sha256: {h}, tenant: t, nodes: [n]"),
            "missing field `clusters`",
        ),
        (
            format!("sha256: {h}, tenant: t, nodes: [n], clusters: [c], token: x"),
            "unknown field `token`",
        ),
    ];
    for (fields, needle) in cases {
        let (line, _, message) = error(&entry(&fields));
        assert_eq!(line, 6, "{message}");
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let dup = format!(
        "    auth:\n      tokens:\n        - {{ sha256: {h}, tenant: a, nodes: [n], clusters: [c] }}\n        - {{ sha256: {}, tenant: b, nodes: [n], clusters: [c] }}\n",
        h.to_ascii_uppercase()
    );
    let (line, _, message) = error(&responder(&dup));
    assert!((4..=7).contains(&line), "within the auth mapping: {line}");
    assert!(message.contains("tokens entry #2 repeats"), "{message}");
}

#[test]
fn tokens_file_errors_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "tokens.yaml",
        &format!(
            "- {{ sha256: {}, tenant: a, nodes: [n], clusters: [c] }}\n- {{ sha256: nothex, tenant: a, nodes: [n], clusters: [c] }}\n",
            hex("a")
        ),
    );
    let source = responder(&format!("    auth:\n      tokens_file: {file}\n"));
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (5, 20), "at the tokens_file value");
    assert!(message.contains(&format!("{file}:2:")), "{message}");
    assert!(message.contains("64 hexadecimal digits"), "{message}");

    let missing = responder("    auth:\n      tokens_file: /nonexistent/tokens.yaml\n");
    let (_, _, message) = error(&missing);
    assert!(
        message.contains("/nonexistent/tokens.yaml: cannot read"),
        "{message}"
    );

    // A token repeated between the inline list and the file.
    let again = write(
        dir.path(),
        "again.yaml",
        &format!(
            "- {{ sha256: {}, tenant: b, nodes: [n], clusters: [c] }}\n",
            hex("a")
        ),
    );
    let both = format!(
        "    auth:\n      tokens: [{{ sha256: {}, tenant: a, nodes: [n], clusters: [c] }}]\n      tokens_file: {again}\n",
        hex("a")
    );
    let (_, _, message) = error(&responder(&both));
    assert!(
        message.contains("tokens_file entry #1 repeats"),
        "{message}"
    );
}

#[test]
fn jwt_shape_defaults_and_jwks_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = write(
        dir.path(),
        "jwks.json",
        &jwt_keys::jwks(&[
            &jwt_keys::es256("a"),
            &jwt_keys::rs256(),
            &jwt_keys::ed25519("c"),
        ]),
    );
    let jwt = |extra: &str| {
        responder(&format!(
            "    auth:\n      jwt:\n        issuer: https://issuer.test\n        audiences: [rtun]\n        jwks_file: {jwks}\n{extra}"
        ))
    };
    let config = ok(&jwt(""));
    let rules = &auth_of(&config).jwt.as_ref().expect("jwt").rules;
    assert_eq!(rules.keys.len(), 3);
    assert_eq!(rules.clock_skew, std::time::Duration::from_secs(60));
    assert_eq!(rules.claims, crate::auth::jwt::ClaimNames::default());
    assert!(config
        .summary()
        .contains("authentication: jwt (issuer https://issuer.test, 3 keys"));

    let config = ok(&jwt(
        "        clock_skew: 5s\n        node_claim: sub\n        tenant_claim: org\n",
    ));
    let rules = &auth_of(&config).jwt.as_ref().expect("jwt").rules;
    assert_eq!(rules.clock_skew, std::time::Duration::from_secs(5));
    assert_eq!(rules.claims.node.as_deref(), Some("sub"));
    assert_eq!(rules.claims.tenant, "org");

    let (line, _, message) = error(&jwt("        audiences: []\n"));
    assert!(line >= 5, "{message}");
    let (_, _, message) = error(&responder(&format!(
        "    auth:\n      jwt:\n        issuer: i\n        audiences: []\n        jwks_file: {jwks}\n"
    )));
    assert!(message.contains("the list is empty"), "{message}");
    let (_, _, message) = error(&responder(&format!(
        "    auth:\n      jwt:\n        audiences: [a]\n        jwks_file: {jwks}\n"
    )));
    assert!(message.contains("missing field `issuer`"), "{message}");

    let bad = write(
        dir.path(),
        "bad.json",
        "{\n  \"keys\": [\n    {\"kty\": \"oct\", \"k\": \"AA\"}\n  ]\n}\n",
    );
    let source = responder(&format!(
        "    auth:\n      jwt:\n        issuer: i\n        audiences: [a]\n        jwks_file: {bad}\n"
    ));
    let (line, column, message) = error(&source);
    assert_eq!((line, column), (8, 20), "{message}");
    assert!(
        message.contains(&format!("jwks_file {bad}: {bad}:")),
        "{message}"
    );
    assert!(message.contains("symmetric"), "{message}");
}

#[test]
fn mtls_formats_are_parsed_at_load() {
    let tls = "    tls: { cert: c.pem, key: k.pem, client_ca: ca.pem }\n";
    let mtls =
        |formats: &str, tls: &str| responder(&format!("{tls}    auth:\n      mtls:\n{formats}"));
    let config = ok(&mtls(
        "        node_id_format: \"%DOWNSTREAM_PEER_DNS_SAN%\"\n        tenant_id_format: acme\n",
        tls,
    ));
    let auth = auth_of(&config);
    let binding = auth.mtls.as_ref().expect("mtls");
    assert_eq!(
        binding.node_id_format.as_ref().map(|f| f.as_str()),
        Some("%DOWNSTREAM_PEER_DNS_SAN%")
    );
    assert!(binding.cluster_id_format.is_none());
    assert_eq!(auth.describe(), "mtls binding (node, tenant)");
    assert!(config
        .summary()
        .contains("TLS: on (client certificates required)"));

    let (line, column, message) = error(&mtls(
        "        cluster_id_format: \"edge-%DOWNSTREAM_PEER_SAN%\"\n",
        tls,
    ));
    assert_eq!((line, column), (7, 28), "{message}");
    assert!(message.contains("column 6 of the format"), "{message}");
    assert!(message.contains("DOWNSTREAM_PEER_SAN"), "{message}");

    let (_, _, message) =
        error(&mtls("        {}\n", tls).replace("      mtls:\n        {}", "      mtls: {}"));
    assert!(message.contains("mtls binds nothing"), "{message}");

    let (_, _, message) = error(&mtls("        node_id_format: x\n", ""));
    assert!(message.contains("needs `client_ca:`"), "{message}");
    let no_ca = "    tls: { cert: c.pem, key: k.pem }\n";
    let (_, _, message) = error(&mtls("        node_id_format: x\n", no_ca));
    assert!(message.contains("needs `client_ca:`"), "{message}");
}

#[test]
fn required_cluster_name() {
    let config = ok(&responder(
        "    auth:\n      required_cluster_name: cloud\n",
    ));
    assert_eq!(
        auth_of(&config).required_cluster_name.as_deref(),
        Some("cloud")
    );
    assert!(
        !auth_of(&config).authenticates(),
        "a cluster name is not a credential"
    );
    assert!(config.summary().contains("required cluster name: cloud"));
    let (_, _, message) = error(&responder(
        "    auth:\n      required_cluster_name: \"a b\"\n",
    ));
    assert!(message.contains("required_cluster_name `a b`"), "{message}");
}

fn initiator(auth: &str, headers: &str) -> String {
    format!(
        "node: {{ id: n1, cluster: c1 }}
clusters:
  app: {{ endpoints: [\"127.0.0.1:8080\"] }}
  cloud: {{ endpoints: [\"127.0.0.1:9000\"] }}
initiator:
  tunnels: [{{ cluster: cloud }}]
  routes: [{{ prefix: /, cluster: app }}]
{auth}{headers}"
    )
}

#[test]
fn initiator_token_sources() {
    let source_of = |auth: &str| ok(&initiator(auth, "")).initiator.expect("initiator").auth;
    let inline = source_of("  auth: { token: \" s3cret \" }\n").expect("inline");
    assert!(matches!(&inline, TokenSource::Inline(s) if s.expose() == "s3cret"));
    assert!(
        !format!("{inline:?}").contains("s3cret"),
        "Debug hides the token"
    );
    assert_eq!(
        source_of("  auth: { token_file: /run/token }\n"),
        Some(TokenSource::File("/run/token".into()))
    );
    assert_eq!(
        source_of("  auth: { token_env: RTUN_TOKEN }\n"),
        Some(TokenSource::Env("RTUN_TOKEN".into()))
    );
    assert_eq!(source_of(""), None);
    let summary = ok(&initiator("  auth: { token: s3cret }\n", "")).summary();
    assert!(
        summary.contains("credential: bearer inline token"),
        "{summary}"
    );
    assert!(!summary.contains("s3cret"), "{summary}");

    for (auth, needle) in [
        ("  auth: {}\n", "exactly one"),
        ("  auth: { token: a, token_env: B }\n", "exactly one"),
        ("  auth: { token: \"a b\" }\n", "space"),
        ("  auth: { token: \"\" }\n", "empty"),
        (
            "  auth: { token_env: \"A=B\" }\n",
            "not an environment variable name",
        ),
        ("  auth: { password: x }\n", "unknown field `password`"),
    ] {
        let (line, _, message) = error(&initiator(auth, ""));
        assert_eq!(line, 8, "{auth}: {message}");
        assert!(
            message.contains(needle),
            "{auth}: {needle:?} not in {message:?}"
        );
        assert!(!message.contains("a b"), "never echo a token: {message}");
    }
}

#[test]
fn authorization_header_and_auth_are_exclusive() {
    let headers = "  handshake_headers: { authorization: \"Bearer x\" }\n";
    ok(&initiator("", headers));
    let (line, column, message) = error(&initiator("  auth: { token_env: T }\n", headers));
    assert_eq!((line, column), (9, 24), "{message}");
    assert!(message.contains("initiator.auth"), "{message}");
}
