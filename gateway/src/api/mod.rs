//! `/api/v1` on the admin listener (`../shared/spec/lifecycle.md`, "Admin API"): JSON, enabled by
//! `[admin] api_tokens_file`, every request authenticated by `Authorization: Bearer NAME:SECRET`
//! ([`tokens`]). No or an unknown token: 401; a `read` token on an `operate` endpoint: 403. Every
//! request is counted in `mqtt_gateway_admin_requests_total{endpoint,result}`; every `operate` call
//! that passed authorization is an `admin_action` audit line naming the token's NAME, the endpoint
//! and the target.
//!
//! The HTTP framing (head and body caps, one request per connection, the connection cap, TLS) is
//! `crate::admin`'s; this module turns one parsed [`Request`] into one [`Response`].

mod bans;
pub mod registry;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use serde_json::{Value, json};

use self::tokens::{Caller, Check, Role};
use crate::audit::AuditEvent;
use crate::labels::label_enum;
use crate::shared::Gateway;

/// `mqtt_gateway_admin_requests_total{endpoint,result}`.
pub const ADMIN_REQUESTS_TOTAL: &str = "mqtt_gateway_admin_requests_total";
/// At most this many sessions per page of `GET /api/v1/sessions` (also the default).
pub const MAX_PAGE: usize = 1000;
/// A kick or a revocation answers once the sessions ended, or after this long.
const CUT_WAIT: Duration = Duration::from_secs(5);

label_enum! {
    /// `admin_requests_total{endpoint}`.
    pub enum Endpoint {
        /// `GET /api/v1/sessions`.
        SessionsList => "sessions_list",
        /// `DELETE /api/v1/sessions/{id}`.
        SessionKick => "session_kick",
        /// `POST /api/v1/reload`.
        Reload => "reload",
        /// `GET /api/v1/policy/explain`.
        PolicyExplain => "policy_explain",
        /// `GET /api/v1/bans`.
        BansList => "bans_list",
        /// `POST /api/v1/bans`.
        BanAdd => "ban_add",
        /// `DELETE /api/v1/bans/{id}`.
        BanRemove => "ban_remove",
        /// `POST /api/v1/certificates/{name}/revoke`.
        CertificateRevoke => "certificate_revoke",
        /// Anything else under `/api/`.
        Unknown => "unknown",
    }
}

label_enum! {
    /// `admin_requests_total{result}`.
    pub enum ApiResult {
        /// 2xx.
        Ok => "ok",
        /// 401.
        Unauthorized => "unauthorized",
        /// 403.
        Forbidden => "forbidden",
        /// 400, 404, 405, 413.
        ClientError => "client_error",
        /// 5xx, and a reload that was rejected (409).
        Failed => "failed",
    }
}

/// Exports every `admin_requests_total` series at 0.
pub fn init_metrics() {
    for e in Endpoint::ALL {
        for r in ApiResult::ALL {
            counter!(ADMIN_REQUESTS_TOTAL, "endpoint" => e.as_str(), "result" => r.as_str())
                .absolute(0);
        }
    }
}

/// One request, as the admin listener parsed it.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without `?`.
    pub query: &'a str,
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
    /// The body (capped by the listener).
    pub body: &'a [u8],
}

/// One JSON answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl Response {
    pub(crate) const fn new(status: u16, body: Value) -> Self {
        Self { status, body }
    }

    pub(crate) fn error(status: u16, message: impl Into<String>) -> Self {
        Self::new(status, json!({ "error": message.into() }))
    }

    fn result(&self) -> ApiResult {
        match self.status {
            200..=299 => ApiResult::Ok,
            401 => ApiResult::Unauthorized,
            403 => ApiResult::Forbidden,
            400..=408 | 410..=499 => ApiResult::ClientError,
            _ => ApiResult::Failed,
        }
    }
}

/// The route of a request: its endpoint, the role it needs, and the target in the path.
fn route<'a>(method: &str, path: &'a str) -> Result<(Endpoint, Role, Option<&'a str>), Response> {
    let rest = path.strip_prefix("/api/v1/").unwrap_or_default();
    let segments: Vec<&str> = rest.split('/').collect();
    let found: &[(&str, Endpoint, Role)] = match segments.as_slice() {
        ["sessions"] => &[("GET", Endpoint::SessionsList, Role::Read)],
        ["sessions", _] => &[("DELETE", Endpoint::SessionKick, Role::Operate)],
        ["reload"] => &[("POST", Endpoint::Reload, Role::Operate)],
        ["policy", "explain"] => &[("GET", Endpoint::PolicyExplain, Role::Read)],
        ["bans"] => &[
            ("GET", Endpoint::BansList, Role::Read),
            ("POST", Endpoint::BanAdd, Role::Operate),
        ],
        ["bans", _] => &[("DELETE", Endpoint::BanRemove, Role::Operate)],
        ["certificates", _, "revoke"] => &[("POST", Endpoint::CertificateRevoke, Role::Operate)],
        _ => return Err(Response::error(404, "no such endpoint")),
    };
    let target = segments.get(1).copied().filter(|t| !t.is_empty());
    match found.iter().find(|(m, ..)| *m == method) {
        Some((_, endpoint, role)) => Ok((*endpoint, *role, target)),
        None => {
            let allowed: Vec<&str> = found.iter().map(|(m, ..)| *m).collect();
            Err(Response::error(405, format!("{} only", allowed.join(", "))))
        }
    }
}

/// Serializes slow token verifications: a flood of wrong secrets costs one core at most.
static VERIFY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Who is calling, or the 401.
async fn authenticate(
    tokens: &Arc<tokens::AdminTokens>,
    authorization: Option<&str>,
) -> Result<Caller, Response> {
    let unauthorized = || {
        Response::error(
            401,
            "a valid `Authorization: Bearer NAME:SECRET` is required",
        )
    };
    let presented = authorization
        .and_then(|h| {
            h.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, t)| t.trim().to_owned())
        .ok_or_else(unauthorized)?;
    match tokens.check(&presented) {
        Check::Cached(c) => Ok(c),
        Check::Unknown => Err(unauthorized()),
        Check::Verify => {
            let Ok(_permit) = VERIFY.acquire().await else {
                return Err(Response::error(503, "busy"));
            };
            let t = Arc::clone(tokens);
            tokio::task::spawn_blocking(move || t.verify(&presented))
                .await
                .ok()
                .flatten()
                .ok_or_else(unauthorized)
        }
    }
}

/// Answers one `/api/` request. `None`: the API is not enabled (the listener answers 404 as for
/// any unknown path).
pub async fn handle(gw: &Gateway, req: &Request<'_>) -> Option<Response> {
    let tokens = gw.current().admin_tokens.clone()?;
    let (endpoint, response) = match route(req.method, req.path) {
        Err(r) => (Endpoint::Unknown, r),
        Ok((endpoint, role, target)) => {
            let r = match authenticate(&tokens, req.authorization).await {
                Err(r) => r,
                Ok(caller) if role == Role::Operate && caller.role != Role::Operate => {
                    Response::error(403, format!("token {:?} may only read", caller.name))
                }
                Ok(caller) => serve(gw, endpoint, target, req, &caller).await,
            };
            (endpoint, r)
        }
    };
    counter!(ADMIN_REQUESTS_TOTAL, "endpoint" => endpoint.as_str(), "result" => response.result().as_str())
        .increment(1);
    Some(response)
}

async fn serve(
    gw: &Gateway,
    endpoint: Endpoint,
    target: Option<&str>,
    req: &Request<'_>,
    caller: &Caller,
) -> Response {
    let target = target.unwrap_or_default();
    match endpoint {
        Endpoint::SessionsList => list_sessions(gw, req.query),
        Endpoint::SessionKick => match target.parse() {
            Ok(id) => kick(gw, id, caller).await,
            Err(_) => Response::error(404, "no such session"),
        },
        Endpoint::BansList => bans::list(gw),
        Endpoint::BanAdd => bans::add(gw, req.body, caller).await,
        Endpoint::BanRemove => bans::remove(gw, target, caller).await,
        Endpoint::CertificateRevoke => revoke(gw, target, caller).await,
        Endpoint::Reload => reload(gw, caller).await,
        Endpoint::PolicyExplain => explain(gw, req.query),
        Endpoint::Unknown => Response::error(404, "no such endpoint"),
    }
}

/// Writes the `admin_action` line of an operate call.
pub(crate) fn audit_action(
    gw: &Gateway,
    caller: &Caller,
    endpoint: Endpoint,
    target: &str,
    outcome: &str,
) {
    tracing::info!(token = %caller.name, endpoint = endpoint.as_str(), target, outcome, "admin action");
    let detail = format!("token {}; target {target}; {outcome}", caller.name);
    gw.audit.record(&AuditEvent {
        event: "admin_action",
        reason: endpoint.as_str(),
        action: Some(endpoint.as_str()),
        detail: Some(&detail),
        ..AuditEvent::default()
    });
}

/// `key=value&...`, percent-decoded (`+` is a space), at most 32 pairs.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, Response> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if out.len() >= 32 {
            return Err(Response::error(400, "too many query parameters"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k)?, percent_decode(v)?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, Response> {
    let bad = || Response::error(400, "bad percent-encoding in the query");
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        match b {
            b'%' => {
                let hex = [it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)?];
                let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
                bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            }
            b'+' => bytes.push(b' '),
            b => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

fn list_sessions(gw: &Gateway, query: &str) -> Response {
    let pairs = match query_pairs(query) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let mut filter = registry::Filter::default();
    let (mut offset, mut limit) = (0usize, MAX_PAGE);
    for (k, v) in pairs {
        match k.as_str() {
            "principal" => filter.principal = Some(v),
            "client_id" => filter.client_id = Some(v),
            "listener" => filter.listener = Some(v),
            "address" => {
                let net = v
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match net {
                    Ok(n) => filter.address = Some(n),
                    Err(_) => return Response::error(400, "address: an IP address or a CIDR"),
                }
            }
            "offset" => match v.parse() {
                Ok(n) => offset = n,
                Err(_) => return Response::error(400, "offset: a number"),
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => return Response::error(400, format!("limit: 1 to {MAX_PAGE}")),
            },
            other => return Response::error(400, format!("unknown parameter {other:?}")),
        }
    }
    let (page, total) = gw.sessions.list(&filter, offset, limit);
    let sessions: Vec<_> = page.iter().map(|s| s.view()).collect();
    Response::new(
        200,
        json!({ "sessions": sessions, "total": total, "offset": offset, "limit": limit }),
    )
}

/// Waits until none of `ids` is live any more, at most [`CUT_WAIT`]; how many ended.
async fn wait_cut(gw: &Gateway, ids: &[u64]) -> usize {
    let deadline = tokio::time::Instant::now() + CUT_WAIT;
    loop {
        let ended = gw.sessions.ended();
        tokio::pin!(ended);
        ended.as_mut().enable();
        let live = ids.iter().filter(|id| gw.sessions.contains(**id)).count();
        if live == 0 || tokio::time::timeout_at(deadline, ended).await.is_err() {
            return ids.len() - live;
        }
    }
}

async fn kick(gw: &Gateway, id: u64, caller: &Caller) -> Response {
    let Some(s) = gw.sessions.get(id) else {
        return Response::error(404, "no such session");
    };
    let target = format!(
        "session {id} (client id {:?}, principal {:?}, peer {})",
        registry::cut(&s.identity.client_id),
        s.identity.principal.as_deref().map(registry::cut),
        s.identity.peer
    );
    let client_id = s.identity.client_id.clone();
    s.kick();
    drop(s);
    // With `[cluster]`: every instance kicks the sessions of that client id (this one's come
    // back through `cluster.kicks()`, already kicked).
    let shared = if gw.cluster.configured() {
        bans::outcome(gw.cluster.publish_kick(&client_id).await)
    } else {
        None
    };
    let cut = wait_cut(gw, &[id]).await;
    let mut done = (if cut == 1 { "closed" } else { "closing" }).to_owned();
    let mut answer = json!({ "id": id, "closed": cut == 1 });
    bans::shared_fields(shared.as_ref(), &mut answer, &mut done);
    audit_action(gw, caller, Endpoint::SessionKick, &target, &done);
    Response::new(200, answer)
}

/// With `[cluster]` (started by the server): kicks this instance's live sessions of every client
/// id a kick event names (`cluster.kicks()`, from any instance). Each is closed with DISCONNECT
/// 0x98 and counted as `kicked`; an `admin_action` line names the client id. Bounded: the event
/// channel holds 64 (a slow consumer loses the oldest, logged), a lookup walks the registry.
pub async fn cluster_kicks(gw: Arc<Gateway>) {
    let mut kicks = gw.cluster.kicks();
    loop {
        let client_id = tokio::select! {
            () = gw.shutdown.cancelled() => return,
            k = kicks.recv() => match k {
                Ok(id) => id,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "cluster: kick events lost (too many at once)");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        let live = gw.sessions.with_client_id(&client_id);
        if live.is_empty() {
            continue;
        }
        for s in &live {
            s.kick();
        }
        let shown = registry::cut(&client_id);
        tracing::info!(client_id = %shown, sessions = live.len(), "cluster kick");
        let detail = format!(
            "cluster kick; target client id {shown:?}; {} sessions kicked",
            live.len()
        );
        gw.audit.record(&AuditEvent {
            event: "admin_action",
            reason: Endpoint::SessionKick.as_str(),
            action: Some(Endpoint::SessionKick.as_str()),
            detail: Some(&detail),
            ..AuditEvent::default()
        });
    }
}

/// Revokes `name` through the `pki_dir` CA (the CRL rewritten), reloads so that the new CRL is in
/// force, kicks the live sessions on that certificate the reload did not cut (a listener that does
/// not enforce this CA's CRL), and answers once they are gone.
async fn revoke(gw: &Gateway, name: &str, caller: &Caller) -> Response {
    let Some(dir) = gw
        .current()
        .config
        .admin
        .as_ref()
        .and_then(|a| a.pki_dir.clone())
    else {
        return Response::error(404, "no [admin] pki_dir is configured");
    };
    let who = name.to_owned();
    let revoked = tokio::task::spawn_blocking(move || {
        crate::pki::Ca::open(&dir).and_then(|ca| ca.revoke(&who))
    })
    .await;
    let entry = match revoked {
        Ok(Ok(e)) => e,
        Ok(Err(crate::pki::PkiError::Usage(m))) => return Response::error(404, m),
        Ok(Err(e)) => return Response::error(500, e.to_string()),
        Err(_) => return Response::error(500, "the revocation task failed"),
    };
    let ids = gw.sessions.with_serial(&entry.serial);
    if let Some(reloader) = gw.reloader.get().and_then(std::sync::Weak::upgrade) {
        let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
    }
    for id in &ids {
        if let Some(s) = gw.sessions.get(*id) {
            s.kick();
        }
    }
    let cut = wait_cut(gw, &ids).await;
    let target = format!("certificate {} (serial {})", entry.name, entry.serial);
    audit_action(
        gw,
        caller,
        Endpoint::CertificateRevoke,
        &target,
        &format!("revoked; {cut} of {} live sessions cut", ids.len()),
    );
    Response::new(
        200,
        json!({
            "name": entry.name,
            "serial": entry.serial,
            "revoked_at": entry.revoked_at,
            "sessions_cut": cut,
        }),
    )
}

async fn reload(gw: &Gateway, caller: &Caller) -> Response {
    let Some(reloader) = gw.reloader.get().and_then(std::sync::Weak::upgrade) else {
        return Response::error(503, "this gateway runs without a reloader");
    };
    let report = tokio::task::spawn_blocking(move || reloader.reload()).await;
    let Ok(report) = report else {
        return Response::error(500, "the reload task failed");
    };
    let applied: Vec<&str> = report.applied.iter().map(|s| s.as_str()).collect();
    let rejected: Vec<Value> = report
        .rejected
        .iter()
        .map(|(s, e)| json!({ "source": s.as_str(), "error": e }))
        .collect();
    let outcome = if rejected.is_empty() {
        "applied"
    } else {
        "rejected"
    };
    audit_action(gw, caller, Endpoint::Reload, "all files", outcome);
    let status = if rejected.is_empty() { 200 } else { 409 };
    Response::new(
        status,
        json!({
            "applied": applied,
            "rejected": rejected,
            "needs_restart": report.needs_restart,
            "generation": gw.generation(),
        }),
    )
}

fn explain(gw: &Gateway, query: &str) -> Response {
    use crate::policy::{Action, ClientFacts};
    let pairs = match query_pairs(query) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let snap = gw.current();
    let mut principal = None;
    let mut client_id = String::new();
    let mut cert_ous = Vec::new();
    let mut listener = snap
        .config
        .listeners
        .first()
        .map(|l| l.name.clone())
        .unwrap_or_default();
    let mut source: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
    let mut anonymous = false;
    let mut groups = Vec::new();
    let mut token = None;
    let mut action = None;
    for (k, v) in pairs {
        match k.as_str() {
            "principal" => principal = Some(v),
            "client_id" => client_id = v,
            "cert_ou" => cert_ous.push(v),
            "listener" => listener = v,
            "source" => match v.parse() {
                Ok(ip) => source = ip,
                Err(_) => return Response::error(400, "source: an IP address"),
            },
            "anonymous" => anonymous = v == "true" || v.is_empty(),
            "group" => groups.push(v),
            "token" => token = Some(v),
            "publish" => action = Some((Action::Publish, v)),
            "subscribe" => action = Some((Action::Subscribe, v)),
            "receive" => action = Some((Action::Receive, v)),
            "connect" => action = Some((Action::Connect, String::new())),
            other => return Response::error(400, format!("unknown parameter {other:?}")),
        }
    }
    let Some((action, mut topic)) = action else {
        return Response::error(
            400,
            "one of publish, subscribe, receive, connect is required",
        );
    };
    if action == Action::Connect {
        topic.clone_from(&client_id);
    }
    if action == Action::Subscribe
        && let Err(e) = mqtt_inspect::TopicFilter::new(&topic)
    {
        return Response::error(400, format!("{topic:?}: {e}"));
    }
    if let Some(t) = token {
        let (Some(rules), Some(keys)) = (snap.config.auth.token.as_ref(), snap.tokens.as_deref())
        else {
            return Response::error(400, "token: the configuration has no [auth.token]");
        };
        match crate::auth::token::verify(
            keys,
            rules,
            t.trim().as_bytes(),
            crate::session::connect::unix_now(),
        ) {
            Ok(v) => {
                principal = Some(v.principal);
                groups = v.groups;
            }
            Err(f) => return Response::error(400, format!("token refused: {}", f.as_str())),
        }
    }
    let facts = ClientFacts {
        principal: principal.as_deref(),
        client_id: &client_id,
        cert_ous: &cert_ous,
        listener: &listener,
        source: source.to_canonical(),
        anonymous,
        groups: &groups,
    };
    let decision = snap.policy.explain(&facts, action, &topic);
    Response::new(
        200,
        json!({
            "allowed": decision.allowed,
            "decision": if decision.allowed { "allow" } else { "deny" },
            "action": action.as_str(),
            "topic": topic,
            "principal": principal,
            "groups": groups,
            "rule": decision.rule.as_ref().map(ToString::to_string),
        }),
    )
}

/// The rustls configuration of `[admin.tls]`.
///
/// # Errors
/// An unreadable or bad certificate or key.
pub fn server_tls(
    t: &crate::config::AdminTlsConfig,
) -> Result<Arc<rustls::ServerConfig>, crate::tls::TlsError> {
    let chain = crate::tls::load_certs(&t.cert)?;
    let key = crate::tls::load_private_key(&t.key)?;
    let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::tls::TlsError::Versions {
            source: Box::new(e),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| crate::tls::TlsError::CertKey {
            cert: t.cert.clone(),
            key: t.key.clone(),
            source: Box::new(e),
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_roles() {
        use Endpoint as E;
        use Role::{Operate, Read};
        type Want = Result<(Endpoint, Role, Option<&'static str>), u16>;
        let table: [(&str, &str, Want); 14] = [
            ("GET", "/api/v1/sessions", Ok((E::SessionsList, Read, None))),
            (
                "DELETE",
                "/api/v1/sessions/7",
                Ok((E::SessionKick, Operate, Some("7"))),
            ),
            ("POST", "/api/v1/reload", Ok((E::Reload, Operate, None))),
            (
                "GET",
                "/api/v1/policy/explain",
                Ok((E::PolicyExplain, Read, Some("explain"))),
            ),
            ("GET", "/api/v1/bans", Ok((E::BansList, Read, None))),
            ("POST", "/api/v1/bans", Ok((E::BanAdd, Operate, None))),
            (
                "DELETE",
                "/api/v1/bans/m1",
                Ok((E::BanRemove, Operate, Some("m1"))),
            ),
            ("PUT", "/api/v1/bans", Err(405)),
            ("POST", "/api/v1/sessions", Err(405)),
            ("GET", "/api/v1/reload", Err(405)),
            ("GET", "/api/v1/nothing", Err(404)),
            ("GET", "/api/v2/sessions", Err(404)),
            ("GET", "/api/v1/sessions/1/2", Err(404)),
            ("DELETE", "/api/v1/bans/", Ok((E::BanRemove, Operate, None))),
        ];
        for (method, path, want) in table {
            assert_eq!(
                route(method, path).map_err(|r| r.status),
                want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn queries_are_percent_decoded_and_capped() {
        assert_eq!(
            query_pairs("principal=a%2Fb+c&x=").unwrap(),
            [
                ("principal".into(), "a/b c".into()),
                ("x".into(), String::new())
            ]
        );
        assert_eq!(query_pairs("a=%zz").unwrap_err().status, 400);
        assert_eq!(query_pairs("a=%e2").unwrap_err().status, 400);
        assert_eq!(query_pairs(&"a=1&".repeat(33)).unwrap_err().status, 400);
    }
}
