//! A token issuer for tests, benchmarks and demos: a fresh key pair, its JWK (public members only)
//! and tokens signed with it. The gateway itself never signs a token.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use serde_json::{Value, json};

/// A signing key with its `kid`.
pub struct Issuer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads one DER TLV at the start of `der`: (tag, content, rest).
fn tlv(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (content, rest) = rest.split_at_checked(len)?;
    Some((tag, content, rest))
}

/// An unsigned DER INTEGER without its sign byte.
fn unsigned(int: &[u8]) -> &[u8] {
    match int.split_first() {
        Some((0, rest)) if !rest.is_empty() => rest,
        _ => int,
    }
}

impl Issuer {
    /// A new key for `alg` (ES256, RS256 or EdDSA), named `kid`.
    ///
    /// # Errors
    /// Another algorithm, or a key that cannot be made.
    pub fn new(kid: &str, alg: Algorithm) -> Result<Self, String> {
        let (key_pair, kty) = match alg {
            Algorithm::ES256 => (KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256), "EC"),
            Algorithm::RS256 => (KeyPair::generate_for(&PKCS_RSA_SHA256), "RSA"),
            Algorithm::EdDSA => (KeyPair::generate_for(&PKCS_ED25519), "OKP"),
            other => return Err(format!("no test key for {other:?}")),
        };
        let key_pair = key_pair.map_err(|e| e.to_string())?;
        let public = key_pair.public_key_raw();
        let pkcs8 = key_pair.serialize_der();
        let (key, jwk) = match kty {
            "EC" => {
                let xy = public.get(1..).ok_or("short EC point")?;
                let (x, y) = xy.split_at_checked(32).ok_or("short EC point")?;
                (
                    EncodingKey::from_ec_der(&pkcs8),
                    json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}),
                )
            }
            "OKP" => (
                EncodingKey::from_ed_der(&pkcs8),
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(public)}),
            ),
            _ => {
                // public: RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }.
                let (_, seq, _) = tlv(public).ok_or("bad RSA public key")?;
                let (_, n, rest) = tlv(seq).ok_or("bad RSA modulus")?;
                let (_, e, _) = tlv(rest).ok_or("bad RSA exponent")?;
                // PKCS#8: SEQUENCE { version, algorithm, OCTET STRING { RSAPrivateKey } }.
                let (_, info, _) = tlv(&pkcs8).ok_or("bad PKCS#8")?;
                let (_, _, rest) = tlv(info).ok_or("bad PKCS#8")?;
                let (_, _, rest) = tlv(rest).ok_or("bad PKCS#8")?;
                let (_, pkcs1, _) = tlv(rest).ok_or("bad PKCS#8")?;
                (
                    EncodingKey::from_rsa_der(pkcs1),
                    json!({"kty": "RSA", "n": b64(unsigned(n)), "e": b64(unsigned(e))}),
                )
            }
        };
        let mut jwk = jwk;
        if let Some(map) = jwk.as_object_mut() {
            map.insert("kid".to_owned(), Value::String(kid.to_owned()));
            map.insert("use".to_owned(), Value::String("sig".to_owned()));
        }
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            key,
            jwk,
        })
    }

    /// The public JWK (with `kid` and `use: sig`).
    #[must_use]
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A JWKS document holding the keys of `issuers`.
    #[must_use]
    pub fn jwks(issuers: &[&Self]) -> String {
        json!({"keys": issuers.iter().map(|i| i.jwk.clone()).collect::<Vec<_>>()}).to_string()
    }

    /// A token with `claims`, signed by this key (header: its `alg` and `kid`).
    ///
    /// # Errors
    /// Signing failed.
    pub fn mint(&self, claims: &Value) -> Result<String, String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| e.to_string())
    }

    /// A token with `claims` and a header of one's choosing, signed with this key's algorithm
    /// (for tokens that lie about their header).
    ///
    /// # Errors
    /// Signing failed.
    pub fn mint_with(&self, header: &Header, claims: &Value) -> Result<String, String> {
        jsonwebtoken::encode(header, claims, &self.key).map_err(|e| e.to_string())
    }

    /// The unsigned `alg: none` token an attacker would send: header and claims, empty signature.
    #[must_use]
    pub fn unsigned(kid: &str, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
        format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        )
    }

    /// An HS256 token keyed with `secret` (the "public key as an HMAC secret" attack).
    ///
    /// # Errors
    /// Signing failed.
    pub fn hmac(kid: &str, secret: &[u8], claims: &Value) -> Result<String, String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.to_owned());
        let key = EncodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        jsonwebtoken::encode(&header, claims, &key).map_err(|e| e.to_string())
    }
}
