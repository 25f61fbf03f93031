//! One client connection from accept to close: the TLS handshake and the CONNECT under one
//! deadline, authentication and the connect policy, the upstream connection, then the inspected
//! relay in both directions until one side ends it. Exactly one outcome is counted for the connect
//! phase and exactly one [`CloseReason`] ends the session.

pub mod connect;
pub mod credential;
mod finish;
mod flow;
mod handshake;
pub mod inspect;
mod last_allowed;
mod open;
mod refuse;
pub mod relay;
pub mod state;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
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
use tokio::time::{Instant, timeout, timeout_at};

use self::connect::{
    Admitted, CertInfo, ReadError, Refusal, SessionIdentity, admit, password_account,
    read_first_frame,
};
use self::finish::Watch;
use self::handshake::handshake;
use self::inspect::{BrokerInspector, ClientInspector, Denial, Inspect, Inspected, Under, Verdict};
pub(crate) use self::refuse::Why;
use self::refuse::connect_level;
use self::relay::{FlowSettings, Judge, Out, Relay, send};
use self::state::SessionShared;
use crate::audit::AuditEvent;
use crate::close::CloseReason;
use crate::identity::ClientIdentity;
use crate::metrics::{
    self as m, AclAction, AuthFailure, ConnectOutcome, ReauthResult, UpstreamFailure,
};
use crate::policy::ClientPolicy;
use crate::shared::{Gateway, Snapshot};
use crate::tls::failure::{HandshakeFailure, classify};
use crate::transport::io::ClientStream;

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
/// Not an `async fn` itself, for the same reason as [`crate::limits::holding`]: the task's future
/// is the scope around `serve`'s, with nothing beside it.
pub fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<ListenerCtx>,
    permit: crate::limits::ConnPermit,
) -> impl Future<Output = ()> {
    // A reload published at any later moment (during the handshake, while the CONNECT is judged,
    // before the relay starts) is seen by this session: its watch compares generations once the
    // session is in the registry, where every later reload reaches it.
    let snap = ctx.gateway.current();
    let active = ActiveGuard::new(&ctx.name);
    // The opening owns what it needs (the socket above all) and is freed when it ends: the
    // session's future does not keep room for its arguments while the relay runs.
    let opening = {
        let (ctx, snap) = (Arc::clone(&ctx), Arc::clone(&snap));
        Box::pin(async move { open::open_or_refuse(tcp, peer, &ctx, &snap).await })
    };
    crate::limits::holding(permit, serve(opening, ctx, snap, active))
}

/// [`run`] with the connection's slots held (see [`crate::limits::release_slot`]).
async fn serve(
    opening: std::pin::Pin<Box<impl Future<Output = Option<open::Opened>>>>,
    ctx: Arc<ListenerCtx>,
    snap: Arc<Snapshot>,
    _active: ActiveGuard,
) {
    let Some(o) = opening.await else {
        return;
    };
    relay_opened(&ctx, &snap, o).await;
}

/// The relay of an opened connection. Not an `async fn`: `o` is taken apart here, before the
/// relay's future exists, so the session's future does not keep room for it while the relay runs
/// (568 bytes per connection, for its whole life).
fn relay_opened<'a>(
    ctx: &'a ListenerCtx,
    snap: &'a Snapshot,
    o: open::Opened,
) -> impl Future<Output = ()> + 'a {
    let session = Session {
        ctx,
        snap,
        version: o.version,
        alias_max: o.alias_max,
        keep_alive: o.keep_alive,
        server_keep_alive: o.server_keep_alive,
        max_packet: o.max_packet,
        denials: std::sync::Mutex::default(),
        reauth_lines: std::sync::Mutex::default(),
    };
    // The identity goes to the heap here, shared with the admin API's table of live sessions:
    // as an argument of `relay` it would keep its room in the session's future for good.
    let Admitted {
        mut identity,
        policy,
    } = o.admitted;
    // The TLS connection holds the client's chain for the session's life: re-checks read it
    // there, and this copy goes (BENCHMARKS.md: memory per idle connection).
    if let Some(c) = &mut identity.cert {
        c.chain = Vec::new();
    }
    session.relay(
        o.client,
        o.broker,
        o.rest,
        (Arc::new(identity), policy),
        o.upstream_connect,
    )
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
    /// The budget of this session's `reauthenticated` lines.
    reauth_lines: std::sync::Mutex<LineBudget>,
}

/// At most one audit line per [`LineBudget::EVERY`] for an event a client can repeat at will (a
/// re-authentication): the next line says how many were skipped.
#[derive(Debug, Default)]
struct LineBudget {
    last: Option<std::time::Instant>,
    skipped: u32,
}

impl LineBudget {
    const EVERY: Duration = Duration::from_secs(60);

    /// `Some(skipped)` when a line is due at `now`.
    fn due(&mut self, now: std::time::Instant) -> Option<u32> {
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < Self::EVERY)
        {
            self.skipped = self.skipped.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

impl<'s> Session<'s> {
    /// Relays until one side ends the session, then closes both. Not an `async fn`: the relay is
    /// built here and the arguments are used in place, where an `async fn` keeps a second copy of
    /// them (of `self` above all) in the session's future for the connection's whole life.
    #[allow(clippy::manual_async_fn)] // deliberate: see above
    fn relay(
        self,
        client: ClientStream,
        broker: crate::transport::broker_stream::BrokerStream,
        rest: BytesMut,
        (identity, policy): (Arc<SessionIdentity>, ClientPolicy),
        connect: Vec<u8>,
    ) -> impl Future<Output = ()> + 's {
        let ctx: &'s ListenerCtx = self.ctx;
        let gw: &'s Gateway = &ctx.gateway;
        let idle_limit =
            (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500));
        let up = FlowSettings {
            direction: Direction::ClientToServer,
            max_packet_size: self.max_packet,
            idle_limit,
            write_limit: WRITE_TIMEOUT,
            counters: &gw.c2b,
            broker_seen: None,
        };
        let down = FlowSettings {
            direction: Direction::ServerToClient,
            idle_limit: None,
            counters: &gw.b2c,
            broker_seen: Some(&gw.broker_seen),
            ..up
        };
        let throttle =
            crate::limits::ClientThrottle::new(&self.snap.config.limits, std::time::Instant::now());
        let mut relay = Relay::new((client, broker), rest, (up, down), throttle);
        let policy = Arc::new(policy);
        async move {
            // Boxed, like the goodbye below: only the relay's state stays for the session's life.
            if Box::pin(send(relay.broker_mut(), &connect, WRITE_TIMEOUT))
                .await
                .is_err()
            {
                counter!(m::UPSTREAM_ERRORS_TOTAL, "reason" => UpstreamFailure::Closed.as_str())
                    .increment(1);
                return;
            }
            // In the admin API's table while the relay runs (the guard takes it out).
            let registered = gw.sessions.register(
                Arc::clone(&identity),
                self.version.level(),
                connect::unix_now(),
            );
            let identity = &*identity;
            let live = &*registered.entry;
            // Its CONNECT, as relayed; its bytes are not kept for the session's life.
            live.from_client(connect.len());
            drop(connect);
            self.session_line(identity, live, None);
            let on_deny = self.snap.config.policy.on_publish_deny;
            // A client that connected with a token as Authentication Data: its method, for the
            // CONNACK and its re-authentications.
            let auth_method = identity
                .token
                .as_ref()
                .filter(|t| t.via_auth_method)
                .and_then(|_| self.snap.config.auth.token.as_ref())
                .map(|t| t.auth_method.as_str());
            let mut judge = SessionJudge {
                session: &self,
                identity,
                live,
                auth_method,
                shared: SessionShared::default(),
                said_goodbye: false,
                c_insp: ClientInspector::new(
                    self.version,
                    on_deny,
                    self.snap.config.limits.max_subscriptions_per_client.get(),
                    auth_method,
                ),
                b_insp: BrokerInspector::new(
                    self.version,
                    self.alias_max,
                    self.keep_alive,
                    self.server_keep_alive,
                    auth_method,
                ),
                c_pol: (self.snap.generation, Arc::clone(&policy)),
                b_pol: (self.snap.generation, policy),
            };
            // The watch, in the session's entry of the registry: a reload, an OCSP revocation,
            // a kick or the shutdown wake the task; the credential's end is the relay's alarm.
            let mut watch = Watch::new(gw, identity, live, self.snap.generation);
            let reason = std::future::poll_fn(|cx| {
                loop {
                    if let Poll::Ready(reason) = watch.poll(cx, relay.client().peer_chain()) {
                        return Poll::Ready(reason);
                    }
                    relay.set_alarm(watch.alarm());
                    match relay.poll_relay(cx, &mut judge) {
                        // Early on the wall clock: set again.
                        Poll::Ready(CloseReason::CredentialExpired) if !watch.expired() => {}
                        other => return other,
                    }
                }
            })
            .await;
            let said_goodbye = judge.said_goodbye;
            let connack_relayed = judge.shared.connack_relayed();
            let (client_out, broker_out) = relay.into_streams();
            // Boxed: the goodbye's future would otherwise keep its room in the session's future
            // for the connection's whole life.
            Box::pin(self.finish(
                identity,
                &reason,
                (said_goodbye, connack_relayed),
                client_out,
                broker_out,
            ))
            .await;
            self.session_line(identity, live, Some(&reason));
        }
    }

    /// With `[log] sessions`: the `session_opened` line (`reason` `None`) or the `session_closed`
    /// line (duration, bytes and packets each way, the close reason).
    fn session_line(
        &self,
        identity: &SessionIdentity,
        live: &crate::api::registry::LiveSession,
        reason: Option<&CloseReason>,
    ) {
        if !self.snap.config.log.sessions {
            return;
        }
        let detail = match reason {
            None => format!("protocol {}", self.version.level()),
            Some(_) => {
                let v = live.view();
                format!(
                    "protocol {}; {} s; in {} bytes {} packets; out {} bytes {} packets",
                    v.protocol,
                    connect::unix_now().saturating_sub(v.connected_since),
                    v.bytes_in,
                    v.packets_in,
                    v.bytes_out,
                    v.packets_out
                )
            }
        };
        self.ctx.gateway.audit.record(&AuditEvent {
            cert_fingerprint: identity.fingerprint(),
            cert_serial: identity.serial(),
            detail: Some(&detail),
            ..self.event(
                identity,
                if reason.is_some() {
                    "session_closed"
                } else {
                    "session_opened"
                },
                reason.map_or("opened", CloseReason::as_str),
            )
        });
    }

    /// An MQTT 5 re-authentication with `token` ([`Verdict::Reauthenticate`]), judged under the key
    /// set in force now: AUTH 0x00 back to the client and the session's end moved to the new
    /// token's, or the session ends (DISCONNECT 0x87, [MQTT-4.12.1-2]). Counted and audited either
    /// way; the broker hears nothing of it.
    fn reauthenticate(
        &self,
        identity: &SessionIdentity,
        token: &[u8],
        auth_method: Option<&str>,
    ) -> Verdict {
        let gw = &self.ctx.gateway;
        let snap = gw.current();
        let judged = connect::judge_reauthentication(
            identity,
            snap.tokens.as_deref(),
            snap.config.auth.token.as_ref(),
            token,
            connect::unix_now(),
        );
        let base = |event, reason| AuditEvent {
            cert_fingerprint: identity.fingerprint(),
            cert_serial: identity.serial(),
            ..self.event(identity, event, reason)
        };
        match (judged, identity.token.as_ref()) {
            (Ok(new), Some(binding)) => {
                let until = new.valid_until;
                binding.replace(new);
                counter!(m::REAUTHENTICATIONS_TOTAL, "result" => ReauthResult::Ok.as_str())
                    .increment(1);
                let write = self
                    .reauth_lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .due(std::time::Instant::now());
                if let Some(skipped) = write {
                    let detail = format!("valid until {until} (unix); {skipped} lines skipped");
                    gw.audit.record(&AuditEvent {
                        detail: Some(&detail),
                        ..base("reauthenticated", "token")
                    });
                }
                let mut props = Vec::new();
                let method =
                    mqtt_inspect::Property::AuthenticationMethod(auth_method.unwrap_or_default());
                if mqtt_inspect::encode_properties(&[method], &mut props).is_err() {
                    return Verdict::Close(CloseReason::ReauthenticationFailed);
                }
                let Ok(properties) =
                    mqtt_inspect::Properties::parse(&props, mqtt_inspect::PropertyContext::Auth)
                else {
                    return Verdict::Close(CloseReason::ReauthenticationFailed);
                };
                let auth = mqtt_inspect::Auth {
                    reason: ReasonCode::Success,
                    properties,
                };
                let mut out = Vec::new();
                if auth.encode(self.version, &mut out).is_err() {
                    return Verdict::Close(CloseReason::ReauthenticationFailed);
                }
                Verdict::Reply(out)
            }
            (judged, _) => {
                let why = judged
                    .err()
                    .unwrap_or(connect::ReauthFailure::OtherPrincipal);
                counter!(m::REAUTHENTICATIONS_TOTAL, "result" => ReauthResult::Failed.as_str())
                    .increment(1);
                tracing::info!(peer = %identity.peer, client_id = %identity.client_id, reason = why.as_str(), "re-authentication refused");
                gw.audit.record(&AuditEvent {
                    detail: Some(why.detail()),
                    ..base("reauthentication_failed", why.as_str())
                });
                Verdict::Close(CloseReason::ReauthenticationFailed)
            }
        }
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

/// What a frame is judged under: `policy` (of its generation), the shared state, `denials`.
fn under<'a>(
    policy: &'a (u64, Arc<ClientPolicy>),
    shared: &'a SessionShared,
    denials: &'a mut Vec<Denial>,
) -> Under<'a> {
    Under {
        generation: policy.0,
        policy: &policy.1,
        shared,
        denials,
    }
}

/// Notes a DISCONNECT forwarded as it came (see `said_goodbye` in [`Session::relay`]).
/// The judge of both directions of one session: its inspectors and policies, held by value in
/// the session's future (one struct, no closure keeping a reference to each).
struct SessionJudge<'a, 's> {
    session: &'a Session<'s>,
    identity: &'a SessionIdentity,
    live: &'a crate::api::registry::LiveSession,
    auth_method: Option<&'a str>,
    shared: SessionShared,
    /// A DISCONNECT relayed in either direction ends the conversation: the client sent its own,
    /// or has the broker's; the gateway then closes without adding one ([MQTT-3.14.4-1]).
    said_goodbye: bool,
    c_insp: ClientInspector,
    b_insp: BrokerInspector,
    c_pol: (u64, Arc<ClientPolicy>),
    b_pol: (u64, Arc<ClientPolicy>),
}

impl Judge for SessionJudge<'_, '_> {
    fn judge(
        &mut self,
        direction: Direction,
        frame: &[u8],
        denials: &mut Vec<Denial>,
    ) -> Inspected {
        let gw = &*self.session.ctx.gateway;
        let inspected = match direction {
            Direction::ClientToServer => {
                self.live.from_client(frame.len());
                refresh(gw, self.identity, &mut self.c_pol);
                let mut inspected = self
                    .c_insp
                    .inspect(frame, &mut under(&self.c_pol, &self.shared, denials));
                if let Verdict::Reauthenticate(token) = &inspected.verdict {
                    inspected.verdict =
                        self.session
                            .reauthenticate(self.identity, token, self.auth_method);
                    // Its credential's end may have moved: the watch sets its alarm again.
                    self.live.signal(crate::api::registry::signal::CREDENTIAL);
                }
                inspected
            }
            Direction::ServerToClient => {
                self.live.from_broker(frame.len());
                refresh(gw, self.identity, &mut self.b_pol);
                self.b_insp
                    .inspect(frame, &mut under(&self.b_pol, &self.shared, denials))
            }
        };
        if inspected.packet_type == Some(PacketType::Disconnect)
            && inspected.verdict == Verdict::Forward
        {
            self.said_goodbye = true;
        }
        inspected
    }

    fn denied(&mut self, denials: &mut Vec<Denial>) {
        self.session.record_denials(self.identity, denials);
    }
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
