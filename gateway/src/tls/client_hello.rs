//! Which AEAD a client asks for first, read from the start of its ClientHello (no I/O).
//!
//! The gateway prefers AES-128-GCM (SHA-256 for the transcript and the key schedule, in hardware
//! on current x86 and ARM servers, where SHA-384 is not) but a client that lists ChaCha20-Poly1305
//! first is usually a device without AES instructions, for which ChaCha20 is several times
//! cheaper; it gets what it asked for. OpenSSL servers do the same with
//! `SSL_OP_PRIORITIZE_CHACHA`; rustls has no such switch, so the listener holds one server
//! config per preference and picks by the ClientHello (`tls::ServerTls`).

/// TLS 1.3 `TLS_CHACHA20_POLY1305_SHA256` and TLS 1.2 `ECDHE-{RSA,ECDSA}-CHACHA20-POLY1305`.
pub const CHACHA: [u16; 3] = [0x1303, 0xcca8, 0xcca9];
/// TLS 1.3 `TLS_AES_128_GCM_SHA256` and TLS 1.2 `ECDHE-{ECDSA,RSA}-AES128-GCM-SHA256`.
pub const AES_128_GCM: [u16; 3] = [0x1301, 0xc02b, 0xc02f];
/// TLS 1.3 `TLS_AES_256_GCM_SHA384` and TLS 1.2 `ECDHE-{ECDSA,RSA}-AES256-GCM-SHA384`.
pub const AES_256_GCM: [u16; 3] = [0x1302, 0xc02c, 0xc030];

/// Whether the client's first AEAD suite (the first one the gateway knows, skipping GREASE and
/// others) is ChaCha20-Poly1305, from the first bytes of the connection: `Some(true)` or
/// `Some(false)`; `None` when `head` is not the start of a ClientHello or ends before any known
/// suite (the listener then uses its default preference, and rustls judges the bytes).
#[must_use]
pub fn prefers_chacha(head: &[u8]) -> Option<bool> {
    let mut r = Cursor(head);
    // TLSPlaintext: handshake (22), legacy version, length.
    if r.u8()? != 22 {
        return None;
    }
    r.skip(4)?;
    // Handshake: client_hello (1), 24-bit length.
    if r.u8()? != 1 {
        return None;
    }
    r.skip(3)?;
    // legacy_version, random, legacy_session_id.
    r.skip(2 + 32)?;
    let session_id = r.u8()?;
    r.skip(usize::from(session_id))?;
    let suites_len = usize::from(r.u16()?);
    let mut suites = Cursor(r.0.get(..suites_len.min(r.0.len()))?);
    while let Some(suite) = suites.u16() {
        if CHACHA.contains(&suite) {
            return Some(true);
        }
        if AES_128_GCM.contains(&suite) || AES_256_GCM.contains(&suite) {
            return Some(false);
        }
    }
    None
}

/// Reads big-endian integers off the front of a slice; `None` past its end.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let hi = self.u8()?;
        let lo = self.u8()?;
        Some(u16::from_be_bytes([hi, lo]))
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.0 = self.0.get(n..)?;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::Arc;

    use proptest::prelude::*;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedCipherSuite};

    use super::prefers_chacha;

    /// The first flight of a rustls client offering `suites` in this order.
    fn client_hello(suites: Vec<SupportedCipherSuite>) -> Vec<u8> {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites = suites;
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let mut conn =
            ClientConnection::new(Arc::new(config), ServerName::try_from("gw").unwrap()).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_first_aead_of_real_client_hellos() {
        let aes_first = client_hello(vec![
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ]);
        assert_eq!(prefers_chacha(&aes_first), Some(false));
        let chacha_first = client_hello(vec![
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ]);
        assert_eq!(prefers_chacha(&chacha_first), Some(true));
        let tls12_chacha = client_hello(vec![cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]);
        assert_eq!(prefers_chacha(&tls12_chacha), Some(true));
        // rustls' own default order (AES-256 first), as the benches' client sends it.
        let default = client_hello(rustls::crypto::aws_lc_rs::default_provider().cipher_suites);
        assert_eq!(prefers_chacha(&default), Some(false));
    }

    #[test]
    fn a_cut_or_foreign_start_has_no_answer() {
        let hello = client_hello(vec![cs::TLS13_CHACHA20_POLY1305_SHA256]);
        // Cut before the suites: no answer; from the first suite on: the answer.
        let suites_at = 5 + 4 + 2 + 32 + 1 + usize::from(hello[43]) + 2;
        for n in 0..suites_at + 2 {
            assert_eq!(prefers_chacha(&hello[..n]), None, "{n} bytes");
        }
        assert_eq!(prefers_chacha(&hello[..suites_at + 2]), Some(true));
        // Not TLS (an MQTT CONNECT on the TLS port), not a ClientHello, unknown suites only.
        assert_eq!(
            prefers_chacha(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c"),
            None
        );
        let mut not_hello = hello.clone();
        not_hello[5] = 2;
        assert_eq!(prefers_chacha(&not_hello), None);
        let mut grease_only = hello;
        grease_only[suites_at] = 0x0a;
        grease_only[suites_at + 1] = 0x0a;
        assert_eq!(prefers_chacha(&grease_only), None);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_bytes(head in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = prefers_chacha(&head);
        }
    }
}
