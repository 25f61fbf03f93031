//! Hot reload and live revocation, end to end: a real Mosquitto, real TLS, the gateway's own file
//! watcher (no reload is called by hand), and files replaced the way operators and Kubernetes do
//! it (write a temporary file, rename it over the old one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;

use mqtt_inspect::{Packet, ProtocolVersion, ReasonCode, decode};
use support::reload::{
    connected, disconnected_with, refused_at_handshake, replace, start_with_leaf_crl, still_served,
};
use support::wire::TlsWire;
use support::{
    ALL_ACTIONS, Flaw, Pki, Rule, Setup, TestGateway, anyone, client_tls, connect_frame,
};

/// After a revocation of the victim's certificate: its live session gets DISCONNECT 0x98
/// (Administrative action) and an audit line (`crl`); everyone else stays connected; a new
/// connection with the revoked certificate is refused at the handshake, the bystander's is not.
async fn only_the_revoked_one_is_cut_off(
    gw: &TestGateway,
    pki: &Pki,
    (victim, victim_cert): (&mut TlsWire, &support::Issued),
    (other, other_cert): (&mut TlsWire, &support::Issued),
) {
    disconnected_with(victim, ReasonCode::AdministrativeAction).await;
    still_served(other).await;
    let line = gw
        .audit_line(|v| v["event"] == "session_revoked" && v["client_id"] == "victim")
        .await
        .expect("audit line for the revoked session");
    assert_eq!(line["reason"], "crl");
    refused_at_handshake(gw, pki, victim_cert).await;
    let _ = connected(gw, pki, other_cert, "bystander-2").await;
}

/// DESIGN §3: "Revocation reaches live sessions. A new CRL ... is checked against every live
/// connection; those no longer allowed are closed (`sessions_revoked_total{reason}`)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificate_cuts_off_the_live_session_and_refuses_new_ones() {
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let (gw, _reload) = start_with_leaf_crl(Setup::new(&pki), &crl).await;

    let victim_cert = pki.client("victim", None, Flaw::None);
    let other_cert = pki.client("bystander", None, Flaw::None);
    let mut victim = connected(&gw, &pki, &victim_cert, "victim").await;
    let mut other = connected(&gw, &pki, &other_cert, "bystander").await;
    let before = gw
        .metric("mqtt_gateway_sessions_revoked_total{reason=\"crl\"}")
        .await;

    // The CA publishes a new CRL revoking the victim: replaced atomically in the watched directory.
    let new_crl = std::fs::read_to_string(pki.write_leaf_crl(&[&victim_cert.serial])).unwrap();
    replace(&crl, &new_crl);

    only_the_revoked_one_is_cut_off(
        &gw,
        &pki,
        (&mut victim, &victim_cert),
        (&mut other, &other_cert),
    )
    .await;
    assert!(
        gw.metric("mqtt_gateway_sessions_revoked_total{reason=\"crl\"}")
            .await
            >= before + 1.0
    );
}

/// DESIGN §3: "Fail closed. ... on reload, keep the last good snapshot and say why"; DESIGN §4:
/// "A snapshot that fails validation is refused whole".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_apply_from_the_next_packet_and_broken_ones_are_rejected() {
    let pki = Pki::new();
    let open: Rule<'_> = ("allow", ALL_ACTIONS, &["open/#"]);
    let policy_v1 = anyone(&[open]);
    let mut setup = Setup::new(&pki);
    setup.policy = policy_v1.clone();
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let policy_path = gw.dir.path().join("policy.toml");
    let cert = pki.client("dev-1", None, Flaw::None);
    let mut c = connected(&gw, &pki, &cert, "dev-1").await;

    // QoS 1 to a topic the policy does not grant: PUBACK 0x87.
    let publish = |id: u8| {
        [
            0x32, 0x0c, 0x00, 0x07, b'g', b'r', b'a', b'n', b't', b'/', b'x', 0x00, id, 0x00,
        ]
    };
    c.try_send(&publish(1)).await.unwrap();
    assert_eq!(c.recv().await.unwrap(), [0x40, 3, 0, 1, 0x87]);

    // Grant it: the same connection's next PUBLISH is accepted (PUBACK from the broker).
    replace(
        &policy_path,
        &anyone(&[open, ("allow", &["publish"], &["grant/#"])]),
    );
    let mut granted = false;
    for id in 2..60u8 {
        c.try_send(&publish(id)).await.unwrap();
        let ack = c.recv().await.unwrap();
        assert_eq!(
            &ack[..4],
            &[0x40, if ack.len() == 4 { 2 } else { 3 }, 0, id]
        );
        if ack.len() == 4 || ack[4] != 0x87 {
            granted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        granted,
        "the granted topic was never accepted without reconnecting"
    );

    // A broken policy is rejected whole: counted, audited, and the previous one stays in force.
    let before = gw
        .metric("mqtt_gateway_reloads_total{source=\"policy\",result=\"rejected\"}")
        .await;
    replace(
        &policy_path,
        "version = 1\n[[rule]]\nwho = { any = true }\nalow = [\"publish\"]\ntopics = [\"#\"]\n",
    );
    let line = gw
        .audit_line(|v| v["event"] == "reload_rejected" && v["reason"] == "policy")
        .await
        .expect("audit line");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("policy.toml:4") && detail.contains("alow"),
        "{line}"
    );
    assert!(
        gw.metric("mqtt_gateway_reloads_total{source=\"policy\",result=\"rejected\"}")
            .await
            >= before + 1.0
    );
    c.try_send(&publish(100)).await.unwrap();
    let ack = c.recv().await.unwrap();
    assert!(
        ack.len() == 4 || ack[4] != 0x87,
        "the last good policy (granting grant/#) must still decide: {ack:?}"
    );
    c.try_send(&[
        0x32, 0x0a, 0x00, 0x05, b'o', b't', b'h', b'e', b'r', 0x00, 101, 0x00,
    ])
    .await
    .unwrap();
    assert_eq!(
        c.recv().await.unwrap(),
        [0x40, 3, 0, 101, 0x87],
        "and nothing more: no fail-open"
    );

    // A policy that no longer lets this client connect ends its session (0x98).
    replace(
        &policy_path,
        &policy_v1.replace("client_ids = [\"*\"]", "client_ids = [\"someone-else\"]"),
    );
    disconnected_with(&mut c, ReasonCode::AdministrativeAction).await;
}

/// DESIGN §3: "Revocation reaches live sessions. A new CRL, password file or policy generation is
/// checked against every live connection".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_removed_on_reload_ends_the_live_session_that_used_it() {
    let pki = Pki::new();
    let hash = |pw: &[u8]| mqtt_gateway::auth::hash_mosquitto_pbkdf2(pw, 1000).unwrap();
    let mut setup = Setup::new(&pki);
    setup.auth = "[auth]\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n".into();
    let bob_line = format!("bob:{}\n", hash(b"b-secret"));
    setup.passwords = format!("alice:{}\n{bob_line}", hash(b"a-secret"));
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let cert = pki.client("device", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    let login = |user: &'static str, pw: &'static [u8]| {
        let tls = tls.clone();
        let addr = gw.tls_addr();
        async move {
            let mut c = TlsWire::try_tls(addr, tls, ProtocolVersion::V5)
                .await
                .unwrap();
            c.try_send(&connect_frame(
                ProtocolVersion::V5,
                user,
                Some(user),
                Some(pw),
            ))
            .await
            .unwrap();
            let connack = c.recv().await.expect("CONNACK");
            (c, connack)
        }
    };
    let accepted = |f: &[u8]| matches!(decode(f, ProtocolVersion::V5), Ok(Packet::Connack(a)) if a.code.is_success());
    let (mut alice, ok) = login("alice", b"a-secret").await;
    assert!(accepted(&ok), "{ok:?}");
    let (mut bob, ok) = login("bob", b"b-secret").await;
    assert!(accepted(&ok), "{ok:?}");
    let before = gw
        .metric("mqtt_gateway_sessions_revoked_total{reason=\"password\"}")
        .await;

    // alice's entry is removed (and the file replaced atomically): her live session ends; bob's
    // entry is unchanged, so his stays (a changed entry would end it too).
    replace(&gw.dir.path().join("passwords"), &bob_line);
    disconnected_with(&mut alice, ReasonCode::AdministrativeAction).await;
    still_served(&mut bob).await;
    assert!(
        gw.metric("mqtt_gateway_sessions_revoked_total{reason=\"password\"}")
            .await
            >= before + 1.0
    );
    // ... and she cannot log in again; bob still can.
    let (_, refused) = login("alice", b"a-secret").await;
    assert_eq!(refused, [0x20, 3, 0, 0x86, 0]);
    let (_, ok) = login("bob", b"b-secret").await;
    assert!(accepted(&ok), "{ok:?}");
}

/// DESIGN §3: "Fail closed. ... on reload, keep the last good snapshot and say why."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_crl_or_password_file_is_rejected_and_the_last_good_one_stays() {
    let pki = Pki::new();
    let revoked = pki.client("revoked", None, Flaw::None);
    let crl = pki.write_leaf_crl(&[&revoked.serial]);
    let hash = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"a-secret", 1000).unwrap();
    let mut setup = Setup::new(&pki);
    setup.auth = "[auth]\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n".into();
    setup.passwords = format!("alice:{hash}\n");
    let (gw, _reload) = start_with_leaf_crl(setup, &crl).await;
    let good = pki.client("good", None, Flaw::None);
    let crl_rejected = gw
        .metric("mqtt_gateway_reloads_total{source=\"crl\",result=\"rejected\"}")
        .await;
    let pw_rejected = gw
        .metric("mqtt_gateway_reloads_total{source=\"passwords\",result=\"rejected\"}")
        .await;

    // Garbage where the CRL was, and a password file with a malformed line.
    replace(
        &crl,
        "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
    );
    replace(&gw.dir.path().join("passwords"), "alice:$7$not-a-hash\n");
    assert!(
        gw.audit_line(|v| v["event"] == "reload_rejected" && v["reason"] == "crl")
            .await
            .is_some()
    );
    assert!(
        gw.audit_line(|v| v["event"] == "reload_rejected" && v["reason"] == "passwords")
            .await
            .is_some()
    );
    assert!(
        gw.metric("mqtt_gateway_reloads_total{source=\"crl\",result=\"rejected\"}")
            .await
            >= crl_rejected + 1.0
    );
    assert!(
        gw.metric("mqtt_gateway_reloads_total{source=\"passwords\",result=\"rejected\"}")
            .await
            >= pw_rejected + 1.0
    );

    // The last good CRL still refuses the revoked certificate (fail closed, not open) ...
    let tls = |c: &support::Issued| client_tls(&pki, Some(c), &[&rustls::version::TLS13]);
    if let Ok(mut c) = TlsWire::try_tls(gw.tls_addr(), tls(&revoked), ProtocolVersion::V5).await {
        let _ = c
            .try_send(&connect_frame(
                ProtocolVersion::V5,
                "alice",
                Some("alice"),
                Some(b"a-secret"),
            ))
            .await;
        assert!(
            c.recv().await.is_none(),
            "a revoked certificate got in after a broken CRL reload"
        );
    }
    // ... and the last good password file still lets alice in with her password.
    let mut c = TlsWire::try_tls(gw.tls_addr(), tls(&good), ProtocolVersion::V5)
        .await
        .unwrap();
    c.try_send(&connect_frame(
        ProtocolVersion::V5,
        "alice",
        Some("alice"),
        Some(b"a-secret"),
    ))
    .await
    .unwrap();
    let ok = c.recv().await.expect("CONNACK");
    assert!(
        matches!(decode(&ok, ProtocolVersion::V5), Ok(Packet::Connack(a)) if a.code.is_success()),
        "{ok:?}"
    );
}

/// DESIGN §4: "A server certificate change applies to new handshakes without touching established
/// connections."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_served_to_new_clients_while_old_connections_go_on() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let cert = pki.client("dev-1", None, Flaw::None);
    let served = |c: &TlsWire| c.stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut old = connected(&gw, &pki, &cert, "old").await;
    assert_eq!(served(&old), pki.server.chain[0]);

    // certbot-style renewal: new key and certificate written over the configured files.
    let next = pki.server_cert("server-next");
    replace(
        &pki.server.key_path,
        &std::fs::read_to_string(&next.key_path).unwrap(),
    );
    replace(
        &pki.server.chain_path,
        &std::fs::read_to_string(&next.chain_path).unwrap(),
    );

    let mut rotated = false;
    for i in 0..100 {
        let c = connected(&gw, &pki, &cert, &format!("new-{i}")).await;
        if served(&c) == next.chain[0] {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(rotated, "new clients never saw the rotated certificate");
    // The connection made before the rotation goes on.
    still_served(&mut old).await;
}

/// DESIGN §4: the file watcher is "debounced, so editor rename-on-save and Kubernetes ConfigMap
/// symlink swaps are seen".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_updated_by_a_kubernetes_configmap_symlink_swap_is_seen() {
    // The layout kubelet makes for a mounted ConfigMap/Secret: certs/ca.crl -> ..data/ca.crl,
    // ..data -> ..v1. An update writes ..v2, points ..data_tmp at it, renames ..data_tmp over
    // ..data and removes ..v1: no event ever names ca.crl itself.
    use std::os::unix::fs::symlink;
    let pki = Pki::new();
    let certs = pki.path("certs");
    std::fs::create_dir_all(certs.join("..v1")).unwrap();
    let empty = std::fs::read_to_string(pki.write_leaf_crl(&[])).unwrap();
    std::fs::write(certs.join("..v1/ca.crl"), &empty).unwrap();
    symlink("..v1", certs.join("..data")).unwrap();
    symlink("..data/ca.crl", certs.join("ca.crl")).unwrap();
    let (gw, _reload) = start_with_leaf_crl(Setup::new(&pki), &certs.join("ca.crl")).await;

    let victim_cert = pki.client("victim-k8s", None, Flaw::None);
    let other_cert = pki.client("bystander-k8s", None, Flaw::None);
    let mut victim = connected(&gw, &pki, &victim_cert, "victim").await;
    let mut other = connected(&gw, &pki, &other_cert, "bystander").await;

    let revoking = std::fs::read_to_string(pki.write_leaf_crl(&[&victim_cert.serial])).unwrap();
    std::fs::create_dir_all(certs.join("..v2")).unwrap();
    std::fs::write(certs.join("..v2/ca.crl"), revoking).unwrap();
    symlink("..v2", certs.join("..data_tmp")).unwrap();
    std::fs::rename(certs.join("..data_tmp"), certs.join("..data")).unwrap();
    std::fs::remove_dir_all(certs.join("..v1")).unwrap();

    only_the_revoked_one_is_cut_off(
        &gw,
        &pki,
        (&mut victim, &victim_cert),
        (&mut other, &other_cert),
    )
    .await;
}

/// An operator's CA run with `openssl ca`: an index database, `openssl ca -revoke`, then
/// `openssl ca -gencrl` into a temporary file renamed over the CRL the gateway reads.
struct OpensslCa {
    config: std::path::PathBuf,
}

impl OpensslCa {
    fn new(pki: &Pki) -> Self {
        let dir = pki.path("openssl-ca");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = pki.write_inter_ca();
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        let config = dir.join("ca.cnf");
        std::fs::write(
            &config,
            format!(
                "[ca]\ndefault_ca = intermediate\n[intermediate]\ndatabase = {db}\n\
                 crlnumber = {num}\ncertificate = {cert}\nprivate_key = {key}\n\
                 default_md = sha256\ndefault_crl_days = 7\n",
                db = dir.join("index.txt").display(),
                num = dir.join("crlnumber").display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .unwrap();
        Self { config }
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .arg("ca")
            .arg("-batch")
            .arg("-config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl ca {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `openssl ca -gencrl` written beside `crl` and renamed over it.
    fn gencrl(&self, crl: &Path) {
        let tmp = crl.with_extension("new");
        self.openssl(&["-gencrl", "-out", tmp.to_str().unwrap()]);
        std::fs::rename(&tmp, crl).unwrap();
    }

    fn revoke(&self, cert: &support::Issued) {
        // openssl reads the first certificate of the chain file: the leaf.
        self.openssl(&["-revoke", cert.chain_path.to_str().unwrap()]);
    }
}

/// DESIGN §3: "Revocation reaches live sessions."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_made_by_openssl_ca_gencrl_revokes_a_live_subscriber() {
    let pki = Pki::new();
    let ca = OpensslCa::new(&pki);
    let crl = pki.path("openssl-ca.crl");
    ca.gencrl(&crl);
    let (gw, _reload) = start_with_leaf_crl(Setup::new(&pki), &crl).await;

    let victim_cert = pki.client("victim-openssl", None, Flaw::None);
    let other_cert = pki.client("bystander-openssl", None, Flaw::None);
    // The victim is a live subscriber.
    let mut victim = connected(&gw, &pki, &victim_cert, "victim").await;
    victim
        .try_send(&[
            0x82, 0x0b, 0x00, 0x01, 0x00, 0x00, 0x05, b'o', b'b', b's', b'/', b'#', 0x01,
        ])
        .await
        .unwrap();
    let suback = victim.recv().await.expect("SUBACK");
    assert_eq!(suback, [0x90, 0x04, 0x00, 0x01, 0x00, 0x01]);
    let mut other = connected(&gw, &pki, &other_cert, "bystander").await;

    // The operator revokes the victim's certificate and publishes a new CRL.
    ca.revoke(&victim_cert);
    ca.gencrl(&crl);

    only_the_revoked_one_is_cut_off(
        &gw,
        &pki,
        (&mut victim, &victim_cert),
        (&mut other, &other_cert),
    )
    .await;
}

/// DESIGN §3: "Fail closed. ... on reload, keep the last good snapshot and say why."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_server_certificate_is_rejected_and_the_last_good_one_is_still_served() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let cert = pki.client("dev-1", None, Flaw::None);
    let served = |c: &TlsWire| c.stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut old = connected(&gw, &pki, &cert, "old").await;
    let rejected = "mqtt_gateway_reloads_total{source=\"certs\",result=\"rejected\"}";
    let before = gw.metric(rejected).await;

    // Garbage where the certificate was.
    replace(
        &pki.server.chain_path,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
    );
    let line = gw
        .audit_line(|v| v["event"] == "reload_rejected" && v["reason"] == "certs")
        .await
        .expect("audit line for the rejected certificate");
    assert!(
        line["detail"]
            .as_str()
            .unwrap()
            .contains("server-chain.pem"),
        "names the file: {line}"
    );
    // A valid certificate that does not match the key (a renewal caught half-way).
    let other = pki.server_cert("server-other");
    replace(
        &pki.server.chain_path,
        &std::fs::read_to_string(&other.chain_path).unwrap(),
    );
    let mut counted = false;
    for _ in 0..100 {
        if gw.metric(rejected).await >= before + 2.0 {
            counted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counted, "both broken certificates counted as rejected");
    // New clients still get the last good certificate; the old connection goes on.
    let fresh = connected(&gw, &pki, &cert, "fresh").await;
    assert_eq!(served(&fresh), pki.server.chain[0]);
    still_served(&mut old).await;
}
