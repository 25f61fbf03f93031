//! The compiled structure of decisions: a topic trie of rule filters whose leaves hold the first
//! allow and deny rule (in file order) of each filter; `%u`/`%c` levels are nodes of their own,
//! compared with the client's value when deciding (`walk.rs`), so one trie serves every client
//! of a `who` class. Built once per policy snapshot; immutable; indices are `u32`.

use std::collections::BTreeMap;

use super::template::{Level, Var};

/// The best (lowest, i.e. first in file order) rule index of each kind found at a place.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Hits {
    /// An allow rule.
    pub(crate) allow: Option<u32>,
    /// A deny rule (for subscribe: denies every filter that overlaps it).
    pub(crate) deny: Option<u32>,
    /// A subscribe deny that refuses only filters it contains (translated Mosquitto `deny`).
    pub(crate) deny_contained: Option<u32>,
}

/// The smaller rule index of two, if any.
pub(crate) fn min(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Hits {
    pub(super) fn add(&mut self, other: &Self) {
        self.allow = min(self.allow, other.allow);
        self.deny = min(self.deny, other.deny);
        self.deny_contained = min(self.deny_contained, other.deny_contained);
    }
}

/// What a rule filter inserted into a trie does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HitKind {
    /// Allows.
    Allow,
    /// Denies (for subscribe: every filter that overlaps it).
    Deny,
    /// Denies subscribe filters it contains (Mosquitto `deny` lines).
    DenyContained,
}

/// One topic level of the trie.
#[derive(Debug, Default)]
pub(super) struct Node {
    /// Literal children, sorted by level for binary search.
    pub(super) lits: Box<[(Box<str>, u32)]>,
    /// The `+` child.
    pub(super) plus: Option<u32>,
    /// The `%u` child, matched by a level equal to the client's principal.
    pub(super) var_u: Option<u32>,
    /// The `%c` child, matched by a level equal to the client's client id.
    pub(super) var_c: Option<u32>,
    /// Rules whose filter ends here.
    pub(super) end: Hits,
    /// Rules whose filter is this node's path followed by `#`.
    pub(super) hash: Hits,
    /// Everything in this subtree (for a subscription to `#` and for fail-closed denies).
    pub(super) below: Hits,
    /// The same without the subtrees under `%u` levels (for clients without a principal).
    pub(super) below_no_u: Hits,
}

/// An immutable trie of rule filters for one action of one `who` class.
#[derive(Debug)]
pub(crate) struct Trie {
    /// The nodes; the root is the first, children always come after their parent.
    pub(super) nodes: Box<[Node]>,
}

#[derive(Default)]
struct BuildNode {
    lits: BTreeMap<Box<str>, usize>,
    plus: Option<usize>,
    var_u: Option<usize>,
    var_c: Option<usize>,
    end: Hits,
    hash: Hits,
}

/// Collects rule filters, then freezes them into a [`Trie`].
#[derive(Default)]
pub(crate) struct TrieBuilder {
    nodes: Vec<BuildNode>,
}

impl TrieBuilder {
    /// Adds a filter of rule `order` with the given effect.
    pub(crate) fn insert(&mut self, template: &[Level], kind: HitKind, order: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(BuildNode::default());
        }
        let mut at = 0usize;
        let mut hash = false;
        for level in template {
            let next = self.nodes.len();
            let Some(node) = self.nodes.get_mut(at) else {
                return;
            };
            let child = match level {
                Level::Hash => {
                    hash = true;
                    break;
                }
                Level::Lit(l) => *node.lits.entry(l.clone()).or_insert(next),
                Level::Plus => *node.plus.get_or_insert(next),
                Level::Var(Var::Principal) => *node.var_u.get_or_insert(next),
                Level::Var(Var::ClientId) => *node.var_c.get_or_insert(next),
            };
            if child == next {
                self.nodes.push(BuildNode::default());
            }
            at = child;
        }
        let Some(node) = self.nodes.get_mut(at) else {
            return;
        };
        let hits = if hash { &mut node.hash } else { &mut node.end };
        let one = Some(order);
        match kind {
            HitKind::Allow => hits.allow = min(hits.allow, one),
            HitKind::Deny => hits.deny = min(hits.deny, one),
            HitKind::DenyContained => hits.deny_contained = min(hits.deny_contained, one),
        }
    }

    /// True when nothing was inserted.
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Freezes the trie; `None` when nothing was inserted or it has more than `u32::MAX` nodes.
    pub(crate) fn build(self) -> Option<Trie> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for b in &self.nodes {
            let mut lits = Vec::with_capacity(b.lits.len());
            for (k, v) in &b.lits {
                lits.push((k.clone(), to_id(*v)?));
            }
            nodes.push(Node {
                lits: lits.into_boxed_slice(),
                plus: opt_id(b.plus)?,
                var_u: opt_id(b.var_u)?,
                var_c: opt_id(b.var_c)?,
                end: b.end,
                hash: b.hash,
                below: Hits::default(),
                below_no_u: Hits::default(),
            });
        }
        // Children are always created after their parent, so a reverse pass sees every child's
        // subtree summary before its parent's.
        for i in (0..nodes.len()).rev() {
            let Some(node) = nodes.get(i) else { continue };
            let mut below = node.end;
            below.add(&node.hash);
            let mut below_no_u = below;
            let children = node
                .lits
                .iter()
                .map(|(_, c)| *c)
                .chain(node.plus)
                .chain(node.var_c);
            for c in children {
                if let Some(child) = nodes.get(usize::try_from(c).ok()?) {
                    below.add(&child.below);
                    below_no_u.add(&child.below_no_u);
                }
            }
            if let Some(u) = node.var_u
                && let Some(child) = nodes.get(usize::try_from(u).ok()?)
            {
                below.add(&child.below);
            }
            if let Some(node) = nodes.get_mut(i) {
                node.below = below;
                node.below_no_u = below_no_u;
            }
        }
        Some(Trie {
            nodes: nodes.into_boxed_slice(),
        })
    }
}

fn to_id(i: usize) -> Option<u32> {
    u32::try_from(i).ok()
}

/// `Some(None)` for no child, `None` when the index does not fit.
fn opt_id(i: Option<usize>) -> Option<Option<u32>> {
    match i {
        None => Some(None),
        Some(i) => to_id(i).map(Some),
    }
}
