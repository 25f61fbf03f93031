//! Per-session state that the inspection of one packet needs, all of it bounded: topic aliases
//! with what the other side has been told, SUBSCRIBEs waiting for their SUBACK to be merged, and
//! the QoS 2 packet identifiers the gateway acknowledged itself.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

#[cfg(doc)]
use mqtt_inspect::DecodeError;
use mqtt_inspect::{Direction, TopicAliases};

use crate::close::CloseReason;

/// SUBSCRIBEs with denied filters waiting for the broker's SUBACK, at most this many at once.
pub const MAX_PENDING_SUBACKS: usize = 32;
/// QoS 2 packet identifiers acknowledged by the gateway and waiting for their PUBREL.
pub const MAX_GATEWAY_QOS2: usize = 1024;
/// The gateway tracks at most this many topic aliases per direction, whatever was negotiated.
pub const MAX_TOPIC_ALIASES: u16 = 1024;
/// Topic bytes the alias table of one direction may hold (1,024 aliases of 256-byte topics): a
/// topic may be 64 KiB long, and 1,024 of them would be 64 MiB per connection.
pub const MAX_ALIAS_TOPIC_BYTES: usize = 256 * 1024;

/// The filters a client holds at the broker through this connection (SUBSCRIBE adds minus
/// UNSUBSCRIBE removes), at most `max` of them. Kept as keyed 64-bit hashes of the filter as sent
/// (`$share/g/a` and `a` are two subscriptions at the broker), 8 bytes each, never the text: a
/// filter may be 64 KiB long. A subscription the broker refuses in its SUBACK stays counted until
/// it is unsubscribed (this errs towards refusing). The count starts at zero with each connection:
/// what a persistent session holds from an earlier connection is not known to the gateway.
#[derive(Debug)]
pub struct Subscriptions {
    held: std::collections::HashSet<u64>,
    keys: std::hash::RandomState,
    max: usize,
}

impl Subscriptions {
    /// Room for `max` filters.
    #[must_use]
    pub fn new(max: u32) -> Self {
        Self {
            held: std::collections::HashSet::new(),
            keys: std::hash::RandomState::new(),
            max: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }

    /// Whether `filter` may be subscribed: it is held already (a new SUBSCRIBE to it replaces the
    /// old one, [MQTT-3.8.4-3]) or there is room for one more, which it then takes.
    pub fn add(&mut self, filter: &str) -> bool {
        let key = std::hash::BuildHasher::hash_one(&self.keys, filter);
        if self.held.contains(&key) {
            return true;
        }
        if self.held.len() >= self.max {
            return false;
        }
        self.held.insert(key)
    }

    /// `filter` was unsubscribed (or never held).
    pub fn remove(&mut self, filter: &str) {
        let key = std::hash::BuildHasher::hash_one(&self.keys, filter);
        self.held.remove(&key);
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = std::collections::HashSet::new();
        }
    }

    /// Filters held now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// No filter held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

/// A SUBSCRIBE forwarded without some of its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSuback {
    /// Its packet identifier.
    pub packet_id: u16,
    /// One entry per original filter: `None` forwarded (the broker's code goes here), `Some(code)`
    /// denied by the gateway.
    pub codes: Vec<Option<u8>>,
}

/// State both directions of a session touch. Short critical sections, never held across an await.
#[derive(Debug, Default)]
pub struct SessionShared {
    pending: Mutex<Vec<PendingSuback>>,
    /// The Topic Alias Maximum the broker granted the client (from CONNACK).
    client_alias_max: AtomicU16,
    /// The broker's CONNACK has been judged and passed on towards the client.
    connack_relayed: AtomicBool,
}

impl SessionShared {
    /// Records a partly denied SUBSCRIBE. `false` when too many are pending already.
    pub fn push_pending(&self, p: PendingSuback) -> bool {
        let Ok(mut v) = self.pending.lock() else {
            return false;
        };
        if v.len() >= MAX_PENDING_SUBACKS {
            return false;
        }
        v.retain(|e| e.packet_id != p.packet_id);
        v.push(p);
        true
    }

    /// Takes the pending SUBSCRIBE with this packet identifier, if any.
    pub fn take_pending(&self, packet_id: u16) -> Option<PendingSuback> {
        let mut v = self.pending.lock().ok()?;
        let i = v.iter().position(|e| e.packet_id == packet_id)?;
        Some(v.swap_remove(i))
    }

    /// Notes that the broker's CONNACK is on its way to the client.
    pub fn note_connack(&self) {
        self.connack_relayed.store(true, Ordering::Relaxed);
    }

    /// Whether the broker's CONNACK has been passed on to the client.
    pub fn connack_relayed(&self) -> bool {
        self.connack_relayed.load(Ordering::Relaxed)
    }

    /// Sets the alias maximum the broker's CONNACK granted (capped).
    pub fn set_client_alias_max(&self, max: u16) {
        self.client_alias_max
            .store(max.min(MAX_TOPIC_ALIASES), Ordering::Relaxed);
    }

    /// The alias maximum for PUBLISH from the client.
    pub fn client_alias_max(&self) -> u16 {
        self.client_alias_max.load(Ordering::Relaxed)
    }
}

/// The topic aliases of one direction, and for each bound alias whether the receiving side has
/// been told the binding (the PUBLISH that set it was forwarded). When a binding PUBLISH is
/// dropped by the policy, a later PUBLISH that uses the alias alone is forwarded with its topic
/// written out, so the receiver can never attribute a message to a stale binding.
#[derive(Debug, Default)]
pub struct AliasState {
    table: TopicAliases,
    delivered: Vec<bool>,
}

impl AliasState {
    /// Resolves the topic of a PUBLISH (see [`TopicAliases::resolve`]), with `maximum` as the
    /// negotiated Topic Alias Maximum of this direction (`direction`: the sender's).
    ///
    /// # Errors
    /// The close: malformed with [`DecodeError::TopicAliasInvalid`] and friends, as
    /// `TopicAliases::resolve`; [`CloseReason::QuotaExceeded`] for a binding that would take the
    /// table's topics beyond [`MAX_ALIAS_TOPIC_BYTES`].
    pub fn resolve<'t>(
        &'t mut self,
        topic: &'t str,
        alias: Option<u16>,
        maximum: u16,
        direction: Direction,
    ) -> Result<&'t str, CloseReason> {
        // The gateway tracks at most MAX_TOPIC_ALIASES: each side is told no more (CONNACK and
        // the upstream CONNECT are rewritten), and the table is compared at that size, or a larger
        // negotiated value would start a fresh table, losing every binding, on each PUBLISH.
        let maximum = maximum.min(MAX_TOPIC_ALIASES);
        if self.table.maximum() != maximum {
            // Negotiated once per connection; a changed value starts a fresh table.
            self.table = TopicAliases::new(maximum);
            self.delivered.clear();
        }
        // A valid binding that would hold more than the budget (an invalid alias is refused as
        // such by the table, below): counted as the table would hold it, the longest topic each
        // alias has had.
        if let Some(a) = alias
            && (1..=maximum).contains(&a)
            && !topic.is_empty()
        {
            let held = self.table.held_bytes(a);
            let after = self.table.heap_bytes().saturating_sub(held) + held.max(topic.len());
            if after > MAX_ALIAS_TOPIC_BYTES {
                return Err(CloseReason::QuotaExceeded);
            }
        }
        self.table
            .resolve(topic, alias)
            .map_err(|error| CloseReason::Malformed { direction, error })
    }

    /// Whether a PUBLISH with `alias` and no topic must be forwarded with its topic written out,
    /// because the receiver was never told the binding.
    #[must_use]
    pub fn needs_topic(&self, alias: Option<u16>, had_topic: bool) -> bool {
        if had_topic {
            return false;
        }
        match alias.and_then(|a| usize::from(a).checked_sub(1)) {
            Some(index) => !self.delivered.get(index).copied().unwrap_or(false),
            None => false,
        }
    }

    /// Records that a PUBLISH with `alias` was forwarded (with its topic, or written out).
    pub fn forwarded(&mut self, alias: Option<u16>) {
        let Some(index) = alias.and_then(|a| usize::from(a).checked_sub(1)) else {
            return;
        };
        if self.delivered.len() <= index {
            self.delivered.resize(index + 1, false);
        }
        if let Some(slot) = self.delivered.get_mut(index) {
            *slot = true;
        }
    }

    /// Records that a PUBLISH with `alias` was not forwarded; if it carried a topic, the receiver
    /// does not know the new binding.
    pub fn dropped(&mut self, alias: Option<u16>, had_topic: bool) {
        if !had_topic {
            return;
        }
        if let Some(slot) = alias
            .and_then(|a| usize::from(a).checked_sub(1))
            .and_then(|i| self.delivered.get_mut(i))
        {
            *slot = false;
        }
    }
}

/// QoS 2 packet identifiers the gateway answered itself (PUBREC), so that their PUBREL is answered
/// with PUBCOMP and not forwarded.
#[derive(Debug, Default)]
pub struct GatewayQos2 {
    ids: Vec<u16>,
}

impl GatewayQos2 {
    /// Remembers an id. `false` when the set is full.
    pub fn insert(&mut self, id: u16) -> bool {
        if self.ids.contains(&id) {
            return true;
        }
        if self.ids.len() >= MAX_GATEWAY_QOS2 {
            return false;
        }
        self.ids.push(id);
        true
    }

    /// Remembers an id whose PUBREL may never come (MQTT 5, after a PUBREC with an error reason):
    /// when the set is full, an old entry makes room.
    pub fn insert_evicting(&mut self, id: u16) {
        if self.ids.contains(&id) {
            return;
        }
        if self.ids.len() >= MAX_GATEWAY_QOS2 {
            self.ids.remove(0);
        }
        self.ids.push(id);
    }

    /// Forgets an id; `true` when it was there.
    pub fn remove(&mut self, id: u16) -> bool {
        match self.ids.iter().position(|&x| x == id) {
            Some(i) => {
                self.ids.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use mqtt_inspect::DecodeError;

    use super::*;

    const C2S: Direction = Direction::ClientToServer;

    #[test]
    fn dropped_binding_is_written_out_later() {
        let mut a = AliasState::default();
        // Alias 1 bound to an allowed topic and forwarded.
        assert!(!a.needs_topic(Some(1), true));
        assert_eq!(a.resolve("ok/t", Some(1), 10, C2S).unwrap(), "ok/t");
        a.forwarded(Some(1));
        assert!(!a.needs_topic(Some(1), false));
        // Rebound to a topic whose PUBLISH is dropped: the receiver still has ok/t.
        assert_eq!(a.resolve("other/t", Some(1), 10, C2S).unwrap(), "other/t");
        a.dropped(Some(1), true);
        // Alias alone now means other/t; if forwarded, the topic must be written out.
        assert!(a.needs_topic(Some(1), false));
        assert_eq!(a.resolve("", Some(1), 10, C2S).unwrap(), "other/t");
        a.forwarded(Some(1));
        assert!(!a.needs_topic(Some(1), false));
    }

    #[test]
    fn a_maximum_above_the_cap_keeps_its_bindings() {
        // A client announcing 65,535 aliases: the broker is told 1,024, and the bindings it makes
        // hold from PUBLISH to PUBLISH [MQTT-3.3.2-12].
        let mut a = AliasState::default();
        assert_eq!(a.resolve("t/1", Some(1), u16::MAX, C2S).unwrap(), "t/1");
        assert_eq!(a.resolve("", Some(1), u16::MAX, C2S).unwrap(), "t/1");
        assert_eq!(
            a.resolve("t/2", Some(MAX_TOPIC_ALIASES), u16::MAX, C2S)
                .unwrap(),
            "t/2"
        );
        assert_eq!(a.resolve("", Some(1), u16::MAX, C2S).unwrap(), "t/1");
        // Beyond the cap the gateway told the broker: refused [MQTT-3.3.2-10].
        assert!(
            a.resolve("t/3", Some(MAX_TOPIC_ALIASES + 1), u16::MAX, C2S)
                .is_err()
        );
    }

    #[test]
    fn alias_topics_are_capped_in_bytes() {
        // 1,024 aliases may each hold a 64 KiB topic: the table stops at its byte budget with a
        // Quota exceeded close, instead of holding 64 MiB for one connection.
        let mut a = AliasState::default();
        let long = "t".repeat(60 * 1024);
        let mut bound = 0u16;
        let refused = loop {
            bound += 1;
            match a.resolve(&long, Some(bound), MAX_TOPIC_ALIASES, C2S) {
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(refused, CloseReason::QuotaExceeded);
        assert_eq!(usize::from(bound - 1), MAX_ALIAS_TOPIC_BYTES / long.len());
        // What is bound still resolves; an invalid alias is still refused as invalid.
        assert_eq!(
            a.resolve("", Some(1), MAX_TOPIC_ALIASES, C2S).unwrap(),
            long
        );
        assert!(matches!(
            a.resolve(&long, Some(0), MAX_TOPIC_ALIASES, C2S),
            Err(CloseReason::Malformed {
                error: DecodeError::TopicAliasInvalid,
                ..
            })
        ));
        // The budget's own sizing case: 1,024 aliases of 256-byte topics, each rebound to another
        // topic of that length, fit; one byte more does not.
        let mut full = AliasState::default();
        let topic = |i: u16, fill: char| format!("{i:05}/{}", fill.to_string().repeat(250));
        for round in ['a', 'b'] {
            for i in 1..=MAX_TOPIC_ALIASES {
                let t = topic(i, round);
                assert_eq!(t.len(), 256);
                assert!(full.resolve(&t, Some(i), MAX_TOPIC_ALIASES, C2S).is_ok());
            }
        }
        let longer = format!("{}c", topic(1, 'c'));
        assert_eq!(
            full.resolve(&longer, Some(1), MAX_TOPIC_ALIASES, C2S),
            Err(CloseReason::QuotaExceeded)
        );
    }

    #[test]
    fn bounded_sets() {
        let s = SessionShared::default();
        for i in 0..MAX_PENDING_SUBACKS {
            assert!(s.push_pending(PendingSuback {
                packet_id: u16::try_from(i).unwrap(),
                codes: vec![None]
            }));
        }
        assert!(!s.push_pending(PendingSuback {
            packet_id: 999,
            codes: vec![None]
        }));
        assert!(s.take_pending(3).is_some());
        assert!(s.take_pending(3).is_none());
        let mut q = GatewayQos2::default();
        for i in 0..MAX_GATEWAY_QOS2 {
            assert!(q.insert(u16::try_from(i).unwrap()));
        }
        assert!(!q.insert(60_000));
        q.insert_evicting(60_000);
        assert!(q.remove(60_000));
        assert!(q.remove(5) && !q.remove(5));
        s.set_client_alias_max(u16::MAX);
        assert_eq!(s.client_alias_max(), MAX_TOPIC_ALIASES);
    }
}
