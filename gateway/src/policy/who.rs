//! `who` selectors: which clients a rule applies to (principal globs, groups, certificate OU,
//! listener, source network, any authenticated client, anonymous clients), evaluated once per
//! client at CONNECT.

use std::net::IpAddr;

use ipnet::IpNet;

use super::ClientFacts;
use super::glob::Glob;

/// A reference from a `who` to a `[groups]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum GroupRef {
    /// Index into the policy's group table.
    Known(usize),
    /// A name with no `[groups]` entry: only clients whose token claims it are in it (see
    /// `auth.token.groups_claim`; reported as a warning, it may be a typo).
    Unknown(Box<str>),
}

/// A compiled `who`: every given selector must match; within a selector, any entry.
///
/// `Default` (no selector at all) matches every client; the policy file refuses an empty `who`,
/// only the Mosquitto translation (`pattern` lines) builds one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Who {
    /// Globs on the principal; a client without a principal never matches.
    pub(crate) principals: Option<Box<[Glob]>>,
    /// Groups, any of which the client must be in.
    pub(crate) groups: Option<Box<[GroupRef]>>,
    /// Organizational units of the client certificate, compared exactly.
    pub(crate) cert_ou: Option<Box<[Box<str>]>>,
    /// Listener names from gateway.toml.
    pub(crate) listeners: Option<Box<[Box<str>]>>,
    /// Client address networks; IPv4-mapped IPv6 addresses are compared as IPv4.
    pub(crate) sources: Option<Box<[IpNet]>>,
    /// `any = true`: every authenticated client (not anonymous ones).
    pub(crate) any: bool,
    /// `anonymous = true`: clients let in by `allow_anonymous`.
    pub(crate) anonymous: bool,
    /// Mosquitto `pattern` allow lines: the client's username and client id hold no `+` or `#`
    /// (Mosquitto denies every pattern to such clients).
    pub(crate) clean_ids: bool,
}

impl Who {
    /// A `who` that names exactly one principal (Mosquitto `user` lines).
    pub(crate) fn principal(name: &str) -> Self {
        Self {
            principals: Some(Box::new([Glob::exact(name)])),
            any: true,
            ..Self::default()
        }
    }

    /// A `who` for anonymous clients only (Mosquitto `topic` lines before any `user` line).
    pub(crate) fn anonymous() -> Self {
        Self {
            anonymous: true,
            ..Self::default()
        }
    }

    /// True when no selector is given.
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether this `who` matches the client. `in_group[i]` tells whether the client is in
    /// group `i` (computed once per client).
    pub(crate) fn matches(&self, client: &ClientFacts<'_>, in_group: &[bool]) -> bool {
        let authenticated = !client.anonymous && client.principal.is_some();
        if self.any && !authenticated {
            return false;
        }
        if self.anonymous && !client.anonymous {
            return false;
        }
        if self.clean_ids
            && !(ids_clean(client.client_id) && client.principal.is_none_or(ids_clean))
        {
            return false;
        }
        if let Some(globs) = &self.principals {
            let Some(principal) = client.principal else {
                return false;
            };
            if !globs.iter().any(|g| g.matches(principal, None)) {
                return false;
            }
        }
        if let Some(groups) = &self.groups {
            let member = groups.iter().any(|g| match g {
                GroupRef::Known(i) => in_group.get(*i).copied().unwrap_or(false),
                GroupRef::Unknown(name) => client.groups.iter().any(|g| **g == **name),
            });
            if !member {
                return false;
            }
        }
        if let Some(ous) = &self.cert_ou
            && !client
                .cert_ous
                .iter()
                .any(|have| ous.iter().any(|want| **want == **have))
        {
            return false;
        }
        if let Some(listeners) = &self.listeners
            && !listeners.iter().any(|l| **l == *client.listener)
        {
            return false;
        }
        if let Some(nets) = &self.sources {
            let addr: IpAddr = client.source.to_canonical();
            if !nets.iter().any(|n| n.contains(&addr)) {
                return false;
            }
        }
        true
    }

    /// Why this `who` can never match anybody, if it cannot (for warnings).
    pub(crate) fn never_matches(&self) -> Option<&'static str> {
        if self.any && self.anonymous {
            return Some("`any = true` and `anonymous = true` together match nobody");
        }
        if self.anonymous && self.principals.is_some() {
            return Some("anonymous clients have no principal, so `principals` never matches them");
        }
        None
    }
}

/// Mosquitto's test for pattern ACLs: no `+` or `#` in the username or client id.
fn ids_clean(s: &str) -> bool {
    !s.contains(['+', '#'])
}

/// Whether a principal or client id may be substituted for `%u` / `%c`: not empty and free of
/// `+`, `#`, `/` and NUL, so the substituted value is exactly one literal topic level and can
/// never widen a rule.
pub(crate) fn var_value_usable(value: &str) -> bool {
    !value.is_empty() && !value.contains(['+', '#', '/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn facts<'a>(principal: Option<&'a str>, ous: &'a [String]) -> ClientFacts<'a> {
        ClientFacts {
            principal,
            client_id: "c1",
            cert_ous: ous,
            listener: "mqtts",
            source: IpAddr::from([10, 1, 2, 3]),
            anonymous: principal.is_none(),
            groups: &[],
        }
    }

    #[test]
    fn selectors_combine_with_and() {
        let ous = vec!["sensors".to_string()];
        let who = Who {
            principals: Some(Box::new([Glob::plain("sensor-*")])),
            cert_ou: Some(Box::new(["sensors".into()])),
            listeners: Some(Box::new(["mqtts".into()])),
            sources: Some(Box::new(["10.0.0.0/8".parse().unwrap()])),
            ..Who::default()
        };
        assert!(who.matches(&facts(Some("sensor-1"), &ous), &[]));
        assert!(!who.matches(&facts(Some("robot-1"), &ous), &[]));
        assert!(!who.matches(&facts(Some("sensor-1"), &[]), &[]));
        let mut other_listener = facts(Some("sensor-1"), &ous);
        other_listener.listener = "internal";
        assert!(!who.matches(&other_listener, &[]));
        let mut mapped = facts(Some("sensor-1"), &ous);
        mapped.source = IpAddr::V6(Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0x0a01, 0x0203]));
        assert!(
            who.matches(&mapped, &[]),
            "IPv4-mapped IPv6 is canonicalized"
        );
        mapped.source = IpAddr::from([192, 168, 0, 1]);
        assert!(!who.matches(&mapped, &[]));
    }

    #[test]
    fn any_and_anonymous() {
        let any = Who {
            any: true,
            ..Who::default()
        };
        let anon = Who::anonymous();
        assert!(any.matches(&facts(Some("a"), &[]), &[]));
        assert!(!any.matches(&facts(None, &[]), &[]));
        assert!(anon.matches(&facts(None, &[]), &[]));
        assert!(!anon.matches(&facts(Some("a"), &[]), &[]));
        assert!(Who::default().matches(&facts(None, &[]), &[]));
        let clean = Who {
            clean_ids: true,
            ..Who::default()
        };
        assert!(clean.matches(&facts(Some("a"), &[]), &[]));
        assert!(!clean.matches(&facts(Some("a+"), &[]), &[]));
        let mut hostile_id = facts(Some("a"), &[]);
        hostile_id.client_id = "x#";
        assert!(!clean.matches(&hostile_id, &[]));
    }

    #[test]
    fn groups() {
        let who = Who {
            groups: Some(Box::new([
                GroupRef::Unknown("fleet".into()),
                GroupRef::Known(1),
            ])),
            ..Who::default()
        };
        assert!(who.matches(&facts(Some("a"), &[]), &[false, true]));
        assert!(!who.matches(&facts(Some("a"), &[]), &[true, false]));
        assert!(!who.matches(&facts(Some("a"), &[]), &[]));
        // A group without a `[groups]` entry: the clients whose token claims it.
        let claims = ["other".to_owned(), "fleet".to_owned()];
        let mut token = facts(Some("a"), &[]);
        token.groups = &claims;
        assert!(who.matches(&token, &[false, false]));
        token.groups = &claims[..1];
        assert!(!who.matches(&token, &[false, false]));
    }

    #[test]
    fn usable_values() {
        assert!(var_value_usable("sensor-1"));
        assert!(var_value_usable("$x"));
        for bad in ["", "a/b", "+", "#", "a+", "x\0"] {
            assert!(!var_value_usable(bad), "{bad:?}");
        }
    }
}
