//! `GET/POST /api/v1/bans`, `DELETE /api/v1/bans/{id}`: the ban table, both halves. Bans that
//! authentication failures earned (`source: "failures"`, id `auto-<kind>-<key>`; a user is shown
//! and lifted by the hex SHA-256 of its name, the table's key) and bans an operator gave
//! (`source: "operator"`, id `m<n>`), by address or CIDR, user, or certificate fingerprint, with an
//! optional expiry. Operator bans are checked at CONNECT: a banned client gets CONNACK 0x8A.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::tokens::Caller;
use super::{Endpoint, Response, audit_action};
use crate::auth::ban::Banned;
use crate::auth::ban_manual::Target;
use crate::cluster::ClusterError;
use crate::shared::Gateway;

/// The longest operator ban with an expiry (`expires_in`, seconds): ten years.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

const fn kind(b: Banned) -> &'static str {
    match b {
        Banned::Address => "address",
        Banned::User => "user",
        Banned::Certificate => "certificate",
    }
}

fn unix_at(at: Instant, now: Instant) -> u64 {
    crate::session::connect::unix_now().saturating_add(at.saturating_duration_since(now).as_secs())
}

pub(super) fn list(gw: &Gateway) -> Response {
    let now = Instant::now();
    let mut bans: Vec<serde_json::Value> = gw
        .bans
        .manual
        .list(now)
        .into_iter()
        .map(|b| {
            json!({
                "id": format!("m{}", b.id),
                "kind": b.target.kind(),
                "value": b.target.value(),
                "expires": b.until_unix,
                "created": b.created_unix,
                "by": b.by,
                "source": "operator",
            })
        })
        .collect();
    for (what, key, until) in gw.bans.in_force(now) {
        bans.push(json!({
            "id": format!("auto-{}-{key}", kind(what)),
            "kind": kind(what),
            "value": key,
            "expires": unix_at(until, now),
            "source": "failures",
        }));
    }
    Response::new(200, json!({ "bans": bans }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBan {
    address: Option<String>,
    user: Option<String>,
    certificate: Option<String>,
    /// Seconds; absent: until lifted.
    expires_in: Option<u64>,
}

fn target(b: &NewBan) -> Result<Target, String> {
    match (&b.address, &b.user, &b.certificate) {
        (Some(a), None, None) => a
            .parse::<ipnet::IpNet>()
            .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map(|n| Target::Address(n.trunc()))
            .map_err(|_| format!("address {a:?}: an IP address or a CIDR")),
        (None, Some(u), None) if !u.is_empty() && u.len() <= usize::from(u16::MAX) => {
            Ok(Target::User(u.clone()))
        }
        (None, None, Some(c)) if c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Target::Certificate(c.to_ascii_lowercase()))
        }
        (None, None, Some(_)) => {
            Err("certificate: the SHA-256 fingerprint, 64 hex digits".to_owned())
        }
        _ => Err("exactly one of address, user, certificate".to_owned()),
    }
}

/// The key an operator ban is shared under (`auth::ban::shared_keys`), or why it is not shared.
fn shared_key(target: &Target) -> Result<(Banned, String), &'static str> {
    match target {
        Target::Address(net) => {
            let one = match net {
                ipnet::IpNet::V4(n) => n.prefix_len() == 32,
                ipnet::IpNet::V6(n) => n.prefix_len() >= 64,
            };
            if one {
                Ok((
                    Banned::Address,
                    crate::limits::address_key(net.addr()).to_string(),
                ))
            } else {
                Err("a network wider than one address (an IPv6 /64) stays on this instance")
            }
        }
        Target::User(u) => Ok((Banned::User, crate::auth::ban::user_hex(u))),
        Target::Certificate(f) => Ok((Banned::Certificate, f.clone())),
    }
}

/// What the cluster made of a publication: `(shared, why not)`; `None` without `[cluster]`.
pub(super) fn outcome(r: Result<(), ClusterError>) -> Option<(bool, Option<String>)> {
    match r {
        Ok(()) => Some((true, None)),
        Err(ClusterError::NotConfigured) => None,
        Err(e) => Some((false, Some(e.to_string()))),
    }
}

/// Adds `shared` (and `not_shared`, why) to an answer and to its audit outcome.
pub(super) fn shared_fields(
    shared: Option<&(bool, Option<String>)>,
    body: &mut serde_json::Value,
    outcome: &mut String,
) {
    let (Some((ok, why)), Some(body)) = (shared, body.as_object_mut()) else {
        return;
    };
    body.insert("shared".to_owned(), json!(ok));
    if let Some(why) = why {
        body.insert("not_shared".to_owned(), json!(why));
        outcome.push_str("; not shared: ");
        outcome.push_str(why);
    } else {
        outcome.push_str("; shared with every instance");
    }
}

pub(super) async fn add(gw: &Gateway, body: &[u8], caller: &Caller) -> Response {
    let new: NewBan = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return Response::error(400, format!("a JSON object: {e}")),
    };
    let target = match target(&new) {
        Ok(t) => t,
        Err(e) => return Response::error(400, e),
    };
    if new.expires_in.is_some_and(|s| s == 0 || s > MAX_EXPIRES_IN) {
        return Response::error(400, format!("expires_in: 1 to {MAX_EXPIRES_IN} seconds"));
    }
    let shown = format!("{} {}", target.kind(), target.value());
    let share = shared_key(&target);
    let Some(ban) = gw.bans.manual.add(
        target,
        new.expires_in.map(Duration::from_secs),
        &caller.name,
        Instant::now(),
    ) else {
        return Response::error(409, "the operator ban table is full");
    };
    let shared = if gw.cluster.configured() {
        match share {
            Ok((what, key)) => {
                let ttl = new
                    .expires_in
                    .map_or(crate::cluster::decide::MAX_BAN, Duration::from_secs)
                    .min(crate::cluster::decide::MAX_BAN);
                outcome(gw.cluster.publish_ban(&gw.bans, what, &key, ttl).await)
            }
            Err(why) => Some((false, Some(why.to_owned()))),
        }
    } else {
        None
    };
    let mut answer = json!({
        "id": format!("m{}", ban.id),
        "kind": ban.target.kind(),
        "value": ban.target.value(),
        "expires": ban.until_unix,
        "source": "operator",
    });
    let mut done = format!("ban m{}", ban.id);
    shared_fields(shared.as_ref(), &mut answer, &mut done);
    audit_action(gw, caller, Endpoint::BanAdd, &shown, &done);
    Response::new(200, answer)
}

pub(super) async fn remove(gw: &Gateway, id: &str, caller: &Caller) -> Response {
    // What to publish as an unban once lifted here: an earned ban's key, or the key a shared
    // operator ban was published under (when its shared copy is still in force here).
    let (lifted, unban) = if let Some(n) = id.strip_prefix('m') {
        let n: Option<u64> = n.parse().ok();
        let target = n.and_then(|n| {
            gw.bans
                .manual
                .list(Instant::now())
                .into_iter()
                .find(|b| b.id == n)
                .map(|b| b.target)
        });
        let lifted = n.is_some_and(|n| gw.bans.manual.remove(n));
        let unban = target
            .as_ref()
            .and_then(|t| shared_key(t).ok())
            .filter(|(what, key)| {
                gw.bans
                    .active(Instant::now())
                    .iter()
                    .any(|(w, k, _)| w == what && k == key)
            });
        (lifted, unban)
    } else if let Some(rest) = id.strip_prefix("auto-") {
        let found = [Banned::Address, Banned::User, Banned::Certificate]
            .into_iter()
            .find_map(|b| {
                rest.strip_prefix(kind(b))
                    .and_then(|k| k.strip_prefix('-'))
                    .map(|k| (b, k.to_owned()))
            });
        let lifted = found.as_ref().is_some_and(|(b, k)| gw.bans.lift(*b, k));
        (lifted, found.filter(|_| lifted))
    } else {
        (false, None)
    };
    if !lifted {
        return Response::error(404, "no such ban");
    }
    let shared = match unban {
        Some((what, key)) if gw.cluster.configured() => {
            outcome(gw.cluster.publish_unban(&gw.bans, what, &key).await)
        }
        _ => None,
    };
    let mut answer = json!({ "id": id, "lifted": true });
    let mut done = "lifted".to_owned();
    shared_fields(shared.as_ref(), &mut answer, &mut done);
    audit_action(gw, caller, Endpoint::BanRemove, id, &done);
    Response::new(200, answer)
}
