//! Deciding with a compiled [`Trie`]: three walks, for a topic matched by rule filters (publish,
//! receive), a filter contained in rule filters (subscribe allows) and a filter overlapping rule
//! filters (subscribe denies), given the client's `%u`/`%c` values.
//!
//! The semantics are those of `mqtt_inspect::topic::{matches, contains}`, including "a filter
//! starting with a wildcard never matches a `$` topic"; a property test (`acl_tests.rs`) checks
//! the walks against those functions. Every walk visits each node at most once and recurses at
//! most [`super::template::MAX_LEVELS`] deep; none allocates.

use super::template::Var;
use super::trie::{Hits, Node, Trie, min};
use super::who::var_value_usable;

/// The levels of a topic name or filter: `str::split('/')` without its general-purpose
/// searcher (a profile of the relay showed `CharSearcher` at 5% of all instructions for
/// three-level topics). Splitting at the ASCII `/` always lands on a char boundary.
#[derive(Clone, Debug)]
pub(crate) struct Levels<'a> {
    rest: Option<&'a str>,
}

impl<'a> Levels<'a> {
    pub(crate) const fn new(s: &'a str) -> Self {
        Self { rest: Some(s) }
    }
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match s.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// A client's values for `%u` and `%c`; `None` when absent (no principal).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vars<'a> {
    /// `%u`.
    pub(crate) principal: Option<&'a str>,
    /// `%c`.
    pub(crate) client_id: Option<&'a str>,
}

enum VarState<'a> {
    /// No value (an anonymous client's `%u`): the level matches nothing.
    Absent,
    /// A value that cannot be one literal level: allow rules do not match; deny rules deny
    /// everything below the variable's parent (fail closed).
    Bad,
    /// A value that is exactly one literal level.
    Good(&'a str),
}

impl<'a> Vars<'a> {
    fn state(&self, var: Var, root: bool) -> VarState<'a> {
        let value = match var {
            Var::Principal => self.principal,
            Var::ClientId => self.client_id,
        };
        match value {
            None => VarState::Absent,
            // As a first level, a value starting with '$' would move the rule into the broker's
            // '$' namespace, which wildcard rules deliberately never reach.
            Some(v) if var_value_usable(v) && !(root && v.starts_with('$')) => VarState::Good(v),
            Some(_) => VarState::Bad,
        }
    }
}

impl Node {
    fn lit(&self, level: &str) -> Option<u32> {
        self.lits
            .binary_search_by(|(k, _)| (**k).cmp(level))
            .ok()
            .and_then(|i| self.lits.get(i))
            .map(|(_, c)| *c)
    }

    fn vars(&self) -> [(Option<u32>, Var); 2] {
        [(self.var_u, Var::Principal), (self.var_c, Var::ClientId)]
    }
}

/// What a [`Trie::walk`] looks for, and whether the name or filter it walks starts with `$`
/// (then the root's wildcards do not reach it).
#[derive(Clone, Copy)]
struct Walk {
    /// Containing a filter rather than matching a topic name.
    contain: bool,
    dollar: bool,
}

impl Trie {
    fn node(&self, id: u32) -> Option<&Node> {
        self.nodes.get(usize::try_from(id).ok()?)
    }

    fn below(&self, id: u32, vars: &Vars<'_>) -> Hits {
        match self.node(id) {
            Some(n) if vars.principal.is_some() => n.below,
            Some(n) => n.below_no_u,
            None => Hits::default(),
        }
    }

    /// Fail closed: a deny rule whose variable has an unusable value covers everything at and
    /// below the variable's parent (as if the variable level were `#`, `$` topics included).
    fn widen(&self, node: &Node, root: bool, vars: &Vars<'_>, acc: &mut Hits) {
        for (child, var) in node.vars() {
            if let Some(child) = child
                && let VarState::Bad = vars.state(var, root)
            {
                let below = self.below(child, vars);
                acc.deny = min(acc.deny, below.deny);
                acc.deny_contained = min(acc.deny_contained, below.deny_contained);
            }
        }
    }

    /// Rules whose filter matches the topic name (publish, receive).
    pub(crate) fn match_topic(&self, topic: &str, vars: &Vars<'_>, acc: &mut Hits) {
        let how = Walk {
            contain: false,
            dollar: topic.starts_with('$'),
        };
        self.walk(how, At::root(topic), vars, acc);
    }

    /// Rules whose filter contains the whole (valid) filter: `allow` and `deny_contained`.
    pub(crate) fn contain_filter(&self, filter: &str, vars: &Vars<'_>, acc: &mut Hits) {
        let how = Walk {
            contain: true,
            dollar: filter.starts_with('$'),
        };
        self.walk(how, At::root(filter), vars, acc);
    }

    /// The step every walk starts with: the node's fail-closed widening, and at the end of the
    /// levels the rules that end here or in `#` below it. The node and the next level (taken off
    /// `at`), if there is one.
    fn enter<'t, 'a>(
        &'t self,
        at: &mut At<'a>,
        vars: &Vars<'_>,
        acc: &mut Hits,
    ) -> Option<(&'t Node, &'a str)> {
        let node = self.node(at.id)?;
        self.widen(node, at.root, vars, acc);
        let Some(level) = at.levels.next() else {
            acc.add(&node.end);
            acc.add(&node.hash);
            return None;
        };
        Some((node, level))
    }

    /// Matching a topic name, or (with [`Walk::contain`]) containing a filter: there a `#` or
    /// `+` level is contained only by a `#` (and a `#` only by a `#`, not by a `+`).
    fn walk(&self, how: Walk, mut at: At<'_>, vars: &Vars<'_>, acc: &mut Hits) {
        let Some((node, level)) = self.enter(&mut at, vars, acc) else {
            return;
        };
        let (contain, root) = (how.contain, at.root);
        if !(root && how.dollar) {
            acc.add(&node.hash);
            if !(contain && level == "#")
                && let Some(p) = node.plus
            {
                self.walk(how, at.child(p), vars, acc);
            }
        }
        if contain && (level == "#" || level == "+") {
            return;
        }
        if let Some(c) = node.lit(level) {
            self.walk(how, at.child(c), vars, acc);
        }
        for (child, var) in node.vars() {
            if let Some(child) = child
                && let VarState::Good(v) = vars.state(var, root)
                && v == level
            {
                self.walk(how, at.child(child), vars, acc);
            }
        }
    }

    /// Rules whose filter overlaps the (valid) filter: some topic matches both.
    pub(crate) fn overlap_filter(&self, filter: &str, vars: &Vars<'_>, acc: &mut Hits) {
        self.walk_overlap(At::root(filter), vars, acc);
    }

    fn walk_overlap(&self, mut at: At<'_>, vars: &Vars<'_>, acc: &mut Hits) {
        let Some((node, level)) = self.enter(&mut at, vars, acc) else {
            return;
        };
        let root = at.root;
        if level == "#" && !root {
            acc.add(&self.below(at.id, vars));
            return;
        }
        let wild = level == "#" || level == "+";
        if wild || !(root && level.starts_with('$')) {
            acc.add(&node.hash);
            if let Some(p) = node.plus {
                self.overlap_child(at.child(p), level, vars, acc);
            }
        }
        if wild {
            for (name, c) in &node.lits {
                if !(root && name.starts_with('$')) {
                    self.overlap_child(at.child(*c), level, vars, acc);
                }
            }
        } else if let Some(c) = node.lit(level) {
            self.walk_overlap(at.child(c), vars, acc);
        }
        for (child, var) in node.vars() {
            if let Some(child) = child
                && let VarState::Good(v) = vars.state(var, root)
                && (wild || v == level)
            {
                self.overlap_child(at.child(child), level, vars, acc);
            }
        }
    }

    /// A child reached through `level` of the filter: `#` overlaps its whole subtree.
    fn overlap_child(&self, child: At<'_>, level: &str, vars: &Vars<'_>, acc: &mut Hits) {
        if level == "#" {
            acc.add(&self.below(child.id, vars));
        } else {
            self.walk_overlap(child, vars, acc);
        }
    }
}

/// Where a walk stands: a trie node, the levels of the name or filter still to go, and whether
/// the node is the root.
struct At<'a> {
    id: u32,
    levels: Levels<'a>,
    root: bool,
}

impl<'a> At<'a> {
    /// The root, with every level of `s` to go.
    fn root(s: &'a str) -> Self {
        Self {
            id: 0,
            levels: Levels::new(s),
            root: true,
        }
    }

    /// The child node `id`, with the levels after the one just taken.
    fn child(&self, id: u32) -> Self {
        Self {
            id,
            levels: self.levels.clone(),
            root: false,
        }
    }
}

#[cfg(test)]
mod levels_tests {
    use super::Levels;

    #[test]
    fn levels_split_like_str_split() {
        for s in [
            "",
            "/",
            "a",
            "a/b",
            "/a",
            "a/",
            "a//b",
            "sport/tennis/#",
            "é/ü/ß",
            "$SYS/x",
        ] {
            let ours: Vec<&str> = Levels::new(s).collect();
            let std: Vec<&str> = s.split('/').collect();
            assert_eq!(ours, std, "{s:?}");
        }
    }
}
