//! Semantic checks on a parsed [`Config`] (values and combinations of values
//! that serde alone cannot refuse), and resolution of relative paths against
//! the config file's directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::locate::{KeyPath, Source};
use super::{ClientAuth, Config, ConfigError, ListenerConfig, ListenerProtocol, TlsConfig};

/// Largest accepted `limits.max_subscriptions_per_client`.
pub(super) const MAX_SUBSCRIPTIONS_PER_CLIENT: u32 = 100_000;
/// Smallest accepted `limits.max_packet_size`: below this even a CONNECT does not fit.
pub const MIN_PACKET_SIZE: u64 = 16;
/// Largest MQTT packet: 268,435,455 bytes of Remaining Length + 5 bytes of fixed header.
pub const MAX_PACKET_SIZE: u64 = 268_435_460;
/// MQTT keep-alive is a 16-bit number of seconds.
const MAX_KEEPALIVE: Duration = Duration::from_secs(65_535);

/// Runs every semantic check; the first failure is returned, located in `src`.
pub(super) fn validate(config: &Config, src: &Source<'_>) -> Result<(), ConfigError> {
    check_upstream(config, src)?;
    check_listeners(&config.listeners, src)?;
    check_auth_and_policy(config, src)?;
    check_limits(config, src)?;
    check_admin(config, src)?;
    super::enrollment::check(config.enrollment.as_ref(), src)?;
    check_cluster(config, src)
}

fn check_cluster(config: &Config, src: &Source<'_>) -> Result<(), ConfigError> {
    if let Some(cluster) = &config.cluster {
        crate::cluster::check_url(&cluster.redis)
            .map_err(|e| src.invalid(&KeyPath::new("cluster").key("redis"), e))?;
        if cluster.ca.is_some() && !cluster.redis.starts_with("rediss://") {
            return Err(src.invalid(
                &KeyPath::new("cluster").key("ca"),
                "ca is for rediss:// (TLS) only",
            ));
        }
    }
    Ok(())
}

/// At most this many concurrent admin connections (`admin.max_connections`).
pub(super) const MAX_ADMIN_CONNECTIONS: u32 = 10_000;

fn check_admin(config: &Config, src: &Source<'_>) -> Result<(), ConfigError> {
    if let Some(admin) = &config.admin
        && admin.max_connections.get() > MAX_ADMIN_CONNECTIONS
    {
        return Err(src.invalid(
            &KeyPath::new("admin").key("max_connections"),
            format!(
                "at most {MAX_ADMIN_CONNECTIONS}: each takes a file descriptor the MQTT listeners may need"
            ),
        ));
    }
    if let Some(admin) = &config.admin
        && admin.api_tokens_file.is_some()
        && admin.tls.is_none()
        && !admin.listen.ip().is_loopback()
    {
        return Err(src.invalid(
            &KeyPath::new("admin").key("api_tokens_file"),
            "the API on a non-loopback address needs [admin.tls] (cert, key): its tokens would travel in clear",
        ));
    }
    Ok(())
}

/// A `Duration` that must be strictly positive.
fn positive(src: &Source<'_>, key: KeyPath, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(src.invalid(&key, "must be greater than zero"));
    }
    Ok(())
}

/// At most this many `upstream.addresses`.
pub(super) const MAX_UPSTREAMS: usize = 64;

fn check_upstream(config: &Config, src: &Source<'_>) -> Result<(), ConfigError> {
    let upstream = KeyPath::new("upstream");
    let up = &config.upstream;
    let (key, addresses): (KeyPath, Vec<&str>) = match (&up.address, up.addresses.is_empty()) {
        (Some(a), true) => (upstream.key("address"), vec![a.as_str()]),
        (None, false) => (
            upstream.key("addresses"),
            up.addresses.iter().map(String::as_str).collect(),
        ),
        (Some(_), false) => {
            return Err(src.invalid(
                &upstream.key("addresses"),
                "give either `address` or `addresses`, not both",
            ));
        }
        (None, true) => {
            return Err(src.invalid(
                &upstream,
                "the broker is missing: set `address = \"host:port\"` (or `addresses = [...]` for several)",
            ));
        }
    };
    if addresses.len() > MAX_UPSTREAMS {
        return Err(src.invalid(&key, format!("at most {MAX_UPSTREAMS} brokers")));
    }
    let mut seen = std::collections::HashSet::new();
    for address in addresses {
        let valid = match super::UpstreamAddress::parse(address) {
            super::UpstreamAddress::Unix(path) => is_socket_path(path),
            super::UpstreamAddress::Tcp(a) => match a.parse::<SocketAddr>() {
                Ok(addr) => addr.port() != 0,
                Err(_) => is_host_port(a),
            },
        };
        if !valid {
            return Err(src.invalid(
                &key,
                format!(
                    "invalid broker address {address:?}: expected host:port (e.g. \"127.0.0.1:1883\", \"[::1]:1883\", \"mosquitto:1883\") or unix:/absolute/path (e.g. \"unix:/run/mosquitto/mqtt.sock\")"
                ),
            ));
        }
        if !seen.insert(address) {
            return Err(src.invalid(&key, format!("{address:?} is listed twice")));
        }
    }
    positive(
        src,
        upstream.key("connect_timeout"),
        config.upstream.connect_timeout,
    )
}

/// The path of a `unix:` broker address: absolute (the gateway's working directory is no
/// anchor for it) and short enough for `sun_path` (108 bytes with its NUL on Linux).
fn is_socket_path(path: &str) -> bool {
    path.starts_with('/') && path.len() < 108 && !path.contains('\0')
}

/// `name:port` with a non-empty host name without `:` and a non-zero port.
fn is_host_port(address: &str) -> bool {
    address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(':')
            && !host.contains(char::is_whitespace)
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

fn check_listeners(listeners: &[ListenerConfig], src: &Source<'_>) -> Result<(), ConfigError> {
    let root = KeyPath::new("listener");
    if listeners.is_empty() {
        return Err(src.invalid(&root, "at least one [[listener]] is required"));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut binds: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, listener) in listeners.iter().enumerate() {
        let at = root.index(i);
        let name = listener.name.as_str();
        if name.trim().is_empty() {
            return Err(src.invalid(&at.key("name"), "must not be empty"));
        }
        if let Some(first) = names.insert(name, i) {
            return Err(src.invalid(
                &at.key("name"),
                format!("duplicate listener name {name:?} (also used by listener[{first}])"),
            ));
        }
        if listener.bind.port() != 0
            && let Some(first) = binds.insert(listener.bind, i)
        {
            return Err(src.invalid(
                &at.key("bind"),
                format!("{} is already bound by listener[{first}]", listener.bind),
            ));
        }
        if let Some(tls) = &listener.tls {
            check_tls(tls, &at.key("tls"), src)?;
        }
        match (
            listener.proxy_protocol,
            listener.proxy_protocol_from.is_empty(),
        ) {
            (true, true) => {
                return Err(src.invalid(
                    &at.key("proxy_protocol"),
                    "proxy_protocol = true needs proxy_protocol_from = [the load balancers' addresses] (anyone else could claim any client address)",
                ));
            }
            (false, false) => {
                return Err(src.invalid(
                    &at.key("proxy_protocol_from"),
                    "proxy_protocol_from is only used with proxy_protocol = true",
                ));
            }
            _ => {}
        }
        if listener.protocol == ListenerProtocol::Websocket {
            if !listener.websocket_path().starts_with('/') {
                return Err(src.invalid(&at.key("websocket_path"), "must start with '/'"));
            }
        } else if listener.websocket_path.is_some() {
            return Err(src.invalid(
                &at.key("websocket_path"),
                "only used with protocol = \"websocket\"",
            ));
        } else if !listener.websocket_origins.is_empty() {
            return Err(src.invalid(
                &at.key("websocket_origins"),
                "only used with protocol = \"websocket\"",
            ));
        }
    }
    Ok(())
}

fn check_tls(tls: &TlsConfig, at: &KeyPath, src: &Source<'_>) -> Result<(), ConfigError> {
    for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
        if path.as_os_str().is_empty() {
            return Err(src.invalid(&at.key(key), "must not be empty"));
        }
    }
    match (tls.client_auth, &tls.client_ca) {
        (ClientAuth::Required | ClientAuth::Optional, None) => {
            let mode = if tls.client_auth == ClientAuth::Required {
                "required"
            } else {
                "optional"
            };
            return Err(src.invalid(
                &at.key("client_auth"),
                format!(
                    "client_auth = \"{mode}\" needs client_ca (the CA certificates that sign client certificates); client_auth defaults to \"required\", set client_auth = \"none\" for a TLS listener without client certificates"
                ),
            ));
        }
        (ClientAuth::None, Some(_)) => {
            return Err(src.invalid(
                &at.key("client_ca"),
                "client_ca is set but client_auth = \"none\" never asks for a client certificate; remove one of them",
            ));
        }
        _ => {}
    }
    if !tls.crl.is_empty() && tls.client_ca.is_none() {
        return Err(src.invalid(
            &at.key("crl"),
            "crl needs client_ca: CRLs only apply to verified client certificates",
        ));
    }
    check_crl_urls(tls, at, src)?;
    check_ocsp(tls, at, src)
}

/// `ocsp`, `ocsp_responder`, `ocsp_refresh_interval`, `ocsp_timeout`.
fn check_ocsp(tls: &TlsConfig, at: &KeyPath, src: &Source<'_>) -> Result<(), ConfigError> {
    let interval = tls.ocsp_refresh_interval;
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(86_400) {
        return Err(src.invalid(
            &at.key("ocsp_refresh_interval"),
            "must be between 1s and 24h",
        ));
    }
    let timeout = tls.ocsp_timeout;
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
        return Err(src.invalid(&at.key("ocsp_timeout"), "must be between 100ms and 60s"));
    }
    if let Some(url) = &tls.ocsp_responder {
        crate::crl_fetch::http::check_url(url)
            .map_err(|e| src.invalid(&at.key("ocsp_responder"), e))?;
    }
    if tls.ocsp != crate::config::OcspMode::Off && tls.client_ca.is_none() {
        return Err(src.invalid(
            &at.key("ocsp"),
            "ocsp needs client_ca: OCSP applies to verified client certificates",
        ));
    }
    Ok(())
}

/// `crl_urls`, `crl_cache_dir`, `crl_refresh_interval`.
fn check_crl_urls(tls: &TlsConfig, at: &KeyPath, src: &Source<'_>) -> Result<(), ConfigError> {
    let interval = tls.crl_refresh_interval;
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(86_400) {
        return Err(src.invalid(
            &at.key("crl_refresh_interval"),
            "must be between 1s and 24h",
        ));
    }
    if tls.crl_urls.is_empty() {
        return Ok(());
    }
    if tls.client_ca.is_none() {
        return Err(src.invalid(
            &at.key("crl_urls"),
            "crl_urls needs client_ca: CRLs only apply to verified client certificates, and a fetched CRL must be signed by a CA of client_ca",
        ));
    }
    if tls.crl_cache_dir.is_none() {
        return Err(src.invalid(
            &at.key("crl_urls"),
            "crl_urls needs crl_cache_dir (where the last good CRLs are kept for a restart without network)",
        ));
    }
    if tls.crl_urls.len() > crate::crl_fetch::MAX_URLS {
        return Err(src.invalid(
            &at.key("crl_urls"),
            format!("at most {} URLs", crate::crl_fetch::MAX_URLS),
        ));
    }
    for (i, url) in tls.crl_urls.iter().enumerate() {
        crate::crl_fetch::http::check_url(url)
            .map_err(|e| src.invalid(&at.key("crl_urls").index(i), e))?;
        if tls.crl_urls.iter().take(i).any(|u| u == url) {
            return Err(src.invalid(&at.key("crl_urls").index(i), "duplicate URL"));
        }
    }
    Ok(())
}

fn check_auth_and_policy(config: &Config, src: &Source<'_>) -> Result<(), ConfigError> {
    let auth = &config.auth;
    if !auth.allow_anonymous
        && auth.password_file.is_none()
        && !auth.cert_is_credential
        && auth.token.is_none()
    {
        return Err(src.invalid(
            &KeyPath::new("auth"),
            "no client can authenticate: set password_file, cert_is_credential = true, [auth.token] or allow_anonymous = true",
        ));
    }
    if let Some(token) = &auth.token {
        check_token(token, src)?;
    }
    for (i, l) in config.listeners.iter().enumerate() {
        check_listener_auth(config, i, l, src)?;
    }
    let policy = &config.policy;
    if policy.file.is_none() && policy.mosquitto_acl_file.is_none() {
        return Err(src.invalid(
            &KeyPath::new("policy").key("file"),
            "a policy is required: set policy.file and/or policy.mosquitto_acl_file",
        ));
    }
    Ok(())
}

/// Longest accepted `auth.token.max_lifetime`: a token is a bearer credential, replayable until
/// it expires; a year-long one is a password that cannot be changed.
pub(super) const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);
/// Longest accepted `auth.token.leeway`.
pub(super) const MAX_TOKEN_LEEWAY: Duration = Duration::from_secs(600);

fn check_token(token: &super::TokenConfig, src: &Source<'_>) -> Result<(), ConfigError> {
    let at = KeyPath::new("auth").key("token");
    if token.algorithms.is_empty() {
        return Err(src.invalid(
            &at.key("algorithms"),
            "name at least one algorithm (ES256, RS256, EdDSA, ...)",
        ));
    }
    positive(src, at.key("max_lifetime"), token.max_lifetime)?;
    if token.max_lifetime > MAX_TOKEN_LIFETIME {
        return Err(src.invalid(
            &at.key("max_lifetime"),
            "at most 366 days: a token can be replayed until it expires, so lifetimes stay short",
        ));
    }
    if token.leeway > MAX_TOKEN_LEEWAY {
        return Err(src.invalid(&at.key("leeway"), "at most 10m"));
    }
    for (key, value) in [
        ("principal_claim", Some(&token.principal_claim)),
        ("groups_claim", token.groups_claim.as_ref()),
        ("auth_method", Some(&token.auth_method)),
        ("issuer", token.issuer.as_ref()),
        ("audience", token.audience.as_ref()),
    ] {
        if value.is_some_and(|v| v.is_empty() || v.len() > 1024) {
            return Err(src.invalid(&at.key(key), "must be 1 to 1024 bytes"));
        }
    }
    Ok(())
}

/// `[[listener]] auth`: a non-empty list of methods, each of which `[auth]` and the listener can
/// serve.
fn check_listener_auth(
    config: &Config,
    index: usize,
    l: &ListenerConfig,
    src: &Source<'_>,
) -> Result<(), ConfigError> {
    use super::AuthMethod;
    let Some(methods) = &l.auth else {
        return Ok(());
    };
    let key = KeyPath::new("listener").index(index).key("auth");
    if methods.is_empty() {
        return Err(src.invalid(
            &key,
            "name at least one of \"certificate\", \"password\", \"token\", \"anonymous\" (or leave `auth` out: every method [auth] enables)",
        ));
    }
    let auth = &config.auth;
    for (i, m) in methods.iter().enumerate() {
        if methods.get(..i).is_some_and(|before| before.contains(m)) {
            return Err(src.invalid(&key, format!("{:?} is named twice", m.as_str())));
        }
        let why = match m {
            AuthMethod::Certificate => {
                let asks = l
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.client_auth != ClientAuth::None);
                if !asks {
                    Some(
                        "\"certificate\" on a listener that asks for no client certificate (no [listener.tls], or client_auth = \"none\")",
                    )
                } else if auth.principal_from == super::PrincipalFrom::Username {
                    Some(
                        "\"certificate\" while auth.principal_from = \"username\": a certificate names nobody",
                    )
                } else {
                    None
                }
            }
            AuthMethod::Password => auth
                .password_file
                .is_none()
                .then_some("\"password\" without auth.password_file"),
            AuthMethod::Token => auth
                .token
                .is_none()
                .then_some("\"token\" without [auth.token]"),
            AuthMethod::Anonymous => (!auth.allow_anonymous)
                .then_some("\"anonymous\" while auth.allow_anonymous = false"),
        };
        if let Some(why) = why {
            return Err(src.invalid(&key, why));
        }
    }
    Ok(())
}

fn check_limits(config: &Config, src: &Source<'_>) -> Result<(), ConfigError> {
    let limits = &config.limits;
    let at = KeyPath::new("limits");
    positive(src, at.key("connect_timeout"), limits.connect_timeout)?;
    positive(src, at.key("ban_window"), limits.ban_window)?;
    positive(src, at.key("ban_duration"), limits.ban_duration)?;
    if limits.max_keepalive < Duration::from_secs(1) || limits.max_keepalive > MAX_KEEPALIVE {
        return Err(src.invalid(
            &at.key("max_keepalive"),
            "must be between 1s and 65535s (MQTT keep-alive is a 16-bit number of seconds)",
        ));
    }
    if limits.max_will_delay.as_secs() > u64::from(u32::MAX)
        || limits.max_will_delay.subsec_nanos() != 0
    {
        return Err(src.invalid(
            &at.key("max_will_delay"),
            "must be whole seconds, at most 4294967295s (MQTT's Will Delay Interval is a 32-bit number of seconds)",
        ));
    }
    let size = limits.max_packet_size.bytes();
    if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&size) {
        return Err(src.invalid(
            &at.key("max_packet_size"),
            format!(
                "{size} bytes is out of range: must be between {MIN_PACKET_SIZE} and {MAX_PACKET_SIZE} bytes (the MQTT maximum)"
            ),
        ));
    }
    let subs = limits.max_subscriptions_per_client.get();
    if subs > MAX_SUBSCRIPTIONS_PER_CLIENT {
        return Err(src.invalid(
            &at.key("max_subscriptions_per_client"),
            format!(
                "{subs} is out of range: must be between 1 and {MAX_SUBSCRIPTIONS_PER_CLIENT} (the gateway keeps 8 bytes per filter per connection, the broker much more)"
            ),
        ));
    }
    let rate = limits.bytes_per_client_per_second.bytes();
    if rate == 0 || rate > u64::from(u32::MAX) {
        return Err(src.invalid(
            &at.key("bytes_per_client_per_second"),
            format!(
                "{rate} bytes is out of range: must be between 1 and {}",
                u32::MAX
            ),
        ));
    }
    Ok(())
}

/// Makes every relative path of the file absolute, relative to the directory
/// of the config file `path` (itself made absolute against the current directory).
pub(super) fn resolve_paths(config: &mut Config, path: &Path) -> Result<(), ConfigError> {
    let absolute = std::path::absolute(path).map_err(|source| ConfigError::Resolve {
        file: path.to_owned(),
        source,
    })?;
    let base = absolute.parent().unwrap_or(Path::new("/")).to_owned();
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for listener in &mut config.listeners {
        if let Some(tls) = &mut listener.tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            tls.client_ca.iter_mut().for_each(resolve);
            tls.crl.iter_mut().for_each(resolve);
            tls.crl_cache_dir.iter_mut().for_each(resolve);
        }
    }
    config.auth.password_file.iter_mut().for_each(resolve);
    if let Some(t) = &mut config.auth.token {
        resolve(&mut t.jwks_file);
    }
    config.policy.file.iter_mut().for_each(resolve);
    config
        .policy
        .mosquitto_acl_file
        .iter_mut()
        .for_each(resolve);
    config.log.audit_file.iter_mut().for_each(resolve);
    if let Some(e) = &mut config.enrollment {
        resolve(&mut e.pki_dir);
        resolve(&mut e.tls.cert);
        resolve(&mut e.tls.key);
    }
    if let Some(a) = &mut config.admin {
        a.api_tokens_file.iter_mut().for_each(resolve);
        a.pki_dir.iter_mut().for_each(resolve);
        if let Some(t) = &mut a.tls {
            resolve(&mut t.cert);
            resolve(&mut t.key);
        }
    }
    if let Some(c) = &mut config.cluster {
        c.ca.iter_mut().for_each(resolve);
    }
    Ok(())
}
