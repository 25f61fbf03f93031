//! Tests of config parsing and validation: the contract example parses, and
//! broken files are refused with the right line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The contract example, copied from `shared/spec/gateway.example.toml`.
const EXAMPLE: &str = include_str!("../../tests/data/gateway.example.toml");

/// A minimal valid config of exactly 9 lines; cases append from line 10 on.
const BASE: &str = r#"[upstream]
address = "127.0.0.1:1883"

[[listener]]
name = "plain"
bind = "127.0.0.1:1884"

[policy]
file = "policy.toml"
"#;

fn parse(src: &str) -> Result<Config, ConfigError> {
    Config::from_str(src, Path::new("/etc/gw/gateway.toml"))
}

#[test]
fn contract_example_parses_with_its_values() {
    let config = Config::from_str(EXAMPLE, Path::new("/etc/gw/gateway.toml")).unwrap();
    assert_eq!(
        config.admin.unwrap().listen,
        "127.0.0.1:9090".parse().unwrap()
    );
    assert_eq!(config.upstream.address.as_deref(), Some("127.0.0.1:1883"));
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.upstream.credentials, Credentials::Principal);
    assert_eq!(config.listeners.len(), 2);
    let mqtts = &config.listeners[0];
    assert_eq!(mqtts.name, "mqtts");
    assert_eq!(mqtts.bind, "0.0.0.0:8883".parse().unwrap());
    let tls = mqtts.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/gw/pki/server-chain.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/gw/pki/server.key"));
    assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/gw/pki/ca.pem")));
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.crl, vec![PathBuf::from("/etc/gw/pki/ca.crl")]);
    assert_eq!(tls.crl_scope, CrlScope::Leaf);
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(config.listeners[1].name, "internal");
    assert!(config.listeners[1].tls.is_none());
    assert!(!config.auth.allow_anonymous);
    assert_eq!(
        config.auth.password_file,
        Some(PathBuf::from("/etc/gw/policies/passwords"))
    );
    assert_eq!(config.auth.principal_from, PrincipalFrom::CertCn);
    assert!(config.auth.cert_is_credential);
    assert_eq!(
        config.policy.file,
        Some(PathBuf::from("/etc/gw/policies/policy.toml"))
    );
    assert_eq!(config.policy.mosquitto_acl_file, None);
    assert_eq!(config.policy.on_publish_deny, OnPublishDeny::Drop);
    assert_eq!(
        config.log.audit_file,
        Some(PathBuf::from("/var/log/mqtt-gateway/audit.jsonl"))
    );
    // The documented defaults are the example's values.
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.limits.max_packet_size, ByteSize(262_144));
    assert_eq!(config.limits.max_connections.get(), 100_000);
}

#[test]
fn defaults_fill_a_minimal_file() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.admin, None);
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.limits, LimitsConfig::default());
    assert_eq!(config.auth, AuthConfig::default());
    assert_eq!(config.log.audit_file, None);
}

#[test]
fn the_cluster_section_of_the_lifecycle_contract_parses() {
    // lifecycle.md: `[cluster] redis = "redis://127.0.0.1:6379/0"`; absent: stand-alone.
    assert_eq!(parse(BASE).unwrap().cluster, None);
    let config = parse(&appended(
        "[cluster]\nredis = \"redis://127.0.0.1:6379/0\"\n",
    ))
    .unwrap();
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.redis, "redis://127.0.0.1:6379/0");
    assert_eq!(cluster.ca, None);
    // A relative `ca` is resolved against the config file's directory.
    let config = Config::from_str(
        &appended("[cluster]\nredis = \"rediss://:pw@redis:6380\"\nca = \"redis-ca.pem\"\n"),
        Path::new("/etc/gw/gateway.toml"),
    )
    .unwrap();
    assert_eq!(
        config.cluster.unwrap().ca.as_deref(),
        Some(Path::new("/etc/gw/redis-ca.pem"))
    );
}

#[test]
fn a_unix_socket_broker_is_accepted_next_to_tcp_ones() {
    let src = BASE.replace(
        "address = \"127.0.0.1:1883\"",
        "addresses = [\"unix:/run/mosquitto/mqtt.sock\", \"10.0.0.2:1883\"]",
    );
    let config = parse(&src).unwrap();
    let nodes: Vec<&str> = config.upstream.nodes().collect();
    assert_eq!(nodes, ["unix:/run/mosquitto/mqtt.sock", "10.0.0.2:1883"]);
    assert_eq!(
        super::UpstreamAddress::parse(nodes[0]),
        super::UpstreamAddress::Unix("/run/mosquitto/mqtt.sock")
    );
    assert_eq!(
        super::UpstreamAddress::parse(nodes[1]),
        super::UpstreamAddress::Tcp("10.0.0.2:1883")
    );
}

#[test]
fn every_enum_value_of_the_contract_is_accepted() {
    let src = r#"
[upstream]
address = "mosquitto:1883"
credentials = "passthrough"
[[listener]]
name = "a"
bind = "[::1]:8883"
[listener.tls]
cert = "c.pem"
key = "k.pem"
client_ca = "ca.pem"
client_auth = "optional"
crl = ["a.crl", "/abs/b.der"]
crl_scope = "chain"
min_version = "1.3"
[[listener]]
name = "b"
bind = "127.0.0.1:8884"
[listener.tls]
cert = "c.pem"
key = "k.pem"
client_auth = "none"
[auth]
principal_from = "cert_san"
[policy]
mosquitto_acl_file = "acl"
on_publish_deny = "disconnect"
"#;
    let config = Config::from_str(src, Path::new("/srv/gw/gateway.toml")).unwrap();
    assert_eq!(config.upstream.credentials, Credentials::Passthrough);
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.client_auth, ClientAuth::Optional);
    assert_eq!(tls.crl_scope, CrlScope::Chain);
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(
        tls.crl,
        vec![PathBuf::from("/srv/gw/a.crl"), PathBuf::from("/abs/b.der")]
    );
    assert_eq!(
        config.listeners[1].tls.as_ref().unwrap().client_auth,
        ClientAuth::None
    );
    assert_eq!(config.auth.principal_from, PrincipalFrom::CertSan);
    assert_eq!(config.policy.on_publish_deny, OnPublishDeny::Disconnect);
    assert_eq!(
        config.policy.mosquitto_acl_file,
        Some(PathBuf::from("/srv/gw/acl"))
    );
    let username = parse(&format!("{BASE}[auth]\nprincipal_from = \"username\"\n")).unwrap();
    assert_eq!(username.auth.principal_from, PrincipalFrom::Username);
}

#[test]
fn relative_config_path_still_gives_absolute_paths() {
    let config = Config::from_str(BASE, Path::new("gateway.toml")).unwrap();
    let policy = config.policy.file.unwrap();
    assert!(policy.is_absolute(), "{}", policy.display());
    assert!(policy.ends_with("policy.toml"));
}

/// (file text, expected line, expected key, a fragment of the message)
type Case = (String, Option<usize>, Option<&'static str>, &'static str);

fn appended(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[rustfmt::skip]
fn broken_cases() -> Vec<Case> {
    const TLS_LISTENER: &str = "[[listener]]\nname = \"t\"\nbind = \"127.0.0.1:8883\"\n[listener.tls]\ncert = \"c\"\nkey = \"k\"\n";
    vec![
        (appended("[admin]\nlisten = \"127.0.0.1:9090\"\nlisne = 1\n"), Some(12), Some("admin.lisne"), "unknown field `lisne`, expected one of `listen`"),
        (appended("[admin]\nlisten = \"0.0.0.0:9090\"\napi_tokens_file = \"t\"\n"), Some(12), Some("admin.api_tokens_file"), "needs [admin.tls]"),
        (appended("[admin]\nlisten = \"127.0.0.1:9090\"\nmax_connections = 0\n"), Some(12), Some("admin.max_connections"), "nonzero"),
        (appended("[admin]\nlisten = \"127.0.0.1:9090\"\nmax_connections = 10001\n"), Some(12), Some("admin.max_connections"), "at most 10000"),
        (appended("[limits]\nmax_packet_size = \"12 apples\"\n"), Some(11), Some("limits.max_packet_size"), r#"invalid size "12 apples": expected"#),
        (appended("[cluster]\nredis = \"http://127.0.0.1:6379\"\n"), Some(11), Some("cluster.redis"), "must start with redis:// or rediss://"),
        (appended("[cluster]\n\nredis = \"redis://127.0.0.1:6379/zero\"\n"), Some(12), Some("cluster.redis"), "database must be a number"),
        (appended("[cluster]\nredis = \"redis://r\"\nca = \"ca.pem\"\n"), Some(12), Some("cluster.ca"), "rediss:// (TLS) only"),
        (appended("[cluster]\nredis = \"redis://r\"\nrediss = 1\n"), Some(12), Some("cluster.rediss"), "unknown field `rediss`"),
        (appended("[limits]\nmax_packet_size = -1\n"), Some(11), Some("limits.max_packet_size"), "invalid size -1"),
        (appended("[limits]\nconnect_timeout = 10\n"), Some(11), Some("limits.connect_timeout"), "expected a duration string"),
        (appended("[limits]\nban_window = \"1 m\"\n"), Some(11), Some("limits.ban_window"), r#"invalid duration "1 m""#),
        (appended("[limits]\nmax_connections = 0\n"), Some(11), Some("limits.max_connections"), "nonzero"),
        (appended("[limits]\nmax_packet_size = 8\n"), Some(11), Some("limits.max_packet_size"), "between 16 and 268435460"),
        (appended("[limits]\n\nmax_packet_size = \"1GiB\"\n"), Some(12), Some("limits.max_packet_size"), "out of range"),
        (appended("[limits]\nconnect_timeout = \"0s\"\n"), Some(11), Some("limits.connect_timeout"), "greater than zero"),
        (appended("[limits]\nmax_keepalive = \"100000s\"\n"), Some(11), Some("limits.max_keepalive"), "65535s"),
        (appended("[limits]\nmax_will_delay = \"5000000000s\"\n"), Some(11), Some("limits.max_will_delay"), "4294967295s"),
        (appended("[limits]\nmax_will_delay = \"1500ms\"\n"), Some(11), Some("limits.max_will_delay"), "whole seconds"),
        (appended("[limits]\nbytes_per_client_per_second = 0\n"), Some(11), Some("limits.bytes_per_client_per_second"), "out of range"),
        (appended("[limits]\nmax_subscriptions_per_client = 0\n"), Some(11), Some("limits.max_subscriptions_per_client"), "nonzero"),
        (appended("[limits]\nmax_subscriptions_per_client = 100001\n"), Some(11), Some("limits.max_subscriptions_per_client"), "between 1 and 100000"),
        (appended("[[listener]]\nname = \"b\"\nbind = \"localhost:1\"\n"), Some(12), Some("listener[1].bind"), "invalid socket address"),
        (appended("[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:1885\"\n"), Some(11), Some("listener[1].name"), "duplicate listener name \"plain\""),
        (appended("[[listener]]\nname = \" \"\nbind = \"127.0.0.1:1885\"\n"), Some(11), Some("listener[1].name"), "must not be empty"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nproxy_protocol = true"), Some(7), Some("listener[0].proxy_protocol"), "needs proxy_protocol_from"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nproxy_protocol_from = [\"10.0.0.0/8\"]"), Some(7), Some("listener[0].proxy_protocol_from"), "only used with proxy_protocol"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/33\"]"), Some(8), Some("listener[0].proxy_protocol_from[0]"), "invalid IP address"),
        (appended("[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:1884\"\n"), Some(12), Some("listener[1].bind"), "already bound by listener[0]"),
        (appended("[[listener]]\nname = \"b\"\n"), Some(10), Some("listener[1]"), "missing field `bind`"),
        // client_auth defaults to "required": the error points at the [listener.tls] table.
        (appended(TLS_LISTENER), Some(13), Some("listener[1].tls.client_auth"), "needs client_ca"),
        (appended(&format!("{TLS_LISTENER}client_auth = \"optional\"\n")), Some(16), Some("listener[1].tls.client_auth"), "\"optional\" needs client_ca"),
        (appended(&format!( "{TLS_LISTENER}client_auth = \"none\"\nclient_ca = \"ca\"\n" )), Some(17), Some("listener[1].tls.client_ca"), "client_auth = \"none\""),
        (appended(&format!( "{TLS_LISTENER}client_auth = \"none\"\ncrl = [\"x.crl\"]\n" )), Some(17), Some("listener[1].tls.crl"), "crl needs client_ca"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\ncrl_urls = [\"http://pki/a.crl\"]\n" )), Some(17), Some("listener[1].tls.crl_urls"), "needs crl_cache_dir"),
        (appended(&format!( "{TLS_LISTENER}client_auth = \"none\"\ncrl_urls = [\"http://pki/a.crl\"]\n" )), Some(17), Some("listener[1].tls.crl_urls"), "crl_urls needs client_ca"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\ncrl_cache_dir = \"c\"\ncrl_urls = [\"https://pki/a.crl\"]\n" )), Some(18), Some("listener[1].tls.crl_urls[0]"), "https is not supported"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\ncrl_cache_dir = \"c\"\ncrl_urls = [\"http://pki/a.crl\", \"http://pki/a.crl\"]\n" )), Some(18), Some("listener[1].tls.crl_urls[1]"), "duplicate URL"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\ncrl_refresh_interval = \"0s\"\n" )), Some(17), Some("listener[1].tls.crl_refresh_interval"), "between 1s and 24h"),
        (appended(&format!( "{TLS_LISTENER}client_auth = \"none\"\nocsp = \"hard\"\n" )), Some(17), Some("listener[1].tls.ocsp"), "ocsp needs client_ca"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\nocsp = \"always\"\n" )), Some(17), Some("listener[1].tls.ocsp"), "unknown variant `always`"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\nocsp = \"soft\"\nocsp_responder = \"https://ocsp.example\"\n" )), Some(18), Some("listener[1].tls.ocsp_responder"), "https is not supported"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\nocsp_refresh_interval = \"25h\"\n" )), Some(17), Some("listener[1].tls.ocsp_refresh_interval"), "between 1s and 24h"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\nocsp_timeout = \"10ms\"\n" )), Some(17), Some("listener[1].tls.ocsp_timeout"), "between 100ms and 60s"),
        (appended(&format!("{TLS_LISTENER}client_auth = \"maybe\"\n")), Some(16), Some("listener[1].tls.client_auth"), "unknown variant `maybe`"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\nmin_version = \"1.1\"\n" )), Some(17), Some("listener[1].tls.min_version"), "unknown variant `1.1`"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\ncrl_scope = \"all\"\n" )), Some(17), Some("listener[1].tls.crl_scope"), "unknown variant `all`"),
        (appended(&format!( "{TLS_LISTENER}client_ca = \"ca\"\ncert_file = \"x\"\n" )), Some(17), Some("listener[1].tls.cert_file"), "unknown field `cert_file`"),
        (appended("[auth]\nprincipal_from = \"cn\"\n"), Some(11), Some("auth.principal_from"), "unknown variant `cn`"),
        // [auth.token] and [[listener]] auth (issue 22).
        (appended("[auth.token]\njwks_file = \"j\"\nalgorithms = [\"HS256\"]\n"), Some(12), Some("auth.token.algorithms[0]"), "unknown variant `HS256`"),
        (appended("[auth.token]\njwks_file = \"j\"\nalgorithms = [\"none\"]\n"), Some(12), Some("auth.token.algorithms[0]"), "unknown variant `none`"),
        (appended("[auth.token]\njwks_file = \"j\"\nalgorithms = []\n"), Some(12), Some("auth.token.algorithms"), "at least one algorithm"),
        (appended("[auth.token]\njwks_file = \"j\"\nmax_lifetime = \"9000h\"\n"), Some(12), Some("auth.token.max_lifetime"), "at most 366 days"),
        (appended("[auth.token]\njwks_file = \"j\"\nleeway = \"11m\"\n"), Some(12), Some("auth.token.leeway"), "at most 10m"),
        (appended("[auth.token]\njwks_file = \"j\"\nauth_method = \"\"\n"), Some(12), Some("auth.token.auth_method"), "1 to 1024 bytes"),
        (appended("[auth.token]\nissuer = \"x\"\n"), Some(10), Some("auth.token"), "missing field `jwks_file`"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = [\"certificate\"]"), Some(7), Some("listener[0].auth"), "asks for no client certificate"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = [\"anonymous\"]"), Some(7), Some("listener[0].auth"), "allow_anonymous = false"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = [\"token\"]"), Some(7), Some("listener[0].auth"), "without [auth.token]"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = [\"password\"]"), Some(7), Some("listener[0].auth"), "without auth.password_file"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = []"), Some(7), Some("listener[0].auth"), "name at least one"),
        (BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = [\"magic\"]"), Some(7), Some("listener[0].auth[0]"), "unknown variant `magic`"),
        (format!("{}[auth]\nallow_anonymous = true\n", BASE.replace("bind = \"127.0.0.1:1884\"", "bind = \"127.0.0.1:1884\"\nauth = [\"anonymous\", \"anonymous\"]")), Some(7), Some("listener[0].auth"), "named twice"),
        (format!("{}client_ca = \"ca\"\n[upstream]\naddress = \"127.0.0.1:1883\"\n[auth]\nprincipal_from = \"username\"\npassword_file = \"p\"\n[policy]\nfile = \"p.toml\"\n", TLS_LISTENER.replace("[listener.tls]", "auth = [\"certificate\"]\n[listener.tls]")), Some(4), Some("listener[0].auth"), "principal_from = \"username\""),
        (appended("[auth]\ncert_is_credential = false\n"), Some(10), Some("auth"), "no client can authenticate"),
        (appended("on_publish_deny = \"reject\"\n"), Some(10), Some("policy.on_publish_deny"), "unknown variant `reject`"),
        (appended("[log]\naudit = \"x\"\n"), Some(11), Some("log.audit"), "unknown field `audit`"),
        (appended("[limits\n"), Some(10), None, ""),
        (appended("[upstream2]\n"), Some(10), Some("upstream2"), "unknown field `upstream2`"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "address = \"nohost\""), Some(2), Some("upstream.address"), "host:port"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "address = \"[::1]:0\""), Some(2), Some("upstream.address"), "host:port"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "addresses = [\"a:1883\", \"a:1883\"]"), Some(2), Some("upstream.addresses"), "listed twice"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "address = \"unix:mqtt.sock\""), Some(2), Some("upstream.address"), "unix:/absolute/path"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "address = \"unix:\""), Some(2), Some("upstream.address"), "unix:/absolute/path"),
        (BASE.replace("address = \"127.0.0.1:1883\"", &format!("address = \"unix:/{}\"", "x".repeat(120))), Some(2), Some("upstream.address"), "unix:/absolute/path"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "addresses = [\"a:1883\", \"b\"]"), Some(2), Some("upstream.addresses"), "host:port"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "address = \"a:1883\"\naddresses = [\"b:1883\"]"), Some(3), Some("upstream.addresses"), "not both"),
        (BASE.replace("address = \"127.0.0.1:1883\"", "connect_timeout = \"1s\""), Some(1), Some("upstream"), "broker is missing"),
        (BASE.replace("[upstream]\n", "[upstream]\nconnect_timeout = \"0ms\"\n"), Some(2), Some("upstream.connect_timeout"), "greater than zero"),
        (BASE.replace("[upstream]\n", "[upstream]\ncredentials = \"secret\"\n"), Some(2), Some("upstream.credentials"), "unknown variant `secret`"),
        (BASE.replace("file = \"policy.toml\"\n", "on_publish_deny = \"drop\"\n"), Some(8), Some("policy.file"), "a policy is required"),
        (BASE.replace("[policy]\nfile = \"policy.toml\"\n", ""), None, Some("policy.file"), "a policy is required"),
        (BASE.replace( "[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:1884\"\n", ""),
            None,
            Some("listener"),
            "at least one [[listener]]",
        ),
        (BASE.replace("[upstream]\naddress = \"127.0.0.1:1883\"\n", ""), Some(1), None, "missing field `upstream`"),
    ]
}

#[test]
fn broken_configs_name_line_and_key() {
    let mut wrong = Vec::new();
    for (src, line, key, fragment) in broken_cases() {
        let err = match parse(&src) {
            Ok(_) => panic!("accepted:\n{src}"),
            Err(e) => e,
        };
        let shown = err.to_string();
        if err.line() != line || err.key() != key || !shown.contains(fragment) {
            wrong.push(format!("want {line:?} {key:?} {fragment:?}, got {shown:?}"));
            continue;
        }
        let mut prefix = "/etc/gw/gateway.toml".to_owned();
        if let Some(line) = line {
            prefix.push_str(&format!(":{line}"));
        }
        if let Some(key) = key {
            prefix.push_str(&format!(": {key}"));
        }
        assert!(shown.starts_with(&format!("{prefix}: ")), "{shown:?}");
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn message_shape_matches_the_contract() {
    let src = appended("[limits]\nmax_packet_size = \"12 apples\"\n");
    let err = Config::from_str(&src, Path::new("gateway.toml")).unwrap_err();
    assert!(
        err.to_string().starts_with(
            r#"gateway.toml:11: limits.max_packet_size: invalid size "12 apples": expected an integer"#
        ),
        "{err}"
    );
}

#[test]
fn unreadable_file_keeps_the_io_error() {
    let missing = std::env::temp_dir().join("mqtt-gateway-no-such-dir/gateway.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(
        err.to_string()
            .contains("mqtt-gateway-no-such-dir/gateway.toml"),
        "{err}"
    );
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .unwrap();
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn load_reads_the_copied_example() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/gateway.example.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.policy.file,
        Some(path.parent().unwrap().join("policies/policy.toml"))
    );
}

#[test]
fn the_admin_api_needs_tls_off_loopback() {
    let path = Path::new("/etc/gw/gateway.toml");
    for (admin, ok) in [
        (
            "listen = \"127.0.0.1:9090\"\napi_tokens_file = \"t\"\n",
            true,
        ),
        ("listen = \"[::1]:9090\"\napi_tokens_file = \"t\"\n", true),
        ("listen = \"0.0.0.0:9090\"\n", true),
        (
            "listen = \"0.0.0.0:9090\"\napi_tokens_file = \"t\"\n",
            false,
        ),
        (
            "listen = \"0.0.0.0:9090\"\napi_tokens_file = \"t\"\n[admin.tls]\ncert = \"c\"\nkey = \"k\"\n",
            true,
        ),
    ] {
        let r = Config::from_str(&appended(&format!("[admin]\n{admin}")), path);
        assert_eq!(r.is_ok(), ok, "{admin}: {r:?}");
        if let Ok(c) = r {
            let a = c.admin.unwrap();
            assert!(
                a.api_tokens_file
                    .is_none_or(|p| p == Path::new("/etc/gw/t"))
            );
            assert!(a.tls.is_none_or(|t| t.cert == Path::new("/etc/gw/c")));
        }
    }
}
