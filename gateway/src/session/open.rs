//! The connect phase of a connection: TLS handshake, first frame, CONNECT checks and admission,
//! the broker dialled. Every way it can end early is one [`Refused`], answered, counted and
//! audited in one place ([`Refused::answer`]).

use super::refuse::{Refused, Why};
#[allow(clippy::wildcard_imports)] // the session's own vocabulary, shared with mod.rs
use super::*;

/// [`open()`], with its refusal answered, counted and audited. `None`: the connection was refused.
pub(super) async fn open_or_refuse(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<ListenerCtx>,
    snap: &Snapshot,
) -> Option<Opened> {
    match open(tcp, peer, ctx, snap).await {
        Ok(o) => Some(o),
        Err(refused) => {
            refused.answer(ctx, peer).await;
            None
        }
    }
}

/// An admitted client with its broker connection, ready to relay.
pub(super) struct Opened {
    pub(super) client: ClientStream,
    pub(super) broker: crate::transport::broker_stream::BrokerStream,
    /// Bytes the client sent after its CONNECT.
    pub(super) rest: BytesMut,
    pub(super) admitted: Admitted,
    /// The CONNECT to send upstream (with the PROXY header first, when configured).
    pub(super) upstream_connect: Vec<u8>,
    pub(super) version: ProtocolVersion,
    pub(super) alias_max: u16,
    pub(super) keep_alive: u16,
    pub(super) server_keep_alive: Option<u16>,
    pub(super) max_packet: u32,
}

/// The opening of a connection: TLS handshake, first frame, CONNECT checks and admission, the
/// broker dialled; or why not, with what is needed to answer the client.
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<ListenerCtx>,
    snap: &Snapshot,
) -> Result<Opened, Refused> {
    let gw = &ctx.gateway;
    let limits = &snap.config.limits;
    let deadline = Instant::now() + limits.connect_timeout;
    let max_packet =
        u32::try_from(limits.max_packet_size.0).unwrap_or(mqtt_inspect::MAX_PACKET_SIZE);
    let _ = tcp.set_nodelay(true);

    let max_packet_bytes = usize::try_from(max_packet).unwrap_or(usize::MAX);
    let (mut client, cert) = handshake(tcp, peer, ctx, deadline, max_packet_bytes).await?;

    let (frame, rest) = match read_first_frame(&mut client, deadline, max_packet).await {
        Ok(f) => f,
        Err(ReadError::Timeout) => {
            return Err(Refused::with(
                client,
                Why::Early {
                    outcome: ConnectOutcome::Timeout,
                    event: "timeout",
                    reason: "connect_timeout",
                },
            ));
        }
        Err(ReadError::Closed) => return Err(Refused::with(client, Why::Closed)),
        Err(ReadError::Malformed(error)) => {
            return Err(Refused::with(client, Why::Malformed { level: None, error }));
        }
    };
    let connect = match decode_connect(&frame) {
        Ok(c) => c,
        Err(error) => {
            let level = connect_level(&frame);
            return Err(Refused::with(client, Why::Malformed { level, error }));
        }
    };
    let version = connect.version;
    let cert = match cert {
        Ok(cert) => cert,
        Err(e) => {
            tracing::info!(%peer, error = %e, "client certificate refused: its subject cannot be read");
            let refusal = Refusal::unreadable_certificate();
            return Err(Refused::connect(
                client,
                version,
                connect.client_id,
                None,
                refusal,
            ));
        }
    };
    // The certificate's names, for the audit line of any refusal below (admit takes the chain).
    let cert_identity = cert.as_ref().map(|c| c.identity.clone());
    let fingerprint = cert_identity
        .as_ref()
        .map(|c| c.fingerprint_sha256_hex.as_str());
    // Every refusal from here on answers in the client's version, with its id and certificate.
    let refused = |client: ClientStream, refusal: Refusal| {
        Refused::connect(
            client,
            version,
            connect.client_id,
            cert_identity.clone(),
            refusal,
        )
    };
    let now = std::time::Instant::now();
    // Account bans guard a password: they follow the account a password will be checked for,
    // not the username a certificate-authenticated client also sends.
    let account =
        password_account(&snap.config.auth, cert.as_ref(), connect.username).map(str::to_owned);
    let attempt = crate::auth::ban::Attempt {
        ip: peer.ip(),
        user: account.as_deref(),
        fingerprint,
    };
    let mut banned = gw.bans.identity_banned(attempt, now);
    // An account ban spares the addresses its owner logged in from, on any instance of a cluster.
    if banned == Some(crate::auth::ban::Banned::User)
        && let Some(user) = account.as_deref()
        && gw
            .cluster
            .known_good(&crate::auth::ban::known_good_key(peer.ip(), user))
            .await
    {
        gw.bans.success(peer.ip(), user, now);
        banned = gw.bans.identity_banned(attempt, now);
    }
    if banned.is_some() {
        let refusal = Refusal::other(
            ReasonCode::Banned,
            ConnectOutcome::Banned,
            Some(AuthFailure::Banned),
        );
        return Err(refused(client, refusal));
    }
    let mut admitted = match admit(&connect, &ctx.name, peer, cert, snap, gw).await {
        Ok(a) => a,
        Err(refusal) => {
            if matches!(
                refusal.auth_reason,
                Some(
                    AuthFailure::BadCredentials
                        | AuthFailure::UnknownUser
                        | AuthFailure::TokenExpired
                        | AuthFailure::TokenSignature
                        | AuthFailure::TokenUnknownKey
                        | AuthFailure::TokenClaims
                )
            ) {
                // Counted here first (enforced whatever Redis says), then in the shared state
                // of `[cluster]`, if it answers within `cluster::TIMEOUT`.
                let local = gw.bans.failure(attempt, now);
                let shared = if gw.cluster.is_up() {
                    let keys = crate::cluster::failure_keys(attempt);
                    gw.cluster.failure(&gw.bans, &keys, local, now).await
                } else {
                    None
                };
                if let Some(what) = local.or(shared) {
                    tracing::warn!(%peer, ?what, "banned after repeated authentication failures");
                }
            }
            return Err(refused(client, refusal));
        }
    };
    if let Some(user) = &admitted.identity.password_user
        && gw.bans.success(peer.ip(), user, now)
    {
        gw.cluster
            .share_success(&crate::auth::ban::known_good_key(peer.ip(), user));
    }

    let upstream_cfg = &snap.config.upstream;
    // The rendezvous key: the client id, or for an empty one (the broker assigns it) the
    // address, so that such clients spread too.
    let peer_key;
    let key = if connect.client_id.is_empty() {
        peer_key = peer.to_string();
        peer_key.as_bytes()
    } else {
        connect.client_id.as_bytes()
    };
    let broker =
        match upstream::dial_any(upstream_cfg.nodes(), key, upstream_cfg.connect_timeout).await {
            Ok((s, _node)) => s,
            Err(_) => {
                let refusal = Refusal::other(
                    ReasonCode::ServerUnavailable,
                    ConnectOutcome::UpstreamFailed,
                    None,
                )
                .by(admitted.identity.principal.as_deref());
                return Err(refused(client, refusal));
            }
        };
    gw.upstream_ok();
    // Admitted under `snap`; after a reload since then (a new CRL, password file, policy or
    // `[auth]`) the client is judged again, whole, before the broker hears of it, and refused with
    // a CONNACK while one is still due.
    if gw.generation() != snap.generation {
        let now = gw.current();
        let again = match admitted.identity.recheck(&now) {
            Some(why) => Err(Refusal::revoked(why).by(admitted.identity.principal.as_deref())),
            None => {
                let cert = admitted.identity.cert.clone();
                admit(&connect, &ctx.name, peer, cert, &now, gw).await
            }
        };
        match again {
            Ok(a) => admitted = a,
            Err(refusal) => {
                return Err(refused(client, refusal));
            }
        }
    }
    // With `upstream.proxy_protocol`, a PROXY v2 header goes first, in the same write.
    let proxy_header = if upstream_cfg.proxy_protocol {
        let identity = &admitted.identity;
        crate::transport::proxy_protocol::encode_upstream(
            &crate::transport::proxy_protocol::UpstreamInfo {
                client: peer,
                listener: ctx.local,
                tls_version: client.tls_version(),
                cert_cn: identity
                    .cert
                    .as_ref()
                    .and_then(|c| c.identity.cn.as_deref()),
                principal: identity.principal.as_deref(),
            },
        )
        .ok()
    } else {
        None
    };
    let upstream_connect = match upstream::upstream_connect(
        &connect,
        upstream_cfg.credentials,
        admitted.identity.principal.as_deref(),
        max_packet,
        u32::try_from(limits.max_will_delay.as_secs()).unwrap_or(u32::MAX),
    ) {
        Ok(connect_bytes) => {
            let mut bytes = proxy_header.unwrap_or_default();
            match connect_bytes {
                Some(c) => bytes.extend_from_slice(&c),
                None => bytes.extend_from_slice(&frame),
            }
            bytes
        }
        Err(_) => {
            let error = DecodeError::ProtocolViolation("CONNECT cannot be re-encoded");
            let level = Some(version.level());
            return Err(Refused::with(client, Why::Malformed { level, error }));
        }
    };
    // Capped where it is used (`AliasState::resolve`), as in the upstream CONNECT.
    let alias_max = connect.properties.topic_alias_maximum();
    // Keep-alive capped by `max_keepalive` (0, "never", is capped too): an idle socket is held at
    // most 1.5 × that. MQTT 5 clients are told through CONNACK's Server Keep Alive.
    let max_ka = u16::try_from(limits.max_keepalive.as_secs())
        .unwrap_or(u16::MAX)
        .max(1);
    let keep_alive = if connect.keep_alive == 0 || connect.keep_alive > max_ka {
        max_ka
    } else {
        connect.keep_alive
    };
    let server_keep_alive =
        (version.is_v5() && keep_alive != connect.keep_alive).then_some(keep_alive);
    outcome(&ctx.name, ConnectOutcome::Accepted);
    tracing::debug!(%peer, client_id = %admitted.identity.client_id, principal = ?admitted.identity.principal, "connected");

    Ok(Opened {
        client,
        broker,
        rest,
        admitted,
        upstream_connect,
        version,
        alias_max,
        keep_alive,
        server_keep_alive,
        max_packet,
    })
}
