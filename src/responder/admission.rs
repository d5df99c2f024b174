//! Admission: the stages a parsed handshake passes before its tunnel is accepted.
//!
//! The acceptor reads and parses the handshake (the codec in `protocol` rejects what is
//! malformed), then asks [`Admission`] whether this identity may open a tunnel over this
//! connection. Each [`AdmissionStage`] sees the handshake and the connection's facts and
//! returns accept or a typed [`Rejection`]; the first rejection wins. Authentication (401) and
//! authorization (403) are stages here; placement (per-node and total caps, node id / cluster
//! id collisions) follows in the acceptor because it reserves a slot.
//!
//! The stages, in order (`Admission::for_listener`), each present only when configured
//! (`responder.tunnel_listener.auth`, the credential logic itself is in `crate::auth`):
//!
//! 1. [`NotDraining`]: 503 while shutting down.
//! 2. [`BearerCredentials`]: `authorization: Bearer` with a configured token (by hash) or a
//!    valid JWT, else 401; the token's grant must allow the tenant, node and cluster, else 403.
//! 3. [`PeerIdentity`]: the mTLS binding; no client certificate 401, a mismatch 403.
//! 4. [`RequiredCluster`]: the upstream cluster name header, else 400.

use std::net::SocketAddr;

use crate::auth::{bearer_token, Denial, JwtRules, MtlsBinding, TokenTable};
use crate::config::TunnelListenerConfig;
use crate::protocol::{AcceptedHandshake, Rejection};
use crate::shard::shutdown::ShutdownSignal;
use crate::tls::PeerCertificate;

/// What is known about the connection a handshake arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionFacts {
    /// The initiator's address as seen by the tunnel listener.
    pub peer: SocketAddr,
    /// The verified client certificate of a TLS connection (`None` in plaintext, or when the
    /// peer presented none).
    pub peer_certificate: Option<PeerCertificate>,
}

/// One check on a handshake.
pub trait AdmissionStage {
    fn admit(
        &self,
        handshake: &AcceptedHandshake,
        connection: &ConnectionFacts,
    ) -> Result<(), Rejection>;
}

/// The tunnel listener's admission stages, in order.
pub struct Admission {
    stages: Vec<Box<dyn AdmissionStage>>,
}

impl Admission {
    pub fn new(stages: Vec<Box<dyn AdmissionStage>>) -> Self {
        Self { stages }
    }

    /// The stages a tunnel listener runs: the one list to extend with a new check.
    pub fn for_listener(cfg: &TunnelListenerConfig, shutdown: &ShutdownSignal) -> Self {
        let auth = &cfg.auth;
        let mut stages: Vec<Box<dyn AdmissionStage>> =
            vec![Box::new(NotDraining(shutdown.clone()))];
        if auth.bearer() {
            stages.push(Box::new(BearerCredentials {
                tokens: TokenTable::new(auth.tokens.clone()),
                jwt: auth.jwt.as_ref().map(|j| j.rules.clone()),
            }));
        }
        if let Some(binding) = &auth.mtls {
            stages.push(Box::new(PeerIdentity(binding.clone())));
        }
        if let Some(name) = &auth.required_cluster_name {
            stages.push(Box::new(RequiredCluster(name.clone())));
        }
        Self::new(stages)
    }

    /// Runs every stage; the first rejection wins.
    pub fn admit(
        &self,
        handshake: &AcceptedHandshake,
        connection: &ConnectionFacts,
    ) -> Result<(), Rejection> {
        self.stages
            .iter()
            .try_for_each(|stage| stage.admit(handshake, connection))
    }
}

/// A responder that is shutting down takes no new tunnels (503).
struct NotDraining(ShutdownSignal);

impl AdmissionStage for NotDraining {
    fn admit(&self, _: &AcceptedHandshake, _: &ConnectionFacts) -> Result<(), Rejection> {
        match self.0.is_triggered() {
            true => Err(Rejection::ShuttingDown),
            false => Ok(()),
        }
    }
}

impl From<Denial> for Rejection {
    fn from(denial: Denial) -> Self {
        match denial {
            Denial::Unauthenticated(reason) => Rejection::Unauthenticated(reason),
            Denial::Forbidden(reason) => Rejection::Forbidden(reason),
        }
    }
}

/// Bearer credentials: a configured token (looked up by its hash) or, failing that, a JWT
/// (a token of three dot-separated parts) when `jwt` is configured. Unknown or invalid: 401.
/// Then the credential's grant must allow the identity: 403.
struct BearerCredentials {
    tokens: TokenTable,
    jwt: Option<JwtRules>,
}

impl AdmissionStage for BearerCredentials {
    fn admit(&self, hs: &AcceptedHandshake, _: &ConnectionFacts) -> Result<(), Rejection> {
        let token = bearer_token(&hs.headers)?;
        if let Some(grant) = self.tokens.find(token) {
            return Ok(grant.authorize(&hs.identity)?);
        }
        let is_jwt = token.iter().filter(|&&b| b == b'.').count() == 2;
        match &self.jwt {
            Some(jwt) if is_jwt => Ok(jwt.verify(token)?.authorize(&hs.identity)?),
            _ => Err(Rejection::Unauthenticated("Unknown token".into())),
        }
    }
}

/// mTLS identity binding: the client certificate must vouch for the identity headers.
struct PeerIdentity(MtlsBinding);

impl AdmissionStage for PeerIdentity {
    fn admit(&self, hs: &AcceptedHandshake, facts: &ConnectionFacts) -> Result<(), Rejection> {
        Ok(self
            .0
            .check(facts.peer_certificate.as_ref(), &hs.identity)?)
    }
}

/// Envoy's `required_cluster_name`: the initiator must name this responder's cluster.
struct RequiredCluster(String);

impl AdmissionStage for RequiredCluster {
    fn admit(&self, hs: &AcceptedHandshake, _: &ConnectionFacts) -> Result<(), Rejection> {
        match hs.upstream_cluster.as_deref() == Some(self.0.as_str()) {
            true => Ok(()),
            false => Err(Rejection::WrongCluster),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TunnelIdentity;
    use crate::shard::shutdown::Shutdown;

    fn handshake(node: &str) -> AcceptedHandshake {
        AcceptedHandshake {
            identity: TunnelIdentity {
                node_id: node.into(),
                cluster_id: "c".into(),
                tenant_id: String::new(),
            },
            upstream_cluster: None,
            form: Default::default(),
            initiation_time_ms: None,
            headers: Vec::new(),
        }
    }

    fn facts() -> ConnectionFacts {
        ConnectionFacts {
            peer: "127.0.0.1:4000".parse().expect("address"),
            peer_certificate: None,
        }
    }

    /// Refuses one node id.
    struct Deny(&'static str);

    impl AdmissionStage for Deny {
        fn admit(&self, hs: &AcceptedHandshake, _: &ConnectionFacts) -> Result<(), Rejection> {
            match hs.identity.node_id == self.0 {
                true => Err(Rejection::Forbidden("denied".into())),
                false => Ok(()),
            }
        }
    }

    #[test]
    fn first_rejection_wins_and_others_pass() {
        let (shutdown, signal) = Shutdown::new();
        let admission = Admission::new(vec![Box::new(NotDraining(signal)), Box::new(Deny("bad"))]);
        assert_eq!(admission.admit(&handshake("good"), &facts()), Ok(()));
        let denied = admission.admit(&handshake("bad"), &facts());
        assert_eq!(denied.as_ref().map_err(Rejection::status), Err(403));
        shutdown.trigger();
        let draining = admission.admit(&handshake("bad"), &facts());
        assert_eq!(
            draining,
            Err(Rejection::ShuttingDown),
            "draining is checked first"
        );
    }

    // -----------------------------------------------------------------------------------------
    // The authentication stages

    use crate::auth::jwt::testing::{self as jwt_keys, TestKey};
    use crate::auth::jwt::{parse_jwks, ClaimNames};
    use crate::auth::{Grant, IdPattern, PeerFormat, TokenGrant};
    use serde_json::json;

    fn patterns(ps: &[&str]) -> Vec<IdPattern> {
        ps.iter()
            .map(|p| IdPattern::parse(p).expect("pattern"))
            .collect()
    }

    fn token(secret: &str, tenant: &str, nodes: &[&str], clusters: &[&str]) -> TokenGrant {
        TokenGrant {
            sha256: crate::auth::tokens::sha256(secret.as_bytes()),
            grant: Grant {
                tenant: tenant.into(),
                nodes: patterns(nodes),
                clusters: patterns(clusters),
            },
        }
    }

    fn jwt_rules(key: &TestKey) -> JwtRules {
        JwtRules {
            issuer: "https://issuer.test".into(),
            audiences: vec!["rtun".into()],
            clock_skew: std::time::Duration::from_secs(60),
            claims: ClaimNames::default(),
            keys: parse_jwks(&jwt_keys::jwks(&[key])).expect("jwks"),
        }
    }

    fn bearer(tokens: Vec<TokenGrant>, jwt: Option<JwtRules>) -> BearerCredentials {
        BearerCredentials {
            tokens: TokenTable::new(tokens),
            jwt,
        }
    }

    /// A handshake of `tenant`/`node`/`cluster` sending `authorization` (if any).
    fn hs(
        tenant: &str,
        node: &str,
        cluster: &str,
        authorization: Option<&str>,
    ) -> AcceptedHandshake {
        let mut headers = vec![("host".to_owned(), b"r".to_vec())];
        if let Some(value) = authorization {
            headers.push(("authorization".to_owned(), value.as_bytes().to_vec()));
        }
        AcceptedHandshake {
            identity: TunnelIdentity {
                node_id: node.into(),
                cluster_id: cluster.into(),
                tenant_id: tenant.into(),
            },
            upstream_cluster: Some("cloud".into()),
            form: Default::default(),
            initiation_time_ms: None,
            headers,
        }
    }

    fn status(result: Result<(), Rejection>) -> u16 {
        result.map_or_else(|r| r.status(), |()| 200)
    }

    #[test]
    fn tokens_authenticate_then_bind_tenant_node_and_cluster() {
        let stage = bearer(
            vec![
                token("acme-secret", "acme", &["edge-*"], &["west"]),
                token("globex-secret", "globex", &["*"], &["*"]),
            ],
            None,
        );
        let admit = |h: AcceptedHandshake| status(stage.admit(&h, &facts()));
        let acme = Some("Bearer acme-secret");
        assert_eq!(admit(hs("acme", "edge-1", "west", acme)), 200);
        assert_eq!(admit(hs("acme", "edge-1", "west", None)), 401, "no token");
        assert_eq!(
            admit(hs("acme", "edge-1", "west", Some("Bearer nope"))),
            401
        );
        assert_eq!(admit(hs("acme", "edge-1", "west", Some("Basic abc"))), 401);
        assert_eq!(
            admit(hs("globex", "edge-1", "west", acme)),
            403,
            "other tenant"
        );
        assert_eq!(admit(hs("", "edge-1", "west", acme)), 403, "empty tenant");
        assert_eq!(
            admit(hs("acme", "core-1", "west", acme)),
            403,
            "node not granted"
        );
        assert_eq!(
            admit(hs("acme", "edge-1", "east", acme)),
            403,
            "cluster not granted"
        );
        assert_eq!(
            admit(hs(
                "globex",
                "edge-1",
                "anything",
                Some("Bearer globex-secret")
            )),
            200
        );
        let rejection = stage
            .admit(
                &hs("acme", "edge-1", "west", Some("Bearer wrong")),
                &facts(),
            )
            .expect_err("401");
        assert!(!rejection.reason().contains("wrong"), "{rejection}");
    }

    #[test]
    fn jwts_and_tokens_together() {
        let key = jwt_keys::es256("k1");
        let stage = bearer(
            vec![token("static", "acme", &["core"], &["core"])],
            Some(jwt_rules(&key)),
        );
        let jwt = jwt_keys::sign(&key, Some("k1"), &jwt_keys::claims());
        let admit = |h: AcceptedHandshake| status(stage.admit(&h, &facts()));
        let with_jwt = format!("Bearer {jwt}");
        assert_eq!(admit(hs("acme", "edge-9", "edge", Some(&with_jwt))), 200);
        assert_eq!(
            admit(hs("acme", "core", "core", Some("Bearer static"))),
            200
        );
        assert_eq!(admit(hs("acme", "core", "edge", Some(&with_jwt))), 403);
        assert_eq!(admit(hs("globex", "edge-9", "edge", Some(&with_jwt))), 403);
        let mut expired = jwt_keys::claims();
        expired["exp"] = json!(jwt_keys::now() - 3600);
        let expired = format!("Bearer {}", jwt_keys::sign(&key, None, &expired));
        assert_eq!(admit(hs("acme", "edge-9", "edge", Some(&expired))), 401);
        assert_eq!(
            admit(hs("acme", "edge-9", "edge", Some("Bearer a.b.c"))),
            401
        );
        // Tokens only: a JWT is just an unknown token.
        let tokens_only = bearer(vec![token("static", "acme", &["*"], &["*"])], None);
        assert_eq!(
            status(tokens_only.admit(&hs("acme", "edge-9", "edge", Some(&with_jwt)), &facts())),
            401
        );
    }

    fn cert(dns: &str) -> PeerCertificate {
        PeerCertificate {
            uri_sans: vec![format!("spiffe://acme.test/{dns}")],
            dns_sans: vec![dns.into()],
            subject: format!("CN={dns},O=acme"),
            fingerprint_sha256: "00".repeat(32),
        }
    }

    fn mtls_stage() -> PeerIdentity {
        let f = |s: &str| Some(PeerFormat::parse(s).expect("format"));
        PeerIdentity(MtlsBinding {
            node_id_format: f("%DOWNSTREAM_PEER_DNS_SAN%"),
            cluster_id_format: f("edge"),
            tenant_id_format: f("acme"),
        })
    }

    #[test]
    fn mtls_binding_uses_the_peer_certificate() {
        let stage = mtls_stage();
        let with_cert = |dns: &str| ConnectionFacts {
            peer_certificate: Some(cert(dns)),
            ..facts()
        };
        let h = hs("acme", "edge-1", "edge", None);
        assert_eq!(status(stage.admit(&h, &with_cert("edge-1"))), 200);
        assert_eq!(status(stage.admit(&h, &facts())), 401, "no certificate");
        assert_eq!(
            status(stage.admit(&h, &with_cert("edge-2"))),
            403,
            "another node's"
        );
        let other_cluster = hs("acme", "edge-1", "core", None);
        assert_eq!(
            status(stage.admit(&other_cluster, &with_cert("edge-1"))),
            403
        );
    }

    #[test]
    fn required_cluster_name_is_400() {
        let stage = RequiredCluster("cloud".into());
        let mut h = hs("", "n", "c", None);
        assert_eq!(status(stage.admit(&h, &facts())), 200);
        h.upstream_cluster = Some("Cloud".into());
        assert_eq!(stage.admit(&h, &facts()), Err(Rejection::WrongCluster));
        h.upstream_cluster = None;
        assert_eq!(status(stage.admit(&h, &facts())), 400);
    }

    #[test]
    fn for_listener_builds_only_the_configured_stages() {
        let (_shutdown, signal) = Shutdown::new();
        let base = "responder:\n  tunnel_listener:\n    listen: 127.0.0.1:9000\n";
        let egress = "  egress_listener:\n    listen: 127.0.0.1:8085\n";
        let listener = |auth: &str| {
            let yaml = format!("{base}{auth}{egress}");
            let config = crate::config::parse(&yaml, "t.yaml").expect("config");
            config.responder.expect("responder").tunnel_listener
        };
        let open = Admission::for_listener(&listener(""), &signal);
        assert_eq!(open.stages.len(), 1, "no auth: only the drain check");
        assert_eq!(open.admit(&hs("x", "n", "c", None), &facts()), Ok(()));

        // sha256("s3cret")
        let hash = crate::auth::tokens::sha256(b"s3cret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let auth = format!(
            "    auth:\n      tokens: [{{ sha256: {hash}, tenant: acme, nodes: [n], clusters: [c] }}]\n      required_cluster_name: cloud\n"
        );
        let closed = Admission::for_listener(&listener(&auth), &signal);
        assert_eq!(closed.stages.len(), 3);
        let ok = hs("acme", "n", "c", Some("Bearer s3cret"));
        assert_eq!(closed.admit(&ok, &facts()), Ok(()));
        assert_eq!(
            status(closed.admit(&hs("acme", "n", "c", None), &facts())),
            401
        );
        let mut wrong_cluster = ok.clone();
        wrong_cluster.upstream_cluster = Some("elsewhere".into());
        assert_eq!(status(closed.admit(&wrong_cluster, &facts())), 400);
    }

    /// A random string of ids, separators, globs and junk.
    fn random_text(rng: &mut fastrand::Rng) -> String {
        const PIECES: &[&str] = &[
            "edge", "-", "1", "*", ":", "acme", "west", "core", " ", ".", "\u{e9}", "%", "\0",
            "Bearer ", "eyJ", "=",
        ];
        let n = rng.usize(0..8);
        (0..n).map(|_| PIECES[rng.usize(..PIECES.len())]).collect()
    }

    #[test]
    fn fuzz_admission_never_panics_and_answers_400_401_403() {
        let key = jwt_keys::es256("k");
        let (_shutdown, signal) = Shutdown::new();
        let admission = Admission::new(vec![
            Box::new(NotDraining(signal)),
            Box::new(bearer(
                vec![
                    token("good", "acme", &["edge-*"], &["west", "*-core"]),
                    token("any", "", &["*"], &["*"]),
                ],
                Some(jwt_rules(&key)),
            )),
            Box::new(PeerIdentity(MtlsBinding {
                node_id_format: PeerFormat::parse("%DOWNSTREAM_PEER_DNS_SAN%").ok(),
                cluster_id_format: None,
                tenant_id_format: PeerFormat::parse("acme").ok(),
            })),
            Box::new(RequiredCluster("cloud".into())),
        ]);
        let mut rng = fastrand::Rng::with_seed(0x5eed_a11c);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..4000 {
            // Half the cases stay close to valid handshakes, so that every stage is reached;
            // the other half is junk anywhere.
            let sane = rng.bool();
            let pick = |rng: &mut fastrand::Rng, fixed: &[&str]| match sane || rng.u8(..4) > 0 {
                true => fixed[rng.usize(..fixed.len())].to_owned(),
                false => random_text(rng),
            };
            let tenant = pick(&mut rng, &["acme", "acme", "", "globex"]);
            let node = pick(&mut rng, &["edge-1", "edge-", "core"]);
            let cluster = pick(&mut rng, &["west", "x-core", "edge"]);
            let mut claims = jwt_keys::claims();
            if !sane && rng.bool() {
                claims["rtun_tenant"] = json!(random_text(&mut rng));
                claims["rtun_nodes"] = json!([random_text(&mut rng), "edge-*"]);
                claims["exp"] = json!(jwt_keys::now() + rng.i64(-7200..7200));
            }
            let authorization = match rng.usize(0..if sane { 4 } else { 6 }) {
                0 => Some("Bearer good".to_owned()),
                1 => Some(format!("Bearer {}", jwt_keys::sign(&key, None, &claims))),
                2 => Some("Bearer any".to_owned()),
                3 => None,
                4 => Some(format!("Bearer {}", random_text(&mut rng))),
                _ => Some(random_text(&mut rng)),
            };
            let mut h = hs(&tenant, &node, &cluster, authorization.as_deref());
            if !sane && rng.bool() {
                h.headers
                    .push(("authorization".into(), random_text(&mut rng).into_bytes()));
            }
            h.upstream_cluster = match rng.usize(0..if sane { 4 } else { 3 }) {
                0 => None,
                1 => Some(random_text(&mut rng)),
                _ => Some("cloud".into()),
            };
            let connection = ConnectionFacts {
                peer_certificate: match rng.usize(0..if sane { 4 } else { 3 }) {
                    0 => None,
                    1 => Some(cert(&random_text(&mut rng))),
                    _ => Some(cert(&node)),
                },
                ..facts()
            };
            let status = status(admission.admit(&h, &connection));
            assert!(
                matches!(status, 200 | 400 | 401 | 403),
                "{status} for {h:?}"
            );
            *seen.entry(status).or_insert(0u32) += 1;
        }
        // The generator reaches every outcome.
        for status in [200, 400, 401, 403] {
            assert!(seen.get(&status).is_some_and(|&n| n > 10), "{seen:?}");
        }
    }
}
