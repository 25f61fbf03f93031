//! The `who` tables of the policy file (in `[groups]`, `[[connect]]` and `[[rule]]`): serde
//! shape and validation into [`Who`], with `file:line` errors and warnings for entries that
//! can never match (unknown group or listener, contradictory selectors).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::PolicyError;
use super::file::{Ctx, Strings, non_empty};
use super::glob::Glob;
use super::who::{GroupRef, Who};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWho {
    principals: Option<Strings>,
    groups: Option<Strings>,
    cert_ou: Option<Strings>,
    listeners: Option<Strings>,
    sources: Option<Strings>,
    any: Option<Spanned<bool>>,
    anonymous: Option<Spanned<bool>>,
}

pub(super) fn compile_who(
    ctx: &mut Ctx<'_>,
    raw: &Spanned<RawWho>,
    in_group: bool,
) -> Result<Who, PolicyError> {
    let w = raw.get_ref();
    let mut who = Who::default();
    if let Some(list) = &w.principals {
        let globs = non_empty(ctx, list, "principals")?;
        who.principals = Some(globs.iter().map(|g| Glob::plain(g.get_ref())).collect());
    }
    if let Some(list) = &w.groups {
        if in_group {
            return Err(ctx.error(
                &list.span(),
                "`groups`: a group cannot include other groups",
            ));
        }
        let mut refs = Vec::new();
        for name in non_empty(ctx, list, "groups")? {
            match ctx.group_index.get(name.get_ref()) {
                Some(i) => refs.push(GroupRef::Known(*i)),
                None => {
                    let msg = format!(
                        "unknown group {:?} (not in [groups]): only clients whose token claims it (auth.token.groups_claim) are in it",
                        name.get_ref()
                    );
                    ctx.warn_as(&name.span(), msg, super::WarningKind::TokenGroup);
                    refs.push(GroupRef::Unknown(name.get_ref().as_str().into()));
                }
            }
        }
        who.groups = Some(refs.into_boxed_slice());
    }
    if let Some(list) = &w.cert_ou {
        who.cert_ou = Some(
            non_empty(ctx, list, "cert_ou")?
                .iter()
                .map(|s| s.get_ref().as_str().into())
                .collect(),
        );
    }
    if let Some(list) = &w.listeners {
        let names = non_empty(ctx, list, "listeners")?;
        for name in names {
            if !ctx.listener_names.contains(&name.get_ref().as_str()) {
                let msg = format!(
                    "unknown listener {:?} (not in gateway.toml): this entry never matches",
                    name.get_ref()
                );
                ctx.warn(&name.span(), msg);
            }
        }
        who.listeners = Some(names.iter().map(|s| s.get_ref().as_str().into()).collect());
    }
    if let Some(list) = &w.sources {
        let mut nets = Vec::new();
        for s in non_empty(ctx, list, "sources")? {
            nets.push(
                parse_source(s.get_ref())
                    .map_err(|m| ctx.error(&s.span(), format!("`sources`: {m}")))?,
            );
        }
        who.sources = Some(nets.into_boxed_slice());
    }
    for (flag, key, set) in [
        (&w.any, "any", &mut who.any),
        (&w.anonymous, "anonymous", &mut who.anonymous),
    ] {
        if let Some(v) = flag {
            if !*v.get_ref() {
                return Err(ctx.error(
                    &v.span(),
                    format!("`{key} = false` has no meaning: remove it"),
                ));
            }
            *set = true;
        }
    }
    if who.is_empty() {
        return Err(ctx.error(
            &raw.span(),
            "`who` is empty: give at least one selector (`any = true` for every authenticated client)",
        ));
    }
    if let Some(why) = who.never_matches() {
        ctx.warn(&raw.span(), format!("`who` never matches: {why}"));
    }
    Ok(who)
}

/// A CIDR network or a single address; host bits must be zero; IPv4-mapped IPv6 is refused
/// (client addresses are compared in canonical form, so such a network would never match).
fn parse_source(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => IpNet::from(
            s.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an address or CIDR network"))?,
        ),
    };
    if net.trunc() != net {
        return Err(format!("{s:?} has host bits set: write {}", net.trunc()));
    }
    if let IpNet::V6(v6) = net
        && v6.addr().to_ipv4_mapped().is_some()
    {
        return Err(format!("{s:?} is IPv4-mapped IPv6: write the IPv4 network"));
    }
    Ok(net)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_source("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        assert_eq!(
            parse_source("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(parse_source("10.0.0.5/8").is_err());
        assert!(parse_source("::ffff:10.0.0.0/104").is_err());
        assert!(parse_source("10.0.0.0/33").is_err());
        assert!(parse_source("example.com").is_err());
    }
}
