//! Tests of loading TLS material from files: the three private-key formats,
//! CRLs in PEM and DER, CRL dates, and errors that name the failing file.
//! Handshakes are tested in `tests/tls_handshake.rs`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize,
    SerialNumber, date_time_ymd,
};

use rustls::pki_types::PrivateKeyDer;

use super::*;

/// Unix time of 1 January of `year` (UTC), for the years these tests use.
fn jan1(year: i32) -> i64 {
    date_time_ymd(year, 1, 1).unix_timestamp()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out.into_bytes()
}

/// Reads one DER TLV at the start of `der`: (tag, content, rest).
fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (len, header) = match der[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(der[2]), 3),
        0x82 => (usize::from(u16::from_be_bytes([der[2], der[3]])), 4),
        n => panic!("unsupported DER length form {n:#x}"),
    };
    (tag, &der[header..header + len], &der[header + len..])
}

/// The inner private key of a PKCS#8 PrivateKeyInfo: SEC1 for EC, PKCS#1 for RSA.
fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
    let (tag, info, _) = tlv(pkcs8);
    assert_eq!(tag, 0x30);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey OCTET STRING");
    key.to_vec()
}

/// A self-signed server certificate for `key`, as PEM.
fn self_signed(key: &KeyPair) -> String {
    CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(key)
        .unwrap()
        .pem()
}

fn tls_for(cert: PathBuf, key: PathBuf) -> TlsConfig {
    TlsConfig {
        cert,
        key,
        client_ca: None,
        client_auth: ClientAuth::None,
        crl: Vec::new(),
        crl_scope: CrlScope::Leaf,
        min_version: TlsVersion::Tls12,
        crl_urls: Vec::new(),
        crl_cache_dir: None,
        crl_refresh_interval: crate::config::DEFAULT_CRL_REFRESH_INTERVAL,
        ocsp: crate::config::OcspMode::Off,
        ocsp_responder: None,
        ocsp_refresh_interval: std::time::Duration::from_secs(300),
        ocsp_timeout: std::time::Duration::from_secs(5),
        staple_ocsp: false,
    }
}

#[test]
fn private_keys_in_pkcs8_sec1_and_pkcs1() {
    let dir = tempfile::tempdir().unwrap();
    let ec = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_cert = write(dir.path(), "ec.pem", self_signed(&ec).as_bytes());
    let pkcs8 = write(dir.path(), "ec-pkcs8.key", ec.serialize_pem().as_bytes());
    let sec1_der = pkcs8_inner(&ec.serialize_der());
    let sec1 = write(dir.path(), "ec-sec1.key", &pem("EC PRIVATE KEY", &sec1_der));
    let rsa = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let rsa_cert = write(dir.path(), "rsa.pem", self_signed(&rsa).as_bytes());
    let pkcs1_der = pkcs8_inner(&rsa.serialize_der());
    let pkcs1 = write(
        dir.path(),
        "rsa-pkcs1.key",
        &pem("RSA PRIVATE KEY", &pkcs1_der),
    );

    assert!(matches!(
        load_private_key(&pkcs8).unwrap(),
        PrivateKeyDer::Pkcs8(_)
    ));
    assert!(matches!(
        load_private_key(&sec1).unwrap(),
        PrivateKeyDer::Sec1(_)
    ));
    assert!(matches!(
        load_private_key(&pkcs1).unwrap(),
        PrivateKeyDer::Pkcs1(_)
    ));
    // with_single_cert checks that each key matches its certificate.
    build_server_config(&tls_for(ec_cert.clone(), pkcs8)).unwrap();
    build_server_config(&tls_for(ec_cert.clone(), sec1)).unwrap();
    build_server_config(&tls_for(rsa_cert.clone(), pkcs1.clone())).unwrap();

    // A key that does not belong to the certificate is refused, naming both files.
    let err = build_server_config(&tls_for(ec_cert.clone(), pkcs1.clone())).unwrap_err();
    assert!(matches!(err, TlsError::CertKey { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.contains("ec.pem") && shown.contains("rsa-pkcs1.key"),
        "{shown}"
    );
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = write(dir.path(), "server.pem", self_signed(&key).as_bytes());
    let key_file = write(dir.path(), "server.key", key.serialize_pem().as_bytes());

    let missing = dir.path().join("missing.pem");
    let err = build_server_config(&tls_for(missing.clone(), key_file.clone())).unwrap_err();
    match &err {
        TlsError::Read { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("missing.pem"));

    // A key file holding only a certificate.
    let err = build_server_config(&tls_for(cert.clone(), cert.clone())).unwrap_err();
    assert!(
        matches!(&err, TlsError::Empty { path, what: "private key" } if path == &cert),
        "{err:?}"
    );
    // A certificate file holding only a key.
    let err = build_server_config(&tls_for(key_file.clone(), key_file.clone())).unwrap_err();
    assert!(
        matches!(
            &err,
            TlsError::Empty {
                what: "certificate",
                ..
            }
        ),
        "{err:?}"
    );

    // Broken base64 inside PEM markers.
    let bad_pem = write(
        dir.path(),
        "bad.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let err = load_certs(&bad_pem).unwrap_err();
    assert!(
        matches!(&err, TlsError::Pem { path, .. } if path == &bad_pem),
        "{err:?}"
    );

    // client_ca with garbage, then a CRL that is not a CRL.
    let mut tls = tls_for(cert.clone(), key_file.clone());
    tls.client_auth = ClientAuth::Required;
    tls.client_ca = Some(bad_pem.clone());
    assert!(matches!(
        build_server_config(&tls),
        Err(TlsError::Pem { .. })
    ));
    tls.client_ca = Some(cert.clone());
    let garbage_crl = write(dir.path(), "garbage.crl", &[0x30, 0x03, 0x02, 0x01, 0x01]);
    tls.crl = vec![garbage_crl.clone()];
    let err = build_server_config(&tls).unwrap_err();
    assert!(
        matches!(&err, TlsError::Crl { path, index: 0, .. } if path == &garbage_crl),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.crl"));
    let cert_as_crl = write(dir.path(), "cert-as.crl", self_signed(&key).as_bytes());
    tls.crl = vec![cert_as_crl];
    assert!(matches!(
        build_server_config(&tls),
        Err(TlsError::Empty { what: "CRL", .. })
    ));

    // The same listener with the CA and no CRL builds.
    tls.crl.clear();
    build_server_config(&tls).unwrap();
    assert!(client_verifier(&tls).unwrap().is_some());
    tls.client_auth = ClientAuth::None;
    assert!(client_verifier(&tls).unwrap().is_none());
    tls.client_auth = ClientAuth::Optional;
    tls.client_ca = None;
    assert!(matches!(
        client_verifier(&tls),
        Err(TlsError::MissingClientCa)
    ));
}

/// A CA able to sign CRLs.
fn crl_issuer() -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Issuer::new(
        params,
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
    )
}

fn crl(
    issuer: &Issuer<'_, KeyPair>,
    this_year: i32,
    next_year: i32,
) -> rcgen::CertificateRevocationList {
    CertificateRevocationListParams {
        this_update: date_time_ymd(this_year, 1, 1),
        next_update: date_time_ymd(next_year, 1, 1),
        crl_number: SerialNumber::from(7),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
}

#[test]
fn crl_dates_from_pem_and_der_files() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = crl_issuer();
    let der = write(dir.path(), "a.der", crl(&issuer, 2020, 2090).der());
    let mut two = crl(&issuer, 2021, 2031).pem().unwrap();
    two.push_str(&crl(&issuer, 2022, 2032).pem().unwrap());
    let pem_file = write(dir.path(), "b.pem", two.as_bytes());

    let infos = crl_metadata(&[der.clone(), pem_file.clone()]).unwrap();
    let got: Vec<_> = infos
        .iter()
        .map(|i| {
            (
                i.path.clone(),
                i.index,
                i.this_update_unix,
                i.next_update_unix,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (der.clone(), 0, jan1(2020), Some(jan1(2090))),
            (pem_file.clone(), 0, jan1(2021), Some(jan1(2031))),
            (pem_file.clone(), 1, jan1(2022), Some(jan1(2032))),
        ]
    );
    assert_eq!(load_crls(&pem_file).unwrap().len(), 2);

    let missing = dir.path().join("none.crl");
    assert!(matches!(
        crl_metadata(&[missing]),
        Err(TlsError::Read { .. })
    ));
}

/// The PKI of the resumption tables: a CA, three device certificates (serial 10 valid
/// 2025–2030, serial 11 the same but revoked, serial 12 valid 2025–2027), the CA's CRL (valid
/// 2025–2029, revoking serial 11), and a webpki verifier over them.
struct ResumptionPki {
    good: CertificateDer<'static>,
    revoked: CertificateDer<'static>,
    short: CertificateDer<'static>,
    /// A second CA certificate, to send as an (unneeded) intermediate.
    other_ca: CertificateDer<'static>,
    crl: rustls::pki_types::CertificateRevocationListDer<'static>,
    webpki: Arc<dyn ClientCertVerifier>,
}

impl ResumptionPki {
    /// The bound the verifier built with `crl` has.
    fn crls_until(&self) -> Option<u64> {
        earliest_next_update(std::slice::from_ref(&self.crl))
    }
}

fn resumption_pki() -> ResumptionPki {
    use rustls::pki_types::CertificateRevocationListDer;

    let ca_params = |name: &str| {
        let mut p = CertificateParams::default();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p
    };
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ca_cert = ca_params("resumption CA").self_signed(&ca_key).unwrap();
    let ca = Issuer::new(ca_params("resumption CA"), ca_key);
    let other_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let other_ca = ca_params("other CA").self_signed(&other_key).unwrap();
    let leaf = |serial: u64, until: i32| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, format!("device-{serial}"));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.serial_number = Some(SerialNumber::from(serial));
        p.not_before = date_time_ymd(2025, 1, 1);
        p.not_after = date_time_ymd(until, 1, 1);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        p.signed_by(&key, &ca).unwrap().der().clone()
    };
    let good = leaf(10, 2030);
    let revoked = leaf(11, 2030);
    let short = leaf(12, 2027);
    // The CA's CRL: valid 2025..2029, revokes serial 11.
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 1, 1),
        next_update: date_time_ymd(2029, 1, 1),
        crl_number: SerialNumber::from(1),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: SerialNumber::from(11),
            revocation_time: date_time_ymd(2025, 6, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca)
    .unwrap();
    let crl = CertificateRevocationListDer::from(crl.der().to_vec());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let webpki =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .with_crls([crl.clone()])
            .enforce_revocation_expiration()
            .build()
            .unwrap();
    ResumptionPki {
        good,
        revoked,
        short,
        other_ca: other_ca.der().clone(),
        crl,
        webpki,
    }
}

/// 31 January of `year`, or `secs` seconds after `jan1(year)`.
fn in_year(year: i32, secs: i64) -> rustls::pki_types::UnixTime {
    rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(jan1(year) + secs).unwrap(),
    ))
}

/// `judge_resumption` as a table: a resumed handshake is judged as a full one would be at
/// `now` (validity window, CRL freshness, revocation), a full one is left to rustls. The rows
/// run on one verifier in order, so the later ones are also judged with the earlier acceptances
/// remembered: the memory never admits what a full verification would refuse.
#[test]
fn a_resumed_session_is_judged_again_at_the_time_it_resumes() {
    use rustls::HandshakeKind::{Full, Resumed};

    let pki = resumption_pki();
    let verifier = ListenerVerifier::new(Arc::clone(&pki.webpki), pki.crls_until());
    let (good, revoked, short) = (pki.good.clone(), pki.revoked.clone(), pki.short.clone());
    let at = |year| in_year(year, 86_400 * 30);
    let label = |r: Result<(), rustls::Error>| r.map_err(|e| classify_rustls(&e).as_str());
    let v = Some(&verifier);
    type Row<'a> = (
        &'a str,
        Option<rustls::HandshakeKind>,
        &'a CertificateDer<'a>,
        i32,
        Result<(), &'a str>,
    );
    let rows: [Row<'_>; 9] = [
        // A full handshake was verified by rustls itself: nothing to judge again.
        ("full, any time", Some(Full), &good, 2031, Ok(())),
        ("not finished", None, &good, 2031, Ok(())),
        // Resumed within the certificate's and the CRL's validity: admitted.
        ("resumed, valid", Some(Resumed), &good, 2026, Ok(())),
        // Resumed after the certificate's notAfter: refused as `expired`.
        (
            "resumed after notAfter",
            Some(Resumed),
            &short,
            2027,
            Err("expired"),
        ),
        // Resumed after the CRL's nextUpdate: a stale CRL refuses everyone (fail closed; the
        // `other` class, as in a full handshake).
        (
            "resumed, CRL stale",
            Some(Resumed),
            &good,
            2029,
            Err("other"),
        ),
        // Resumed by a certificate the (current) CRL revokes.
        (
            "resumed, revoked",
            Some(Resumed),
            &revoked,
            2026,
            Err("revoked"),
        ),
        // Resumed before the certificate's notBefore (a clock set back).
        (
            "resumed before notBefore",
            Some(Resumed),
            &good,
            2024,
            Err("not_yet_valid"),
        ),
        (
            "full, revoked (rustls judged it)",
            Some(Full),
            &revoked,
            2026,
            Ok(()),
        ),
        (
            "resumed, short-lived, still valid",
            Some(Resumed),
            &short,
            2026,
            Ok(()),
        ),
    ];
    for (name, kind, cert, year, want) in rows {
        let got = label(judge_resumption(
            kind,
            v,
            std::slice::from_ref(cert),
            at(year),
        ));
        assert_eq!(got, want, "{name}");
    }
    // A resumed session without a certificate on a listener that asks for none passes.
    assert_eq!(judge_resumption(Some(Resumed), None, &[], at(2031)), Ok(()));
    // A resumed session without a certificate where one is mandatory is refused.
    assert!(judge_resumption(Some(Resumed), v, &[], at(2026)).is_err());
}

/// [`ListenerVerifier`]'s memory as a table, rows in order on one verifier: a resumption is
/// answered without a full verification only for a chain accepted before, and only inside the
/// window where that verdict holds (latest notBefore to the earliest notAfter and CRL
/// nextUpdate); everything else is verified in full, and refusals are never remembered.
#[test]
fn a_resumption_skips_the_chain_check_only_inside_the_window_of_an_acceptance() {
    let pki = resumption_pki();
    let verifier = ListenerVerifier::new(Arc::clone(&pki.webpki), pki.crls_until());
    let label = |r: Result<(), rustls::Error>| r.map_err(|e| classify_rustls(&e).as_str());
    let good = std::slice::from_ref(&pki.good);
    let short = std::slice::from_ref(&pki.short);
    let revoked = std::slice::from_ref(&pki.revoked);
    let with_other_ca = [pki.good.clone(), pki.other_ca.clone()];
    let mid_2026 = in_year(2026, 86_400 * 180);
    let short_not_after = jan1(2027) - jan1(2026);
    // (row, chain, time, verdict, full verifications it took)
    type Row<'a> = (
        &'a str,
        &'a [CertificateDer<'static>],
        rustls::pki_types::UnixTime,
        Result<(), &'a str>,
        u64,
    );
    let rows: [Row<'_>; 12] = [
        (
            "first resumption: verified in full",
            good,
            mid_2026,
            Ok(()),
            1,
        ),
        (
            "same chain, inside the window: remembered",
            good,
            in_year(2027, 0),
            Ok(()),
            0,
        ),
        (
            "a second before the CRL's nextUpdate: remembered",
            good,
            in_year(2029, -1),
            Ok(()),
            0,
        ),
        (
            "at the CRL's nextUpdate: verified again, stale CRL",
            good,
            in_year(2029, 0),
            Err("other"),
            1,
        ),
        (
            "before notBefore (clock set back): verified again",
            good,
            in_year(2024, 0),
            Err("not_yet_valid"),
            1,
        ),
        (
            "other chain bytes (an extra certificate): verified in full",
            &with_other_ca,
            mid_2026,
            Ok(()),
            1,
        ),
        ("short-lived: verified in full", short, mid_2026, Ok(()), 1),
        (
            "short-lived, a second before notAfter: remembered",
            short,
            in_year(2026, short_not_after - 1),
            Ok(()),
            0,
        ),
        // webpki still accepts at notAfter itself; the memory ends a second early.
        (
            "short-lived, at notAfter: verified again",
            short,
            in_year(2027, 0),
            Ok(()),
            1,
        ),
        (
            "short-lived, after notAfter: verified again, expired",
            short,
            in_year(2027, 1),
            Err("expired"),
            1,
        ),
        ("revoked: refused", revoked, mid_2026, Err("revoked"), 1),
        (
            "revoked again: a refusal is not remembered",
            revoked,
            mid_2026,
            Err("revoked"),
            1,
        ),
    ];
    for (name, chain, now, want, full) in rows {
        let before = verifier.verified_in_full();
        let got = label(verifier.judge_resumed(chain, now));
        let calls = verifier.verified_in_full() - before;
        assert_eq!((got, calls), (want, full), "{name}");
    }
    assert_eq!(verifier.remembered(), 3, "good, good + other CA, short");

    // A full handshake's verification fills the memory: the resumption after it is not
    // verified again.
    let fresh = ListenerVerifier::new(Arc::clone(&pki.webpki), pki.crls_until());
    fresh.verify_client_cert(&pki.good, &[], mid_2026).unwrap();
    assert_eq!(fresh.verified_in_full(), 1);
    assert_eq!(fresh.judge_resumed(good, mid_2026), Ok(()));
    assert_eq!(fresh.verified_in_full(), 1);
    // An empty chain is never answered from the memory (mandatory client auth: refused).
    assert!(fresh.judge_resumed(&[], mid_2026).is_err());
}

/// The memory holds at most its bound: when full, it is emptied before the next chain is
/// added; a chain already held is refreshed without emptying it.
#[test]
fn the_memory_of_accepted_chains_is_bounded() {
    let pki = resumption_pki();
    let verifier = ListenerVerifier::with_max(Arc::clone(&pki.webpki), pki.crls_until(), 2);
    let now = in_year(2026, 86_400 * 30);
    let chains = [
        vec![pki.good.clone()],
        vec![pki.short.clone()],
        vec![pki.good.clone(), pki.other_ca.clone()],
    ];
    let mut held = Vec::new();
    for chain in &chains {
        verifier.judge_resumed(chain, now).unwrap();
        held.push(verifier.remembered());
        verifier.judge_resumed(&chains[0], now).unwrap();
        held.push(verifier.remembered());
    }
    assert_eq!(held, [1, 1, 2, 2, 1, 2]);

    // Without CRLs the window is the certificates' own.
    let no_crl = ListenerVerifier::new(Arc::clone(&pki.webpki), earliest_next_update(&[]));
    no_crl.verify_client_cert(&pki.good, &[], now).unwrap();
    assert_eq!(no_crl.remembered(), 1);
    // A CRL whose dates cannot be read: nothing is remembered.
    let unreadable = rustls::pki_types::CertificateRevocationListDer::from(vec![0x30, 0x00]);
    let cautious =
        ListenerVerifier::new(Arc::clone(&pki.webpki), earliest_next_update(&[unreadable]));
    cautious.verify_client_cert(&pki.good, &[], now).unwrap();
    assert_eq!(cautious.remembered(), 0);
}
