//! JSON Web Tokens as Envoy's `jwt_authn` checks them, against keys from a local JWKS file.
//!
//! A token is accepted when: its header's `alg` is RS256, ES256 or EdDSA (never `none` or an
//! HMAC algorithm); a key of the JWKS with that algorithm (and the header's `kid`, when it has
//! one) verifies its signature; `exp` is present and not past, `nbf` (if present) is not in the
//! future, both with `clock_skew` of leeway; `iss` equals the configured issuer; and `aud` names
//! one of the configured audiences. Anything else is 401.
//!
//! The accepted token's claims then say what it may claim (a [`Grant`]; failing that, 403):
//! - `tenant_claim` (default `rtun_tenant`): a string, the tenant id;
//! - `nodes_claim` (default `rtun_nodes`): a pattern or a list of patterns for the node id,
//!   unless `node_claim` is set (for example `sub`): then the node id must equal that claim;
//! - `clusters_claim` (default `rtun_clusters`) and `cluster_claim`, the same for the cluster id.
//!
//! Verification uses `jsonwebtoken` 9 on its ring backend, the crypto library the TLS stack
//! already builds.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::grant::Grant;
use super::patterns::IdPattern;
use super::Denial;

/// The algorithms a token may be signed with.
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Names of the claims a token's grant is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    /// String claim: the tenant id (default `rtun_tenant`).
    pub tenant: String,
    /// Pattern or list of patterns for the node id (default `rtun_nodes`).
    pub nodes: String,
    /// Pattern or list of patterns for the cluster id (default `rtun_clusters`).
    pub clusters: String,
    /// When set, the node id must equal this string claim (for example `sub`); `nodes` is not
    /// consulted.
    pub node: Option<String>,
    /// When set, the cluster id must equal this string claim; `clusters` is not consulted.
    pub cluster: Option<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            tenant: "rtun_tenant".into(),
            nodes: "rtun_nodes".into(),
            clusters: "rtun_clusters".into(),
            node: None,
            cluster: None,
        }
    }
}

/// One verification key of the JWKS.
#[derive(Clone)]
pub struct JwtKey {
    /// The key's `kid`, if it has one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub algorithm: Algorithm,
    jwk: Jwk,
    key: DecodingKey,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PartialEq for JwtKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.algorithm == other.algorithm && self.jwk == other.jwk
    }
}

impl Eq for JwtKey {}

/// Reads a JWKS document (`{"keys": [...]}`). Errors start with `LINE:COLUMN: ` for JSON
/// problems or name the key (`key #2 (kid "a")`) for unusable keys.
pub fn parse_jwks(text: &str) -> Result<Vec<JwtKey>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        format!(
            "{}:{}: {}",
            e.line(),
            e.column(),
            message.replacen(&suffix, "", 1)
        )
    })?;
    if set.keys.is_empty() {
        return Err("1:1: the key set has no keys".into());
    }
    let mut keys: Vec<JwtKey> = Vec::with_capacity(set.keys.len());
    for (i, jwk) in set.keys.into_iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let name = match &kid {
            Some(kid) => format!("key #{} (kid {kid:?})", i + 1),
            None => format!("key #{}", i + 1),
        };
        let key = jwt_key(jwk).map_err(|e| format!("{name}: {e}"))?;
        if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
            return Err(format!("{name}: the kid is used by an earlier key"));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn jwt_key(jwk: Jwk) -> Result<JwtKey, String> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("`use` is not `sig`: not a signing key".into());
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::OctetKeyPair(okp), None | Some(KeyAlgorithm::EdDSA))
            if okp.curve == EllipticCurve::Ed25519 =>
        {
            Algorithm::EdDSA
        }
        (AlgorithmParameters::OctetKey(_), _) => {
            return Err("symmetric (`oct`) keys are not accepted: use RS256, ES256 or EdDSA".into())
        }
        (_, Some(alg)) => {
            return Err(format!(
                "algorithm {alg} with this key type is not accepted: use RSA keys for RS256, \
                 P-256 keys for ES256, Ed25519 keys for EdDSA"
            ))
        }
        _ => {
            return Err(
                "key type or curve not accepted: use RSA (RS256), EC P-256 (ES256) or OKP \
                 Ed25519 (EdDSA)"
                    .into(),
            )
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    Ok(JwtKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        jwk,
        key,
    })
}

/// What a JWT must satisfy, and where its grant is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtRules {
    /// Required `iss`.
    pub issuer: String,
    /// `aud` must name one of these.
    pub audiences: Vec<String>,
    /// Leeway for `exp` and `nbf` (whole seconds count).
    pub clock_skew: Duration,
    /// Where the grant comes from.
    pub claims: ClaimNames,
    /// Verification keys, from the JWKS file.
    pub keys: Vec<JwtKey>,
}

impl JwtRules {
    /// Verifies `token` and reads its grant.
    pub fn verify(&self, token: &[u8]) -> Result<Grant, Denial> {
        let claims = self.verified_claims(token)?;
        self.grant(&claims)
    }

    fn verified_claims(&self, token: &[u8]) -> Result<Map<String, Value>, Denial> {
        let invalid = || Denial::unauthenticated("Invalid token");
        let token = std::str::from_utf8(token).map_err(|_| invalid())?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(Denial::unauthenticated("JWT algorithm not accepted"));
        }
        let candidates = self.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && (header.kid.is_none() || header.kid.as_deref() == k.kid.as_deref())
        });
        let validation = self.validation(header.alg);
        let mut last = Denial::unauthenticated("No key of the JWKS matches the JWT");
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        // Another key of the same algorithm may still verify it.
                        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => {
                            Denial::unauthenticated("JWT signature not valid")
                        }
                        ErrorKind::ExpiredSignature => {
                            return Err(Denial::unauthenticated("JWT expired"))
                        }
                        ErrorKind::ImmatureSignature => {
                            return Err(Denial::unauthenticated("JWT not valid yet (nbf)"))
                        }
                        ErrorKind::InvalidIssuer => {
                            return Err(Denial::unauthenticated("JWT issuer not accepted"))
                        }
                        ErrorKind::InvalidAudience => {
                            return Err(Denial::unauthenticated("JWT audience not accepted"))
                        }
                        ErrorKind::MissingRequiredClaim(claim) => {
                            let reason = match claim.as_str() {
                                "exp" => "JWT has no exp claim",
                                "iss" => "JWT has no iss claim",
                                "aud" => "JWT has no aud claim",
                                _ => "JWT lacks a required claim",
                            };
                            return Err(Denial::unauthenticated(reason));
                        }
                        _ => return Err(invalid()),
                    };
                }
            }
        }
        Err(last)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.leeway = self.clock_skew.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.validate_aud = true;
        v.set_issuer(&[self.issuer.as_str()]);
        v.set_audience(&self.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v
    }

    fn grant(&self, claims: &Map<String, Value>) -> Result<Grant, Denial> {
        let names = &self.claims;
        let tenant = match claims.get(&names.tenant) {
            Some(Value::String(tenant)) => tenant.clone(),
            _ => return Err(Denial::forbidden("The JWT does not name a tenant")),
        };
        let nodes = ids(claims, names.node.as_deref(), &names.nodes)
            .ok_or_else(|| Denial::forbidden("The JWT does not say which node ids it allows"))?;
        let clusters = ids(claims, names.cluster.as_deref(), &names.clusters)
            .ok_or_else(|| Denial::forbidden("The JWT does not say which cluster ids it allows"))?;
        Ok(Grant {
            tenant,
            nodes,
            clusters,
        })
    }
}

/// The allowed ids: the exact value of `exact_claim` when it is configured, else the patterns
/// of `patterns_claim` (a string or a list of strings). `None` when absent or ill-formed.
fn ids(
    claims: &Map<String, Value>,
    exact_claim: Option<&str>,
    patterns_claim: &str,
) -> Option<Vec<IdPattern>> {
    if let Some(name) = exact_claim {
        return match claims.get(name)? {
            Value::String(id) if !id.is_empty() => Some(vec![IdPattern::Exact(id.clone())]),
            _ => None,
        };
    }
    match claims.get(patterns_claim)? {
        Value::String(p) => Some(vec![IdPattern::parse(p).ok()?]),
        Value::Array(items) => items
            .iter()
            .map(|item| IdPattern::parse(item.as_str()?).ok())
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Keys and tokens for tests: an ES256 and an Ed25519 key generated with ring, an RS256 key
    //! from `tests/data/`, and a signer.

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::{json, Value};

    use super::Algorithm;

    /// The RSA test key (private, PKCS#8 PEM) and its JWK's public parts.
    pub const RSA_PEM: &str = include_str!("../../tests/data/jwt-rs256.pem");
    pub const RSA_JWK: &str = include_str!("../../tests/data/jwt-rs256.jwk.json");

    /// A signing key and the JWK of its public half.
    pub struct TestKey {
        pub algorithm: Algorithm,
        pub encoding: EncodingKey,
        pub jwk: Value,
    }

    pub fn es256(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate P-256");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("P-256 pair");
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        TestKey {
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    pub fn ed25519(kid: &str) -> TestKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 pair");
        TestKey {
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
            }),
        }
    }

    pub fn rs256() -> TestKey {
        TestKey {
            algorithm: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("RSA test key"),
            jwk: serde_json::from_str(RSA_JWK).expect("RSA test JWK"),
        }
    }

    /// A JWKS document of `keys`.
    pub fn jwks(keys: &[&TestKey]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    /// Seconds since the epoch.
    pub fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    }

    /// Signs `claims` with `key`, the header naming `kid` when given.
    pub fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(key.algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    /// Claims valid for an hour, for issuer `iss`, audience `rtun`, tenant `acme`, nodes
    /// `edge-*`, clusters `edge`.
    pub fn claims() -> Value {
        json!({
            "iss": "https://issuer.test", "aud": "rtun", "sub": "edge-1",
            "exp": now() + 3600, "nbf": now() - 10,
            "rtun_tenant": "acme", "rtun_nodes": ["edge-*"], "rtun_clusters": "edge",
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::testing::*;
    use super::*;
    use crate::protocol::TunnelIdentity;

    fn rules(keys: &[&TestKey]) -> JwtRules {
        JwtRules {
            issuer: "https://issuer.test".into(),
            audiences: vec!["other".into(), "rtun".into()],
            clock_skew: Duration::from_secs(60),
            claims: ClaimNames::default(),
            keys: parse_jwks(&jwks(keys)).expect("jwks"),
        }
    }

    fn identity(node: &str, cluster: &str) -> TunnelIdentity {
        TunnelIdentity {
            node_id: node.into(),
            cluster_id: cluster.into(),
            tenant_id: "acme".into(),
        }
    }

    fn unauthenticated(result: Result<Grant, Denial>) -> String {
        match result {
            Err(Denial::Unauthenticated(reason)) => reason.into_owned(),
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn every_algorithm_verifies_and_yields_its_grant() {
        let (es, ed, rs) = (es256("es"), ed25519("ed"), rs256());
        let r = rules(&[&es, &ed, &rs]);
        for (key, kid) in [
            (&es, Some("es")),
            (&ed, Some("ed")),
            (&rs, None),
            (&es, None),
        ] {
            let grant = r
                .verify(sign(key, kid, &claims()).as_bytes())
                .expect("valid");
            assert_eq!(grant.tenant, "acme");
            assert_eq!(grant.authorize(&identity("edge-7", "edge")), Ok(()));
            assert!(matches!(
                grant.authorize(&identity("core-1", "edge")),
                Err(Denial::Forbidden(_))
            ));
        }
    }

    #[test]
    fn signature_key_and_algorithm_failures_are_401() {
        let (es, other) = (es256("es"), es256("other"));
        let r = rules(&[&es]);
        // Signed by a key the JWKS does not have, with and without a kid.
        unauthenticated(r.verify(sign(&other, Some("es"), &claims()).as_bytes()));
        unauthenticated(r.verify(sign(&other, None, &claims()).as_bytes()));
        unauthenticated(r.verify(sign(&es, Some("nope"), &claims()).as_bytes()));
        // HS256 with the public key's bytes as the secret: the classic confusion.
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some("es".into());
        let hs = jsonwebtoken::encode(
            &header,
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(b"x"),
        )
        .expect("sign");
        assert_eq!(
            unauthenticated(r.verify(hs.as_bytes())),
            "JWT algorithm not accepted"
        );
        // alg none.
        let none = format!(
            "{}.{}.",
            URL_SAFE.encode(br#"{"alg":"none"}"#),
            URL_SAFE.encode(claims().to_string())
        );
        unauthenticated(r.verify(none.as_bytes()));
        // Tampered payload.
        let good = sign(&es, None, &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut forged = claims();
        forged["rtun_tenant"] = json!("globex");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE.encode(forged.to_string()),
            parts[2]
        );
        unauthenticated(r.verify(tampered.as_bytes()));
        for garbage in [&b""[..], b"a.b.c", b"not a jwt", b"\xff\xfe", b"..", b"a.b"] {
            unauthenticated(r.verify(garbage));
        }
    }

    use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE;
    use base64::Engine;

    #[test]
    fn time_issuer_and_audience() {
        let es = es256("es");
        let r = rules(&[&es]);
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut c = claims();
            edit(&mut c);
            r.verify(sign(&es, None, &c).as_bytes())
        };
        assert_eq!(
            unauthenticated(with(&|c| c["exp"] = json!(now() - 120))),
            "JWT expired"
        );
        assert!(
            with(&|c| c["exp"] = json!(now() - 30)).is_ok(),
            "within clock_skew"
        );
        assert_eq!(
            unauthenticated(with(&|c| c["nbf"] = json!(now() + 120))),
            "JWT not valid yet (nbf)"
        );
        assert!(
            with(&|c| c["nbf"] = json!(now() + 30)).is_ok(),
            "within clock_skew"
        );
        assert_eq!(
            unauthenticated(with(&|c| {
                c.as_object_mut().map(|o| o.remove("exp"));
            })),
            "JWT has no exp claim"
        );
        assert_eq!(
            unauthenticated(with(&|c| c["iss"] = json!("https://evil.test"))),
            "JWT issuer not accepted"
        );
        assert_eq!(
            unauthenticated(with(&|c| c["aud"] = json!("someone-else"))),
            "JWT audience not accepted"
        );
        assert!(with(&|c| c["aud"] = json!(["x", "other"])).is_ok());
        unauthenticated(with(&|c| {
            c.as_object_mut().map(|o| o.remove("aud"));
        }));
    }

    #[test]
    fn grant_claims_are_required_and_configurable() {
        let es = es256("es");
        let mut r = rules(&[&es]);
        let verify = |r: &JwtRules, edit: &dyn Fn(&mut Value)| {
            let mut c = claims();
            edit(&mut c);
            r.verify(sign(&es, None, &c).as_bytes())
        };
        for (claim, value) in [
            ("rtun_tenant", json!(null)),
            ("rtun_tenant", json!(["acme"])),
            ("rtun_nodes", json!(null)),
            ("rtun_nodes", json!(["ok", 3])),
            ("rtun_nodes", json!("a*b")),
            ("rtun_clusters", json!({})),
        ] {
            let result = verify(&r, &|c| c[claim] = value.clone());
            assert!(
                matches!(result, Err(Denial::Forbidden(_))),
                "{claim}={value}: {result:?}"
            );
        }
        r.claims.node = Some("sub".into());
        let grant = verify(&r, &|_| {}).expect("valid");
        assert_eq!(grant.authorize(&identity("edge-1", "edge")), Ok(()));
        assert!(
            grant.authorize(&identity("edge-2", "edge")).is_err(),
            "sub binds exactly"
        );
        assert!(verify(&r, &|c| c["sub"] = json!("")).is_err());
        r.claims.tenant = "org".into();
        assert!(verify(&r, &|_| {}).is_err(), "no `org` claim");
        assert!(verify(&r, &|c| c["org"] = json!("acme")).is_ok());
    }

    #[test]
    fn jwks_errors_are_located_or_name_the_key() {
        let e = parse_jwks("{\n  \"keys\": [\n    {\"kty\": \"nope\"}\n  ]\n}").unwrap_err();
        assert!(e.starts_with("3:"), "{e}");
        assert!(parse_jwks("{\"keys\": []}")
            .unwrap_err()
            .contains("no keys"));
        assert!(parse_jwks("not json").unwrap_err().starts_with("1:"));
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}"#;
        let e = parse_jwks(oct).unwrap_err();
        assert!(
            e.contains("key #1 (kid \"s\")") && e.contains("symmetric"),
            "{e}"
        );
        let mut es = es256("a").jwk;
        es["alg"] = json!("RS256");
        let e = parse_jwks(&json!({ "keys": [es] }).to_string()).unwrap_err();
        assert!(e.contains("RS256"), "{e}");
        let mut enc = es256("a").jwk;
        enc["use"] = json!("enc");
        assert!(parse_jwks(&json!({ "keys": [enc] }).to_string()).is_err());
        let dup = jwks(&[&es256("same"), &ed25519("same")]);
        assert!(parse_jwks(&dup).unwrap_err().contains("kid is used"));
        let p384 = json!({"keys":[{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}]}).to_string();
        assert!(parse_jwks(&p384).is_err());
    }
}
