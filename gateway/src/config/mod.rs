//! The gateway configuration file (`gateway.toml`): its serde types, loading,
//! and the semantic checks that run once at the edge.
//!
//! Every section and key of the contract (`spec/gateway.example.toml`) is a
//! typed field here. Unknown keys are refused (`deny_unknown_fields` on every
//! struct, no `flatten`, no `untagged`), and every error names the file, the
//! line and the dotted key (see [`ConfigError`]). After a successful
//! [`Config::load`], relative paths have been resolved against the directory
//! of the config file and every value has passed the semantic checks,
//! so the rest of the gateway never re-checks them.

mod enrollment;
mod error;
mod locate;
mod validate;

pub mod units;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use enrollment::{EnrollmentConfig, EnrollmentTls};
pub use error::ConfigError;
pub use units::ByteSize;
pub use validate::{MAX_PACKET_SIZE, MIN_PACKET_SIZE};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[admin]`: the HTTP listener for `/metrics`, `/healthz`, `/readyz`.
    /// Absent: no admin listener is started.
    pub admin: Option<AdminConfig>,
    /// `[upstream]`: the broker behind the gateway. Required.
    pub upstream: UpstreamConfig,
    /// `[[listener]]`: where clients connect. At least one.
    #[serde(default, rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[auth]`: how clients authenticate. All keys have defaults.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[policy]`: topic ACLs and connect rules. At least one policy source is
    /// required (fail closed: no policy, no start).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[limits]`: resource bounds; every key defaults to the contract's example value.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[log]`: where the audit log goes.
    #[serde(default)]
    pub log: LogConfig,
    /// `[enrollment]`: the EST listener. Absent: none.
    #[serde(default)]
    pub enrollment: Option<EnrollmentConfig>,
    /// `[cluster]`: bans and failure counters shared with the other gateway instances through
    /// Redis. Absent: this instance keeps its own.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`. Read at start-up only (a reload keeps the connection it has).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    pub redis: String,
    /// With `rediss://`: the CA certificates (PEM) that Redis's server certificate must chain to,
    /// instead of the system's roots.
    pub ca: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin HTTP listener. Keep it on loopback or a management network.
    pub listen: SocketAddr,
    /// Concurrent admin connections; one more is closed as soon as it is accepted, so idle admin
    /// connections cannot take the descriptors the MQTT listeners need. Default 64.
    #[serde(default = "defaults::admin_max_connections")]
    pub max_connections: NonZeroU32,
    /// Enables `/api/v1`: lines `NAME:ROLE:HASH` (ROLE `read` or `operate`), reloaded like every
    /// file. Refused on a non-loopback `listen` without `[admin.tls]`.
    #[serde(default)]
    pub api_tokens_file: Option<PathBuf>,
    /// `[admin.tls]`: serve the admin listener over TLS (read at start).
    #[serde(default)]
    pub tls: Option<AdminTlsConfig>,
    /// A `mqtt-gateway pki` directory: enables `POST /api/v1/certificates/{name}/revoke`.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
}

/// `[admin.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// PEM certificate chain of the admin listener.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[upstream]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The broker, as `host:port` (a name is resolved at dial time) or `unix:/path` (a Unix
    /// domain socket: the broker on this host, reachable by no other user). Exactly one of
    /// `address` and `addresses` is given.
    #[serde(default)]
    pub address: Option<String>,
    /// Several brokers (the nodes of a cluster): each client goes to the node its client id
    /// ranks first (rendezvous hashing), so a reconnecting client reaches the same node, and
    /// falls over to the next when that one cannot be reached.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Send a PROXY protocol v2 header to the broker first, carrying the client's address and
    /// the authenticated identity (for a broker that reads it, e.g. Mosquitto 2.1 with
    /// `enable_proxy_protocol 2`). Default false.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Bound on dialling the broker. Default 5 s.
    #[serde(
        default = "defaults::upstream_connect_timeout",
        deserialize_with = "units::duration"
    )]
    pub connect_timeout: Duration,
    /// What the broker sees as credentials. Default `principal`, so the broker never sees secrets.
    #[serde(default)]
    pub credentials: Credentials,
}

/// A broker address of `[upstream]`, typed: `host:port`, or `unix:/path` for a broker on this
/// host behind a Unix domain socket. Parsed here, where the configuration is read; the transport
/// dials what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAddress<'a> {
    /// `host:port` (a socket address or a name to resolve).
    Tcp(&'a str),
    /// `unix:/path`: the socket file.
    Unix(&'a str),
}

impl<'a> UpstreamAddress<'a> {
    /// The prefix that names a Unix domain socket: `unix:/run/mosquitto/mqtt.sock`.
    pub const UNIX_PREFIX: &'static str = "unix:";

    /// Reads a configured address (checked by `validate` at load: a `host:port` or an absolute
    /// socket path).
    #[must_use]
    pub fn parse(address: &'a str) -> Self {
        match address.strip_prefix(Self::UNIX_PREFIX) {
            Some(path) => Self::Unix(path),
            None => Self::Tcp(address),
        }
    }
}

impl UpstreamConfig {
    /// The configured brokers, in configuration order.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.address
            .iter()
            .chain(&self.addresses)
            .map(String::as_str)
    }
}

/// `upstream.credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Credentials {
    /// CONNECT is re-encoded: username = the authenticated principal, no password.
    #[default]
    Principal,
    /// CONNECT is forwarded unchanged (the broker sees the client's password).
    Passthrough,
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique, non-empty name; the `listener` label of metrics and audit lines.
    pub name: String,
    /// Socket address to bind.
    pub bind: SocketAddr,
    /// `[listener.tls]`: present = TLS is terminated here; absent = plain TCP.
    pub tls: Option<TlsConfig>,
    /// A PROXY protocol (v1 or v2) header is required first on every connection (the listener
    /// is behind a load balancer); the address it carries is the client's address for bans,
    /// limits, `sources` rules, metrics and the audit log. Default false.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Who may send that header (the load balancers' addresses, CIDRs); required with
    /// `proxy_protocol = true`. Connections from elsewhere are refused.
    #[serde(default)]
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// `mqtt` (default): MQTT over TCP. `websocket`: MQTT over WebSocket (over TLS when the
    /// listener has a `[listener.tls]` table: `wss://`).
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// The WebSocket request path. Default `/mqtt`; only with `protocol = "websocket"`.
    #[serde(default)]
    pub websocket_path: Option<String>,
    /// Browser origins allowed to open the WebSocket (`https://dashboard.example.com`); a
    /// request carrying another `Origin` is refused, one without `Origin` (not a browser) is let
    /// through. Only with `protocol = "websocket"`.
    #[serde(default)]
    pub websocket_origins: Vec<String>,
    /// The authentication methods this listener accepts; absent: every method `[auth]` enables.
    /// A client that authenticates another way is refused like a bad credential.
    #[serde(default)]
    pub auth: Option<Vec<AuthMethod>>,
}

/// `listener.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// MQTT over TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT over WebSocket (RFC 6455), subprotocol `mqtt`.
    Websocket,
}

impl ListenerConfig {
    /// The WebSocket path of a `protocol = "websocket"` listener.
    #[must_use]
    pub fn websocket_path(&self) -> &str {
        self.websocket_path.as_deref().unwrap_or("/mqtt")
    }
}

/// `[listener.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM), leaf first, then intermediates.
    pub cert: PathBuf,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Trust anchors for client certificates (PEM). Required unless `client_auth = "none"`.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is demanded. Default `required` (fail closed):
    /// a TLS listener without client certificates must say `client_auth = "none"`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// CRL files, PEM or DER. Needs `client_ca`.
    #[serde(default)]
    pub crl: Vec<PathBuf>,
    /// Which certificates of the client chain are checked against the CRLs. Default `leaf`.
    #[serde(default)]
    pub crl_scope: CrlScope,
    /// Lowest TLS version accepted. Default `"1.2"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// CRLs fetched over `http://` at start and refreshed in the background (`crate::crl_fetch`).
    /// Needs `client_ca` (the CRL's issuer must be in it) and `crl_cache_dir`.
    #[serde(default)]
    pub crl_urls: Vec<String>,
    /// Where the last good fetched CRLs are kept (one file per URL), so that a restart without
    /// network starts from them. Required with `crl_urls`.
    #[serde(default)]
    pub crl_cache_dir: Option<PathBuf>,
    /// The longest time between two fetches of a `crl_urls` CRL (sooner when half the time left
    /// to its `nextUpdate` is shorter). Default `"1h"`, between `"1s"` and `"24h"`.
    #[serde(
        default = "default_crl_refresh_interval",
        deserialize_with = "units::duration"
    )]
    pub crl_refresh_interval: Duration,
    /// OCSP for client certificates (`crate::ocsp`). Default `"off"`. Needs `client_ca`.
    #[serde(default)]
    pub ocsp: OcspMode,
    /// The OCSP responder (`http://`) asked for every client certificate, instead of the one in
    /// each certificate's AIA extension.
    #[serde(default)]
    pub ocsp_responder: Option<String>,
    /// How often the answer for a certificate in use is fetched again (sooner when half the time
    /// left to its `nextUpdate` is shorter). Default `"5m"`, between `"1s"` and `"24h"`.
    #[serde(
        default = "default_ocsp_refresh_interval",
        deserialize_with = "units::duration"
    )]
    pub ocsp_refresh_interval: Duration,
    /// The deadline of one OCSP query (a permit, the connection, the whole answer). Default
    /// `"5s"`, between `"100ms"` and `"60s"`.
    #[serde(default = "default_ocsp_timeout", deserialize_with = "units::duration")]
    pub ocsp_timeout: Duration,
    /// Staple an OCSP response for the gateway's own certificate (`crate::ocsp::staple`): from
    /// its AIA responder (else `ocsp_responder`), checked against the next certificate of `cert`,
    /// refreshed every `ocsp_refresh_interval`, never served past its `nextUpdate`.
    #[serde(default)]
    pub staple_ocsp: bool,
}

/// `listener.tls.ocsp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OcspMode {
    /// No OCSP.
    #[default]
    Off,
    /// A revoked answer refuses; no answer (unreachable responder, `unknown`) admits.
    Soft,
    /// Only a good answer admits.
    Hard,
}

fn default_ocsp_refresh_interval() -> Duration {
    Duration::from_secs(300)
}

fn default_ocsp_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `listener.tls.crl_refresh_interval` when not given.
pub const DEFAULT_CRL_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

fn default_crl_refresh_interval() -> Duration {
    DEFAULT_CRL_REFRESH_INTERVAL
}

impl TlsConfig {
    /// Every CRL file the verifier loads: the `crl` files, then the cached copy of each
    /// `crl_urls` CRL (which may not exist yet).
    #[must_use]
    pub fn crl_files(&self) -> Vec<PathBuf> {
        let mut files = self.crl.clone();
        if let Some(dir) = &self.crl_cache_dir {
            files.extend(
                self.crl_urls
                    .iter()
                    .map(|url| crate::crl_fetch::cache_file(dir, url)),
            );
        }
        files
    }
}

/// `listener.tls.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A valid client certificate is mandatory.
    #[default]
    Required,
    /// A client certificate is verified if presented; clients without one still connect.
    Optional,
    /// No client certificate is requested.
    None,
}

/// `listener.tls.crl_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrlScope {
    /// Only the client's own certificate is checked (as Mosquitto does).
    #[default]
    Leaf,
    /// Every certificate up to (not including) the trust anchor (as nginx does).
    Chain,
}

/// `listener.tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether clients without any credential may connect. Default `false`.
    pub allow_anonymous: bool,
    /// Mosquitto (`$6$`/`$7$`) or argon2id password file. Default: none.
    pub password_file: Option<PathBuf>,
    /// How a principal is named. Default `cert_cn`.
    pub principal_from: PrincipalFrom,
    /// Whether a verified client certificate alone authenticates. Default `true`.
    pub cert_is_credential: bool,
    /// `[auth.token]`: JWT device tokens. Absent: no token is accepted.
    pub token: Option<TokenConfig>,
}

/// `[auth.token]`: JWT device tokens (compact JWS), as the CONNECT password or, in MQTT 5, as the
/// Authentication Data of `auth_method` (with re-authentication).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The RFC 7517 key set; keys are chosen by `kid`. Reloaded like every file.
    pub jwks_file: PathBuf,
    /// The signature algorithms accepted. `none` and `HS*` are refused at load whatever the file
    /// says. Default `["ES256", "RS256", "EdDSA"]`.
    #[serde(default = "defaults::token_algorithms")]
    pub algorithms: Vec<TokenAlgorithm>,
    /// When set, `iss` must equal it.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, `aud` (a string or an array) must contain it.
    #[serde(default)]
    pub audience: Option<String>,
    /// The claim that names the principal (`%u`). Default `sub`.
    #[serde(default = "defaults::principal_claim")]
    pub principal_claim: String,
    /// A claim holding an array of group names, usable in policy `who = { groups = [...] }`.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Longest lifetime accepted: `exp - iat` (or `exp - now` without `iat`). Default 24 h.
    #[serde(
        default = "defaults::token_max_lifetime",
        deserialize_with = "units::duration"
    )]
    pub max_lifetime: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default 30 s.
    #[serde(
        default = "defaults::token_leeway",
        deserialize_with = "units::duration"
    )]
    pub leeway: Duration,
    /// The MQTT 5 Authentication Method that carries a token (CONNECT and re-authentication).
    /// Default `JWT`.
    #[serde(default = "defaults::auth_method")]
    pub auth_method: String,
}

/// An algorithm of `auth.token.algorithms`: asymmetric signatures only. A shared-secret (`HS*`)
/// key would let anyone who can read the JWKS mint tokens, and `none` signs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenAlgorithm {
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// Ed25519.
    EdDSA,
}

/// An authentication method, for `[[listener]] auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A verified client certificate names the principal (`cert_is_credential`).
    Certificate,
    /// A user name and its password from `password_file`.
    Password,
    /// A JWT device token (`[auth.token]`).
    Token,
    /// No credential (`allow_anonymous`).
    Anonymous,
}

impl AuthMethod {
    /// The name in the configuration (and in audit lines).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::Password => "password",
            Self::Token => "token",
            Self::Anonymous => "anonymous",
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: false,
            password_file: None,
            principal_from: PrincipalFrom::CertCn,
            cert_is_credential: true,
            token: None,
        }
    }
}

/// `auth.principal_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalFrom {
    /// The subject common name of the client certificate.
    #[default]
    CertCn,
    /// The first DNS or URI subject alternative name.
    CertSan,
    /// The CONNECT username (the certificate is still verified if required).
    Username,
}

/// `[policy]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The gateway's own policy file (see `policy.example.toml`).
    pub file: Option<PathBuf>,
    /// A Mosquitto `acl_file`, translated into the same engine.
    pub mosquitto_acl_file: Option<PathBuf>,
    /// What a denied PUBLISH does. Default `drop`.
    pub on_publish_deny: OnPublishDeny,
}

/// `policy.on_publish_deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPublishDeny {
    /// QoS 0 dropped; QoS 1/2 acknowledged by the gateway (MQTT 5: reason 0x87).
    #[default]
    Drop,
    /// The connection is closed.
    Disconnect,
}

/// `[limits]`. Every default is the contract example's value; each bound says what it stops.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// TCP accept → complete CONNECT, TLS handshake included (slowloris). Default 10 s.
    #[serde(deserialize_with = "units::duration")]
    pub connect_timeout: Duration,
    /// Largest MQTT packet, either direction (memory per connection). Default 256 KiB.
    pub max_packet_size: ByteSize,
    /// Keep-alives above this are capped (idle sockets held open). Default 1 h.
    #[serde(deserialize_with = "units::duration")]
    pub max_keepalive: Duration,
    /// Concurrent connections, whole gateway (fd and memory exhaustion). Default 100000.
    pub max_connections: NonZeroU32,
    /// Concurrent connections per source IP (one host hogging the gateway). Default 100.
    pub max_connections_per_ip: NonZeroU32,
    /// New connections per source IP per second, burst the same (reconnect storms,
    /// handshake CPU). Default 20.
    pub connections_per_ip_per_second: NonZeroU32,
    /// Packets per client per second, every packet the client sends (broker flooding, PINGREQ
    /// floods included). Default 1000.
    pub messages_per_client_per_second: NonZeroU32,
    /// Filters one client connection may hold subscribed at once (broker memory). Default 1000.
    pub max_subscriptions_per_client: NonZeroU32,
    /// Bytes per client per second (bandwidth hogging). Default 1 MiB.
    pub bytes_per_client_per_second: ByteSize,
    /// Authentication failures per source IP within `ban_window` before a ban
    /// (password guessing). Default 5.
    pub auth_failures_before_ban: NonZeroU32,
    /// Window in which authentication failures are counted. Default 1 min.
    #[serde(deserialize_with = "units::duration")]
    pub ban_window: Duration,
    /// How long a banned IP is refused. Default 10 min.
    #[serde(deserialize_with = "units::duration")]
    pub ban_duration: Duration,
    /// Longest MQTT 5 Will Delay Interval the broker is told (longer ones are lowered): a Will
    /// the broker holds after the connection is gone is out of the gateway's reach, so a
    /// revocation or a policy change in between cannot stop it. Default 0 (published at once).
    #[serde(deserialize_with = "units::duration")]
    pub max_will_delay: Duration,
}

/// A `NonZeroU32` default, checked at compile time (the functions are only
/// called in `const` items).
const fn nonzero_const(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("a default limit is zero"),
    }
}

/// Evaluates `nonzero_const` at compile time.
macro_rules! nonzero {
    ($n:expr) => {{
        const N: NonZeroU32 = nonzero_const($n);
        N
    }};
}
impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            max_packet_size: ByteSize(256 * 1024),
            max_keepalive: Duration::from_secs(3600),
            max_connections: nonzero!(100_000),
            max_connections_per_ip: nonzero!(100),
            connections_per_ip_per_second: nonzero!(20),
            messages_per_client_per_second: nonzero!(1000),
            max_subscriptions_per_client: nonzero!(1000),
            bytes_per_client_per_second: ByteSize(1 << 20),
            auth_failures_before_ban: nonzero!(5),
            ban_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(600),
            max_will_delay: Duration::ZERO,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// JSON-lines audit file. Absent: audit lines go to stderr.
    pub audit_file: Option<PathBuf>,
    /// Also a `session_opened` and a `session_closed` line per session.
    pub sessions: bool,
}

/// Defaults that serde needs as functions.
mod defaults {
    use std::time::Duration;

    use super::{NonZeroU32, TokenAlgorithm, nonzero_const};

    pub(super) fn token_algorithms() -> Vec<TokenAlgorithm> {
        vec![
            TokenAlgorithm::ES256,
            TokenAlgorithm::RS256,
            TokenAlgorithm::EdDSA,
        ]
    }

    pub(super) fn principal_claim() -> String {
        "sub".to_owned()
    }

    pub(super) const fn token_max_lifetime() -> Duration {
        Duration::from_secs(24 * 3600)
    }

    pub(super) const fn token_leeway() -> Duration {
        Duration::from_secs(30)
    }

    pub(super) fn auth_method() -> String {
        "JWT".to_owned()
    }

    pub(super) fn upstream_connect_timeout() -> Duration {
        Duration::from_secs(5)
    }

    pub(super) const fn admin_max_connections() -> NonZeroU32 {
        nonzero!(64)
    }
}

impl Config {
    /// Reads, parses, resolves and validates the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read; otherwise as [`Config::from_str`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str(&src, path)
    }

    /// Parses `src` as the content of the file `path` (used for error messages and
    /// to resolve relative paths; the file itself is not read).
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for TOML syntax, unknown keys and bad values;
    /// [`ConfigError::Invalid`] when the semantic checks fail;
    /// [`ConfigError::Resolve`] if the config directory cannot be made absolute.
    pub fn from_str(src: &str, path: &Path) -> Result<Self, ConfigError> {
        let deserializer =
            toml::Deserializer::parse(src).map_err(|e| ConfigError::parse(path, src, None, e))?;
        let mut config: Self = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::parse(path, src, Some(key), e.into_inner())
        })?;
        validate::validate(&config, &locate::Source { path, src })?;
        validate::resolve_paths(&mut config, path)?;
        Ok(config)
    }
}
