//! The token verdict as tables: header, key and claims in, verdict out, the clock passed in.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use super::*;
use crate::auth::token_issuer::Issuer;

const NOW: u64 = 1_800_000_000;

fn config() -> TokenConfig {
    TokenConfig {
        jwks_file: "jwks.json".into(),
        algorithms: vec![
            TokenAlgorithm::ES256,
            TokenAlgorithm::RS256,
            TokenAlgorithm::EdDSA,
        ],
        issuer: Some("https://issuer.example".into()),
        audience: Some("mqtt-gateway".into()),
        principal_claim: "sub".into(),
        groups_claim: Some("groups".into()),
        max_lifetime: Duration::from_secs(3600),
        leeway: Duration::from_secs(30),
        auth_method: "JWT".into(),
    }
}

fn claims() -> Value {
    json!({
        "sub": "dev-1",
        "iss": "https://issuer.example",
        "aud": ["other", "mqtt-gateway"],
        "iat": NOW - 60,
        "exp": NOW + 600,
        "groups": ["sensors"],
    })
}

fn with(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    if let Some(map) = c.as_object_mut() {
        f(map);
    }
    c
}

fn keys(issuers: &[&Issuer]) -> TokenKeys {
    TokenKeys::parse(Path::new("jwks.json"), Issuer::jwks(issuers).as_bytes()).unwrap()
}

/// Every claim rule of `lifecycle.md` ("On the wire") and issue 22, at a fixed `now`.
#[test]
fn claims_are_judged_at_the_time_given() {
    let es = Issuer::new("es", Algorithm::ES256).unwrap();
    let keys = keys(&[&es]);
    let cfg = config();
    type Row = (&'static str, Value, Result<(), TokenFailure>);
    let rows: Vec<Row> = vec![
        ("good", claims(), Ok(())),
        (
            "a single audience string",
            with(|c| {
                c.insert("aud".into(), json!("mqtt-gateway"));
            }),
            Ok(()),
        ),
        (
            "no iat: lifetime from now",
            with(|c| {
                c.remove("iat");
            }),
            Ok(()),
        ),
        (
            "fractional exp",
            with(|c| {
                c.insert("exp".into(), json!(1_800_000_600.5));
            }),
            Ok(()),
        ),
        (
            "expired, inside the leeway",
            with(|c| {
                c.insert("exp".into(), json!(NOW - 29));
            }),
            Ok(()),
        ),
        (
            "expired at exp + leeway (RFC 7519: on or after)",
            with(|c| {
                c.insert("exp".into(), json!(NOW - 30));
            }),
            Err(TokenFailure::Expired),
        ),
        (
            "expired long ago",
            with(|c| {
                c.insert("exp".into(), json!(NOW - 3600));
                c.insert("iat".into(), json!(NOW - 3601));
            }),
            Err(TokenFailure::Expired),
        ),
        (
            "no exp",
            with(|c| {
                c.remove("exp");
            }),
            Err(TokenFailure::MissingClaim),
        ),
        (
            "exp a string",
            with(|c| {
                c.insert("exp".into(), json!("soon"));
            }),
            Err(TokenFailure::MissingClaim),
        ),
        (
            "nbf in the leeway",
            with(|c| {
                c.insert("nbf".into(), json!(NOW + 30));
            }),
            Ok(()),
        ),
        (
            "nbf in the future",
            with(|c| {
                c.insert("nbf".into(), json!(NOW + 31));
            }),
            Err(TokenFailure::NotYetValid),
        ),
        (
            "iat in the future",
            with(|c| {
                c.insert("iat".into(), json!(NOW + 120));
            }),
            Err(TokenFailure::NotYetValid),
        ),
        (
            "lifetime exactly max",
            with(|c| {
                c.insert("iat".into(), json!(NOW - 100));
                c.insert("exp".into(), json!(NOW + 3500));
            }),
            Ok(()),
        ),
        (
            "lifetime above max",
            with(|c| {
                c.insert("iat".into(), json!(NOW - 100));
                c.insert("exp".into(), json!(NOW + 3501));
            }),
            Err(TokenFailure::Lifetime),
        ),
        (
            "no iat, exp too far from now",
            with(|c| {
                c.remove("iat");
                c.insert("exp".into(), json!(NOW + 3601));
            }),
            Err(TokenFailure::Lifetime),
        ),
        (
            "other issuer",
            with(|c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
            Err(TokenFailure::Issuer),
        ),
        (
            "no issuer",
            with(|c| {
                c.remove("iss");
            }),
            Err(TokenFailure::Issuer),
        ),
        (
            "other audience",
            with(|c| {
                c.insert("aud".into(), json!(["other"]));
            }),
            Err(TokenFailure::Audience),
        ),
        (
            "no audience",
            with(|c| {
                c.remove("aud");
            }),
            Err(TokenFailure::Audience),
        ),
        (
            "no sub",
            with(|c| {
                c.remove("sub");
            }),
            Err(TokenFailure::Principal),
        ),
        (
            "empty sub",
            with(|c| {
                c.insert("sub".into(), json!(""));
            }),
            Err(TokenFailure::Principal),
        ),
        (
            "a wildcard in sub",
            with(|c| {
                c.insert("sub".into(), json!("dev/+"));
            }),
            Err(TokenFailure::Principal),
        ),
        (
            "a control character in sub",
            with(|c| {
                c.insert("sub".into(), json!("dev\u{7}"));
            }),
            Err(TokenFailure::Principal),
        ),
        (
            "a bidi override in sub",
            with(|c| {
                c.insert("sub".into(), json!("dev\u{202e}1"));
            }),
            Err(TokenFailure::Principal),
        ),
        (
            "sub a number",
            with(|c| {
                c.insert("sub".into(), json!(7));
            }),
            Err(TokenFailure::Principal),
        ),
        (
            "groups not an array",
            with(|c| {
                c.insert("groups".into(), json!("sensors"));
            }),
            Err(TokenFailure::Groups),
        ),
        (
            "a group not a string",
            with(|c| {
                c.insert("groups".into(), json!(["a", 1]));
            }),
            Err(TokenFailure::Groups),
        ),
        (
            "too many groups",
            with(|c| {
                c.insert(
                    "groups".into(),
                    json!(
                        (0..=MAX_GROUPS)
                            .map(|i| format!("g{i}"))
                            .collect::<Vec<_>>()
                    ),
                );
            }),
            Err(TokenFailure::Groups),
        ),
        (
            "no groups",
            with(|c| {
                c.remove("groups");
            }),
            Ok(()),
        ),
    ];
    for (name, claims, want) in rows {
        let token = es.mint(&claims).unwrap();
        let got = verify(&keys, &cfg, token.as_bytes(), NOW).map(|_| ());
        assert_eq!(got, want, "{name}");
    }
    let good = verify(&keys, &cfg, es.mint(&claims()).unwrap().as_bytes(), NOW).unwrap();
    assert_eq!(good.principal, "dev-1");
    assert_eq!(good.groups, ["sensors"]);
    assert_eq!(good.expires_at, NOW + 600);
    assert_eq!(good.kid, "es");
    assert_eq!(Some(good.key_fingerprint), keys.fingerprint("es"));
}

/// The signature and header rules: every accepted algorithm verifies; `none`, HS256 keyed with
/// the public key, a forged signature, an unknown `kid`, a key of another family and `crit` are
/// refused whatever else the token says.
#[test]
fn headers_keys_and_signatures() {
    let es = Issuer::new("es", Algorithm::ES256).unwrap();
    let rs = Issuer::new("rs", Algorithm::RS256).unwrap();
    let ed = Issuer::new("ed", Algorithm::EdDSA).unwrap();
    let stranger = Issuer::new("es", Algorithm::ES256).unwrap();
    let keys = keys(&[&es, &rs, &ed]);
    let cfg = config();
    let c = claims();
    let public_es = es.jwk().to_string();
    let forged_payload = {
        // A good token whose payload was swapped for another principal's.
        let good = es.mint(&c).unwrap();
        let other = es
            .mint(&with(|m| {
                m.insert("sub".into(), json!("dev-2"));
            }))
            .unwrap();
        let mut g = good.split('.');
        let mut o = other.split('.');
        format!(
            "{}.{}.{}",
            g.next().unwrap(),
            o.nth(1).unwrap(),
            g.nth(1).unwrap()
        )
    };
    let es_as_rs = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("rs".into());
        es.mint_with(&h, &c).unwrap()
    };
    let with_crit = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("es".into());
        h.extras.insert("crit".to_owned(), json!(["exp"]));
        es.mint_with(&h, &c).unwrap()
    };
    let no_kid = es.mint_with(&Header::new(Algorithm::ES256), &c).unwrap();
    let rows: Vec<(&str, String, Result<(), TokenFailure>)> = vec![
        ("ES256", es.mint(&c).unwrap(), Ok(())),
        ("RS256", rs.mint(&c).unwrap(), Ok(())),
        ("EdDSA", ed.mint(&c).unwrap(), Ok(())),
        (
            "alg none",
            Issuer::unsigned("es", &c),
            Err(TokenFailure::Algorithm),
        ),
        (
            "HS256 keyed with the public JWK",
            Issuer::hmac("es", public_es.as_bytes(), &c).unwrap(),
            Err(TokenFailure::Algorithm),
        ),
        (
            "signed by another key under a known kid",
            stranger.mint(&c).unwrap(),
            Err(TokenFailure::Signature),
        ),
        (
            "payload swapped",
            forged_payload,
            Err(TokenFailure::Signature),
        ),
        (
            "an ES256 header on the RSA key",
            es_as_rs,
            Err(TokenFailure::Algorithm),
        ),
        ("crit", with_crit, Err(TokenFailure::Algorithm)),
        ("no kid", no_kid, Err(TokenFailure::UnknownKey)),
        (
            "unknown kid",
            Issuer::new("nope", Algorithm::ES256)
                .unwrap()
                .mint(&c)
                .unwrap(),
            Err(TokenFailure::UnknownKey),
        ),
        (
            "two parts",
            "eyJhbGciOiJFUzI1NiJ9.e30".to_owned(),
            Err(TokenFailure::Malformed),
        ),
        (
            "four parts",
            "eyJ.e30.x.y".to_owned(),
            Err(TokenFailure::Malformed),
        ),
        (
            "garbage header",
            "eyJ!!.e30.sig".to_owned(),
            Err(TokenFailure::Malformed),
        ),
        (
            "too long",
            format!("{}{}", es.mint(&c).unwrap(), "A".repeat(MAX_TOKEN_LEN)),
            Err(TokenFailure::Malformed),
        ),
    ];
    for (name, token, want) in rows {
        assert_eq!(
            verify(&keys, &cfg, token.as_bytes(), NOW).map(|_| ()),
            want,
            "{name}"
        );
    }
    // Off the allow-list: an EdDSA token when only ES256 is allowed.
    let es_only = TokenConfig {
        algorithms: vec![TokenAlgorithm::ES256],
        ..config()
    };
    assert_eq!(
        verify(&keys, &es_only, ed.mint(&c).unwrap().as_bytes(), NOW).map(|_| ()),
        Err(TokenFailure::Algorithm)
    );
}

/// Every failure maps to one of the contract's `auth_failures_total` token reasons.
#[test]
fn failures_map_to_their_metric_reason() {
    use TokenFailure as F;
    let rows = [
        (F::Expired, "token_expired"),
        (F::Malformed, "token_signature"),
        (F::Algorithm, "token_signature"),
        (F::Signature, "token_signature"),
        (F::UnknownKey, "token_unknown_key"),
        (F::NotYetValid, "token_claims"),
        (F::MissingClaim, "token_claims"),
        (F::Lifetime, "token_claims"),
        (F::Issuer, "token_claims"),
        (F::Audience, "token_claims"),
        (F::Principal, "token_claims"),
        (F::Groups, "token_claims"),
    ];
    for (f, label) in rows {
        assert_eq!(f.auth_failure().as_str(), label, "{f:?}");
    }
}

/// A key set is refused whole, with the key and the reason: private or symmetric keys, duplicate
/// or missing `kid`, weak RSA, unknown curves, an `alg` that does not fit.
#[test]
fn key_sets_are_checked_whole() {
    let es = Issuer::new("es", Algorithm::ES256).unwrap();
    let good = es.jwk().clone();
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut k = good.clone();
        if let Some(m) = k.as_object_mut() {
            f(m);
        }
        json!({ "keys": [k] }).to_string()
    };
    let rows: Vec<(&str, String, Option<&str>)> = vec![
        ("good", json!({ "keys": [good.clone()] }).to_string(), None),
        (
            "good, alg named",
            edit(&|m| {
                m.insert("alg".into(), json!("ES256"));
            }),
            None,
        ),
        ("empty set", json!({ "keys": [] }).to_string(), None),
        ("not JSON", "{".to_owned(), Some("not a JWK set")),
        ("no keys member", "{}".to_owned(), Some("not a JWK set")),
        (
            "a private key",
            edit(&|m| {
                m.insert("d".into(), json!("AAAA"));
            }),
            Some("private or secret member \"d\""),
        ),
        (
            "no kid",
            edit(&|m| {
                m.remove("kid");
            }),
            Some("no `kid`"),
        ),
        (
            "use enc",
            edit(&|m| {
                m.insert("use".into(), json!("enc"));
            }),
            Some("only \"sig\""),
        ),
        (
            "alg of another family",
            edit(&|m| {
                m.insert("alg".into(), json!("RS256"));
            }),
            Some("does not fit"),
        ),
        (
            "alg HS256",
            edit(&|m| {
                m.insert("alg".into(), json!("HS256"));
            }),
            Some("not accepted"),
        ),
        (
            "a symmetric key",
            json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}).to_string(),
            Some("private or secret member \"k\""),
        ),
        (
            "P-521",
            edit(&|m| {
                m.insert("crv".into(), json!("P-521"));
            }),
            Some("not accepted"),
        ),
        (
            "weak RSA",
            json!({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}).to_string(),
            Some("at least 2048"),
        ),
        (
            "the same kid twice",
            json!({ "keys": [good.clone(), good.clone()] }).to_string(),
            Some("the same kid twice"),
        ),
    ];
    for (name, text, want) in rows {
        let got = TokenKeys::parse(Path::new("/etc/jwks.json"), text.as_bytes());
        match (got, want) {
            (Ok(_), None) => {}
            (Err(e), Some(needle)) => {
                let msg = e.to_string();
                assert!(msg.starts_with("/etc/jwks.json: "), "{name}: {msg}");
                assert!(msg.contains(needle), "{name}: {msg}");
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

/// A kid whose key changed gets another fingerprint (a reload then ends its sessions); the same
/// key read again keeps it.
#[test]
fn fingerprints_follow_the_key() {
    let a = Issuer::new("k", Algorithm::ES256).unwrap();
    let b = Issuer::new("k", Algorithm::ES256).unwrap();
    assert_eq!(keys(&[&a]).fingerprint("k"), keys(&[&a]).fingerprint("k"));
    assert_ne!(keys(&[&a]).fingerprint("k"), keys(&[&b]).fingerprint("k"));
    assert_eq!(keys(&[&a]).fingerprint("other"), None);
}

#[test]
fn token_shape() {
    let es = Issuer::new("es", Algorithm::ES256).unwrap();
    assert!(looks_like_token(es.mint(&claims()).unwrap().as_bytes()));
    for not in [&b"hunter2"[..], b"a.b.c", b"eyJ.only", b"eyJ a.b.c"] {
        assert!(!looks_like_token(not), "{not:?}");
    }
}
