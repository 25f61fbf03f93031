//! One client connection from accept to close: the TLS handshake and the CONNECT under one
//! deadline, authentication and the connect policy, the upstream connection, then the inspected
//! relay in both directions until one side ends it. Exactly one outcome is counted for the connect
//! phase and exactly one [`CloseReason`] ends the session.

pub mod connect;
mod finish;
mod handshake;
pub mod inspect;
mod last_allowed;
mod refuse;
pub mod relay;
pub mod state;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use metrics::{counter, gauge, histogram};
use mqtt_inspect::{
    Connack, ConnackCode, DecodeError, Direction, Disconnect, PacketType, ProtocolVersion,
    ReasonCode, decode_connect,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout, timeout_at};

use self::connect::{
    Admitted, CertInfo, ReadError, Refusal, SessionIdentity, admit, password_account,
    read_first_frame,
};
use self::finish::watch_revocation;
use self::handshake::handshake;
pub(crate) use self::handshake::refused;
use self::inspect::{BrokerInspector, ClientInspector, Denial, Inspected, Verdict};
use self::refuse::{connect_level, refuse, refuse_malformed};
use self::relay::{Out, PumpSettings, pump, send};
use self::state::SessionShared;
use crate::audit::AuditEvent;
use crate::close::CloseReason;
use crate::identity::ClientIdentity;
use crate::metrics::{self as m, AclAction, AuthFailure, ConnectOutcome, UpstreamFailure};
use crate::policy::ClientPolicy;
use crate::shared::{Gateway, Snapshot};
use crate::tls::failure::{HandshakeFailure, classify};
use crate::transport::io::{ClientStream, Prefixed};

/// Time allowed for one write to a peer. A peer that takes longer is cut off: at the default
/// `max_packet_size` of 256 KiB that is a floor of about 9 KiB/s.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the last words (CONNACK refusal, DISCONNECT, TLS close) before closing.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection knows of its listener.
#[derive(Debug)]
pub struct ListenerCtx {
    /// The listener's name (metrics and audit label).
    pub name: Arc<str>,
    /// The TLS configuration, swapped whole on reload; `None` for a plain listener.
    pub tls: Option<Arc<ArcSwap<crate::tls::ServerTls>>>,
    /// Shared gateway state.
    pub gateway: Arc<Gateway>,
    /// `proxy_protocol_from` when the listener requires a PROXY header (set at start).
    pub proxy_from: Option<Vec<ipnet::IpNet>>,
    /// The bound address (the destination in an upstream PROXY header).
    pub local: SocketAddr,
    /// For a `protocol = "websocket"` listener: what its upgrade accepts (set at start).
    pub websocket: Option<crate::transport::websocket::WsSettings>,
}

/// Keeps `connections_active` right however the task ends.
struct ActiveGuard(Arc<str>);

impl ActiveGuard {
    fn new(listener: &Arc<str>) -> Self {
        gauge!(m::CONNECTIONS_ACTIVE, "listener" => listener.to_string()).increment(1.0);
        Self(Arc::clone(listener))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        gauge!(m::CONNECTIONS_ACTIVE, "listener" => self.0.to_string()).decrement(1.0);
    }
}

fn outcome(listener: &str, outcome: ConnectOutcome) {
    counter!(m::CONNECTIONS_TOTAL, "listener" => listener.to_owned(), "outcome" => outcome.as_str())
        .increment(1);
}

/// Serves one accepted TCP connection until it closes.
///
/// Two stages: opening (TLS handshake, CONNECT, admission, dialling the broker) in a boxed future
/// that is freed when it ends, then the relay. The session's own future, which lives as long as
/// the connection, so holds only the relay's state (BENCHMARKS.md: memory per idle connection).
pub async fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    permit: crate::limits::ConnPermit,
) {
    crate::limits::holding(permit, serve(tcp, peer, ctx)).await;
}

/// [`run`] with the connection's slots held (see [`crate::limits::release_slot`]).
async fn serve(tcp: TcpStream, peer: SocketAddr, ctx: Arc<ListenerCtx>) {
    // Subscribed before the snapshot is read: a reload published at any later moment (during
    // the handshake, while the CONNECT is judged, before the relay starts) is seen by this session.
    let generations = ctx.gateway.watch_generation();
    let snap = ctx.gateway.current();
    let _active = ActiveGuard::new(&ctx.name);
    let Some(o) = Box::pin(open(tcp, peer, &ctx, &snap)).await else {
        return;
    };
    let session = Session {
        ctx: &ctx,
        snap: &snap,
        version: o.version,
        alias_max: o.alias_max,
        keep_alive: o.keep_alive,
        server_keep_alive: o.server_keep_alive,
        max_packet: o.max_packet,
        denials: std::sync::Mutex::default(),
    };
    session
        .relay(
            o.client,
            o.broker,
            o.rest,
            o.admitted,
            (o.upstream_connect, generations),
        )
        .await;
}

/// An admitted client with its broker connection, ready to relay.
struct Opened {
    client: ClientStream,
    broker: crate::transport::broker_stream::BrokerStream,
    /// Bytes the client sent after its CONNECT.
    rest: BytesMut,
    admitted: Admitted,
    /// The CONNECT to send upstream (with the PROXY header first, when configured).
    upstream_connect: Vec<u8>,
    version: ProtocolVersion,
    alias_max: u16,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    max_packet: u32,
}

/// The opening of a connection: TLS handshake, first frame, CONNECT checks and admission, the
/// broker dialled. `None`: the connection was refused (and counted, audited, answered).
async fn open(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<ListenerCtx>,
    snap: &Snapshot,
) -> Option<Opened> {
    let gw = &ctx.gateway;
    let limits = &snap.config.limits;
    let deadline = Instant::now() + limits.connect_timeout;
    let max_packet =
        u32::try_from(limits.max_packet_size.0).unwrap_or(mqtt_inspect::MAX_PACKET_SIZE);
    let _ = tcp.set_nodelay(true);

    let max_packet_bytes = usize::try_from(max_packet).unwrap_or(usize::MAX);
    let (mut client, cert) = match handshake(tcp, peer, ctx, deadline, max_packet_bytes).await {
        Some(c) => c,
        None => return None,
    };

    let (frame, rest) = match read_first_frame(&mut client, deadline, max_packet).await {
        Ok(f) => f,
        Err(ReadError::Timeout) => {
            refused(
                ctx,
                peer,
                ConnectOutcome::Timeout,
                "timeout",
                "connect_timeout",
            );
            return None;
        }
        Err(ReadError::Closed) => {
            outcome(&ctx.name, ConnectOutcome::Timeout);
            return None;
        }
        Err(ReadError::Malformed(e)) => {
            refuse_malformed(&mut client, ctx, peer, None, e).await;
            return None;
        }
    };
    let connect = match decode_connect(&frame) {
        Ok(c) => c,
        Err(e) => {
            refuse_malformed(&mut client, ctx, peer, connect_level(&frame), e).await;
            return None;
        }
    };
    let version = connect.version;
    let cert = match cert {
        Ok(cert) => cert,
        Err(e) => {
            tracing::info!(%peer, error = %e, "client certificate refused: its subject cannot be read");
            let refusal = Refusal::unreadable_certificate();
            refuse(
                &mut client,
                ctx,
                peer,
                version,
                connect.client_id,
                None,
                &refusal,
            )
            .await;
            return None;
        }
    };
    // The certificate's names, for the audit line of any refusal below (admit takes the chain).
    let cert_identity = cert.as_ref().map(|c| c.identity.clone());
    let fingerprint = cert_identity
        .as_ref()
        .map(|c| c.fingerprint_sha256_hex.as_str());
    let now = std::time::Instant::now();
    // Account bans guard a password: they follow the account a password will be checked for,
    // not the username a certificate-authenticated client also sends.
    let account =
        password_account(&snap.config.auth, cert.as_ref(), connect.username).map(str::to_owned);
    if gw
        .bans
        .identity_banned(peer.ip(), account.as_deref(), fingerprint, now)
        .is_some()
    {
        let refusal = Refusal::other(
            ReasonCode::Banned,
            ConnectOutcome::Banned,
            Some(AuthFailure::Banned),
        );
        refuse(
            &mut client,
            ctx,
            peer,
            version,
            connect.client_id,
            cert_identity.as_ref(),
            &refusal,
        )
        .await;
        return None;
    }
    let mut admitted = match admit(&connect, &ctx.name, peer, cert, snap, gw).await {
        Ok(a) => a,
        Err(refusal) => {
            if matches!(
                refusal.auth_reason,
                Some(AuthFailure::BadCredentials | AuthFailure::UnknownUser)
            ) && let Some(what) =
                gw.bans
                    .failure(peer.ip(), account.as_deref(), fingerprint, now)
            {
                tracing::warn!(%peer, ?what, "banned after repeated authentication failures");
            }
            refuse(
                &mut client,
                ctx,
                peer,
                version,
                connect.client_id,
                cert_identity.as_ref(),
                &refusal,
            )
            .await;
            return None;
        }
    };
    if let Some(user) = &admitted.identity.password_user {
        gw.bans.success(peer.ip(), user, now);
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
                refuse(
                    &mut client,
                    ctx,
                    peer,
                    version,
                    connect.client_id,
                    cert_identity.as_ref(),
                    &refusal,
                )
                .await;
                return None;
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
                refuse(
                    &mut client,
                    ctx,
                    peer,
                    version,
                    connect.client_id,
                    cert_identity.as_ref(),
                    &refusal,
                )
                .await;
                return None;
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
            refuse_malformed(
                &mut client,
                ctx,
                peer,
                Some(version.level()),
                DecodeError::ProtocolViolation("CONNECT cannot be re-encoded"),
            )
            .await;
            return None;
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

    Some(Opened {
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

/// The relay phase of an admitted client.
struct Session<'a> {
    ctx: &'a ListenerCtx,
    snap: &'a Snapshot,
    version: ProtocolVersion,
    alias_max: u16,
    keep_alive: u16,
    server_keep_alive: Option<u16>,
    max_packet: u32,
    /// The budget of this session's ACL denial lines (both directions).
    denials: std::sync::Mutex<crate::audit::DenialBudget>,
}

impl Session<'_> {
    async fn relay(
        self,
        client: ClientStream,
        broker: crate::transport::broker_stream::BrokerStream,
        rest: BytesMut,
        admitted: Admitted,
        (connect, generations): (Vec<u8>, tokio::sync::watch::Receiver<u64>),
    ) {
        let gw = &*self.ctx.gateway;
        let identity = &admitted.identity;
        let policy = admitted.policy;
        let (mut client_rd, client_wr) = crate::transport::io::split(client);
        let (mut broker_rd, broker_wr) = broker.into_split();
        let client_out = Mutex::new(Out::new(client_wr));
        let broker_out = Mutex::new(Out::new(broker_wr));
        if send(&broker_out, &connect, WRITE_TIMEOUT).await.is_err() {
            counter!(m::UPSTREAM_ERRORS_TOTAL, "reason" => UpstreamFailure::Closed.as_str())
                .increment(1);
            return;
        }
        let shared = SessionShared::default();
        let policy = Arc::new(policy);
        let on_deny = self.snap.config.policy.on_publish_deny;
        let mut c_insp = ClientInspector::new(
            self.version,
            on_deny,
            self.snap.config.limits.max_subscriptions_per_client.get(),
        );
        let mut b_insp = BrokerInspector::new(
            self.version,
            self.alias_max,
            self.keep_alive,
            self.server_keep_alive,
        );
        let mut throttle =
            crate::limits::ClientThrottle::new(&self.snap.config.limits, std::time::Instant::now());
        let ack_credit = std::sync::atomic::AtomicU32::new(0);
        let mut c_pol = (self.snap.generation, Arc::clone(&policy));
        let mut b_pol = (self.snap.generation, policy);
        let idle_limit =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        // A DISCONNECT relayed in either direction ends the conversation: the client sent its
        // own, or has the broker's; the gateway then closes without adding one ([MQTT-3.14.4-1]).
        let said_goodbye = AtomicBool::new(false);

        let mut client_reader = Prefixed::new(rest, &mut client_rd);
        let c2b = pump(
            PumpSettings {
                direction: Direction::ClientToServer,
                max_packet_size: self.max_packet,
                idle_limit,
                write_limit: WRITE_TIMEOUT,
                counters: &gw.c2b,
                throttle: Some(&mut throttle),
                ack_credit: &ack_credit,
                broker_seen: None,
            },
            &mut client_reader,
            &broker_out,
            &client_out,
            |frame, denials| {
                refresh(gw, identity, &mut c_pol);
                note_goodbye(
                    c_insp.inspect(frame, c_pol.0, &c_pol.1, &shared, denials),
                    &said_goodbye,
                )
            },
            |denials| self.record_denials(identity, denials),
        );
        let b2c = pump(
            PumpSettings {
                direction: Direction::ServerToClient,
                max_packet_size: self.max_packet,
                idle_limit: None,
                write_limit: WRITE_TIMEOUT,
                counters: &gw.b2c,
                throttle: None,
                ack_credit: &ack_credit,
                broker_seen: Some(&gw.broker_seen),
            },
            &mut broker_rd,
            &client_out,
            &broker_out,
            |frame, denials| {
                refresh(gw, identity, &mut b_pol);
                note_goodbye(
                    b_insp.inspect(frame, b_pol.0, &b_pol.1, &shared, denials),
                    &said_goodbye,
                )
            },
            |denials| self.record_denials(identity, denials),
        );
        let reason = tokio::select! {
            r = c2b => r,
            r = b2c => r,
            r = watch_revocation(gw, identity, generations) => r,
            () = gw.shutdown.cancelled() => CloseReason::Shutdown,
        };
        let said_goodbye = said_goodbye.load(Ordering::Relaxed);
        let connack_relayed = shared.connack_relayed();
        self.finish(
            identity,
            &reason,
            (said_goodbye, connack_relayed),
            client_out,
            broker_out,
        )
        .await;
    }

    /// An audit event about this session, with its listener, peer, principal and client id.
    fn event<'a>(
        &'a self,
        identity: &'a SessionIdentity,
        event: &'static str,
        reason: &'a str,
    ) -> AuditEvent<'a> {
        AuditEvent {
            event,
            listener: Some(&self.ctx.name),
            peer: Some(identity.peer),
            principal: identity.principal.as_deref(),
            client_id: Some(&identity.client_id),
            reason,
            ..AuditEvent::default()
        }
    }

    /// The base of this session's `acl_denied_summary` line.
    fn summary_event<'a>(&'a self, identity: &'a SessionIdentity) -> AuditEvent<'a> {
        AuditEvent {
            cert_fingerprint: identity.fingerprint(),
            cert_serial: identity.serial(),
            ..self.event(identity, "acl_denied_summary", "budget")
        }
    }

    /// Writes the summary of the denials not written as lines, if any (at the session's end).
    fn flush_denials(&self, identity: &SessionIdentity) {
        let due = self
            .denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .finish();
        if let Some(summary) = due {
            summary.record(&self.ctx.gateway.audit, self.summary_event(identity));
        }
    }

    fn record_denials(&self, identity: &SessionIdentity, denials: &mut Vec<Denial>) {
        let gw = &self.ctx.gateway;
        for d in denials.drain(..) {
            if d.quota {
                // A filter over `max_subscriptions_per_client`: not a policy decision.
                gw.audit.record(&AuditEvent {
                    action: Some(d.action.as_str()),
                    topic: Some(&d.topic),
                    cert_fingerprint: identity.fingerprint(),
                    cert_serial: identity.serial(),
                    ..self.event(identity, "quota_exceeded", "max_subscriptions_per_client")
                });
                continue;
            }
            counter!(m::ACL_DENIED_TOTAL, "action" => d.action.as_str()).increment(1);
            m::deny_hit(d.rule.as_ref());
            // Every denial is counted; its line only within the session's budget.
            let (due, write) = self
                .denials
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .denial(
                    d.action.as_str(),
                    std::time::Instant::now(),
                    std::time::SystemTime::now(),
                );
            if let Some(summary) = due {
                summary.record(&gw.audit, self.summary_event(identity));
            }
            if !write {
                continue;
            }
            gw.audit.record(&AuditEvent {
                rule: d.rule.as_ref().map(ToString::to_string),
                action: Some(d.action.as_str()),
                topic: Some(&d.topic),
                cert_fingerprint: identity.fingerprint(),
                cert_serial: identity.serial(),
                ..self.event(identity, "acl_denied", d.action.as_str())
            });
        }
    }
}

/// Notes a DISCONNECT forwarded as it came (see `said_goodbye` in [`Session::relay`]).
fn note_goodbye(inspected: Inspected, said_goodbye: &AtomicBool) -> Inspected {
    if inspected.packet_type == Some(PacketType::Disconnect)
        && inspected.verdict == Verdict::Forward
    {
        said_goodbye.store(true, Ordering::Relaxed);
    }
    inspected
}

/// Re-resolves the client's policy when a new generation was published (checked per packet; a
/// lock-free read), so that decisions use the new policy from the next packet on.
fn refresh(gw: &Gateway, identity: &SessionIdentity, current: &mut (u64, Arc<ClientPolicy>)) {
    let generation = gw.generation();
    if generation != current.0 {
        let snap = gw.current();
        *current = (
            snap.generation,
            Arc::new(snap.policy.resolve(&identity.facts())),
        );
    }
}
