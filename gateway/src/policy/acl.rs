//! Per-client decisions: [`ClientPolicy`] is resolved once at CONNECT (the `who` classes that
//! apply, the connect decision, the client's own `%u`/`%c` values) and then answers publish,
//! subscribe and receive by walking the classes' shared tries. Deny beats allow; nothing
//! matched is deny; subscribe needs an allow that contains the whole filter.

use std::fmt;
use std::sync::Arc;

use mqtt_inspect::{TopicFilter, TopicName};

use super::compile::{Compiled, ConnectRules, PUBLISH, RECEIVE, SUBSCRIBE};
use super::trie::{Hits, Trie, min};
use super::walk::Vars;
use super::{Action, ClientFacts, Decision};

/// One client's view of the policy. Owned, `Send + Sync`; holds an `Arc` of the snapshot, the
/// indices of the `who` classes that apply, and the principal / client id only when some rule
/// uses `%u` / `%c`. Deciding does not allocate.
#[derive(Clone)]
pub struct ClientPolicy {
    compiled: Arc<Compiled>,
    /// Indices into `compiled.classes` whose `who` matches this client.
    classes: Box<[u32]>,
    /// Value of `%u`; `None` for anonymous clients or when no rule uses it.
    principal: Option<Box<str>>,
    /// Value of `%c`; `None` when no rule uses it.
    client_id: Option<Box<str>>,
    /// Decided at resolution: the facts it depends on do not change during a connection.
    connect: Decision,
}

impl fmt::Debug for ClientPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientPolicy")
            .field("classes", &self.classes.len())
            .field("connect", &self.connect)
            .finish_non_exhaustive()
    }
}

// === impl ClientPolicy ===

impl ClientPolicy {
    pub(crate) fn resolve(compiled: &Arc<Compiled>, facts: &ClientFacts<'_>) -> Self {
        let mut client = *facts;
        if client.anonymous {
            // An anonymous client has no principal, whatever the caller passed.
            client.principal = None;
        }
        let in_group: Vec<bool> = compiled
            .groups
            .iter()
            .map(|(name, g)| g.matches(&client, &[]) || client.groups.iter().any(|c| **c == **name))
            .collect();
        // Candidates: the classes indexed under this principal, and the unindexed ones; each is
        // still tested with its whole `who`. Kept in class order.
        let indexed = client
            .principal
            .and_then(|p| compiled.by_principal.get(p))
            .map_or(&[][..], Vec::as_slice);
        let mut candidates: Vec<u32> = compiled.unindexed.iter().chain(indexed).copied().collect();
        candidates.sort_unstable();
        candidates.dedup();
        let classes = candidates
            .into_iter()
            .filter(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| compiled.classes.get(i))
                    .is_some_and(|c| c.who.matches(&client, &in_group))
            })
            .collect();
        let connect = match &compiled.connect {
            ConnectRules::AnyClient(at) => Decision {
                allowed: true,
                rule: Some(at.clone()),
            },
            ConnectRules::Rules(rules) => rules
                .iter()
                .find(|r| {
                    r.who.matches(&client, &in_group)
                        && r.client_ids
                            .iter()
                            .any(|g| g.matches(client.client_id, client.principal))
                })
                .map_or(Decision::DEFAULT_DENY, |r| Decision {
                    allowed: true,
                    rule: Some(r.at.clone()),
                }),
        };
        Self {
            compiled: Arc::clone(compiled),
            classes,
            principal: client
                .principal
                .filter(|_| compiled.uses_principal)
                .map(Box::from),
            client_id: Some(client.client_id)
                .filter(|_| compiled.uses_client_id)
                .map(Box::from),
            connect,
        }
    }

    /// May the client connect with its client id? (`[[connect]]` rules; none matching: deny.)
    #[must_use]
    pub fn connect(&self) -> Decision {
        self.connect.clone()
    }

    /// May the client publish to `topic` (also its Will, and MQTT 5 Response Topics)?
    /// An invalid topic name is denied.
    #[must_use]
    pub fn publish(&self, topic: &str) -> Decision {
        self.topic_decision(PUBLISH, topic)
    }

    /// May the client receive a message published to `topic`? An invalid topic name is denied.
    #[must_use]
    pub fn receive(&self, topic: &str) -> Decision {
        self.topic_decision(RECEIVE, topic)
    }

    /// May the client subscribe to `filter`? Allowed when an allow rule's filter contains all of
    /// it and no deny rule forbids it (see the module docs of `policy` for how subscribe denies
    /// work). `filter` is the filter as the client sent it: `$share/<group>/<filter>` is judged
    /// by `<filter>`, the prefix taken off once, here and nowhere else, as the broker takes it
    /// ([MQTT-4.8.2-1], [MQTT-4.8.2-2]): `$share/g1/$share/g2/F` is group `g1`'s subscription to
    /// the filter `$share/g2/F`, never to `F`. An invalid filter is denied.
    #[must_use]
    pub fn subscribe(&self, filter: &str) -> Decision {
        let Ok(parsed) = TopicFilter::new(filter) else {
            return Decision::DEFAULT_DENY;
        };
        let filter = parsed.effective().as_str();
        let vars = self.vars();
        let (mut overlap, mut contain) = (Hits::default(), Hits::default());
        for trie in self.tries(SUBSCRIBE) {
            trie.overlap_filter(filter, &vars, &mut overlap);
            trie.contain_filter(filter, &vars, &mut contain);
        }
        self.verdict(min(overlap.deny, contain.deny_contained), contain.allow)
    }

    /// Any action; `topic_or_filter` is ignored for [`Action::Connect`].
    #[must_use]
    pub fn decide(&self, action: Action, topic_or_filter: &str) -> Decision {
        match action {
            Action::Connect => self.connect(),
            Action::Publish => self.publish(topic_or_filter),
            Action::Subscribe => self.subscribe(topic_or_filter),
            Action::Receive => self.receive(topic_or_filter),
        }
    }

    fn topic_decision(&self, action: usize, topic: &str) -> Decision {
        if TopicName::new(topic).is_err() {
            return Decision::DEFAULT_DENY;
        }
        let vars = self.vars();
        let mut hits = Hits::default();
        for trie in self.tries(action) {
            trie.match_topic(topic, &vars, &mut hits);
        }
        self.verdict(hits.deny, hits.allow)
    }

    fn verdict(&self, deny: Option<u32>, allow: Option<u32>) -> Decision {
        let rule = |order: u32| {
            let i = usize::try_from(order).ok()?;
            self.compiled.refs.get(i).cloned()
        };
        if let Some(d) = deny {
            return Decision {
                allowed: false,
                rule: rule(d),
            };
        }
        match allow.and_then(rule) {
            Some(at) => Decision {
                allowed: true,
                rule: Some(at),
            },
            None => Decision::DEFAULT_DENY,
        }
    }

    fn vars(&self) -> Vars<'_> {
        Vars {
            principal: self.principal.as_deref(),
            client_id: self.client_id.as_deref(),
        }
    }

    fn tries(&self, action: usize) -> impl Iterator<Item = &Trie> {
        self.classes.iter().filter_map(move |c| {
            let class = self.compiled.classes.get(usize::try_from(*c).ok()?)?;
            class.tries.get(action)?.as_ref()
        })
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
