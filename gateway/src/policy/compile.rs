//! From parsed rules (policy file and acl_file alike) to the compiled snapshot: rules grouped in
//! `who` classes, one topic trie per class and action, built once per snapshot and shared by
//! every client of the class.

use std::collections::HashMap;
use std::sync::Arc;

use super::glob::Glob;
use super::template::{self, Level, Var};
use super::trie::{HitKind, Trie, TrieBuilder};
use super::who::Who;
use super::{PolicyError, PolicyWarning, RuleRef};

/// The topic actions a rule names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Actions {
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) receive: bool,
}

/// Index of an action's trie in [`Class::tries`].
pub(crate) const PUBLISH: usize = 0;
pub(crate) const SUBSCRIBE: usize = 1;
pub(crate) const RECEIVE: usize = 2;

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// One topic rule, before compilation.
#[derive(Debug)]
pub(crate) struct RuleSpec {
    pub(crate) who: Who,
    pub(crate) effect: Effect,
    pub(crate) actions: Actions,
    pub(crate) topics: Vec<Box<[Level]>>,
    pub(crate) at: RuleRef,
    /// For a subscribe deny: refuse only filters it contains (Mosquitto `deny` lines), instead
    /// of every filter it overlaps.
    pub(crate) subscribe_deny_contained: bool,
}

/// One `[[connect]]` rule.
#[derive(Debug)]
pub(crate) struct ConnectSpec {
    pub(crate) who: Who,
    pub(crate) client_ids: Box<[Glob]>,
    pub(crate) at: RuleRef,
}

/// The content of one source file.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) file: Option<Arc<str>>,
    /// `[groups]`, by name.
    pub(crate) groups: Vec<(Box<str>, Who)>,
    pub(crate) connects: Vec<ConnectSpec>,
    pub(crate) rules: Vec<RuleSpec>,
    pub(crate) warnings: Vec<PolicyWarning>,
}

/// Rules that share one `who`, compiled per action.
#[derive(Debug)]
pub(crate) struct Class {
    pub(crate) who: Who,
    /// Indexed by [`PUBLISH`], [`SUBSCRIBE`], [`RECEIVE`]; `None` when the class has no rule
    /// for that action.
    pub(crate) tries: [Option<Trie>; 3],
}

/// Where connect decisions come from.
#[derive(Debug)]
pub(crate) enum ConnectRules {
    /// The policy file's `[[connect]]` rules, in order.
    Rules(Box<[ConnectSpec]>),
    /// Only an acl_file: every client that authentication let in, with any client id.
    AnyClient(RuleRef),
}

/// The compiled snapshot behind [`super::Policy`].
#[derive(Debug)]
pub(crate) struct Compiled {
    /// Rule references indexed by rule order (the numbers stored in the tries).
    pub(crate) refs: Box<[RuleRef]>,
    pub(crate) classes: Box<[Class]>,
    /// `[groups]`, by name: a client is in one when its `who` matches, or its token claims the name.
    pub(crate) groups: Box<[(Box<str>, Who)]>,
    pub(crate) connect: ConnectRules,
    pub(crate) warnings: Box<[PolicyWarning]>,
    /// Some rule uses `%u` (so client policies keep the principal).
    pub(crate) uses_principal: bool,
    /// Some rule uses `%c` (so client policies keep the client id).
    pub(crate) uses_client_id: bool,
    /// Classes whose `who` names only exact principals, by principal: a client can match them
    /// only under one of those names. Resolution at CONNECT looks its principal up here instead
    /// of testing every per-device class (100,000 device rules: a look-up, not a scan).
    pub(crate) by_principal: std::collections::HashMap<Box<str>, Vec<u32>>,
    /// Every other class, tested one by one.
    pub(crate) unindexed: Box<[u32]>,
}

impl Compiled {
    pub(crate) fn rule_count(&self) -> usize {
        let connects = match &self.connect {
            ConnectRules::Rules(r) => r.len(),
            ConnectRules::AnyClient(_) => 0,
        };
        self.refs.len() + connects
    }

    pub(crate) fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }
}

/// Compiles the policy file's and the acl_file's rules (policy file first, in file order).
///
/// # Errors
/// [`PolicyError::TooLarge`] when rule numbers or trie nodes do not fit in `u32`.
pub(crate) fn compile(
    mut policy: Option<Parsed>,
    acl: Option<Parsed>,
) -> Result<Compiled, PolicyError> {
    let acl_file = acl.as_ref().and_then(|a| a.file.clone());
    let any_file: Arc<str> = policy
        .as_ref()
        .and_then(|p| p.file.clone())
        .or_else(|| acl_file.clone())
        .unwrap_or_else(|| Arc::from("policy"));
    let too_large = || PolicyError::TooLarge {
        file: any_file.clone(),
    };
    let connect = match (&policy, acl_file) {
        (None, Some(file)) => ConnectRules::AnyClient(RuleRef { file, line: 0 }),
        _ => ConnectRules::Rules(Box::default()),
    };
    // Groups exist only in the policy file; `who` group indices point into its table.
    let groups = policy
        .as_mut()
        .map(|p| std::mem::take(&mut p.groups))
        .unwrap_or_default();
    let mut connects = Vec::new();
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    for parsed in [policy, acl].into_iter().flatten() {
        connects.extend(parsed.connects);
        rules.extend(parsed.rules);
        warnings.extend(parsed.warnings);
    }
    let connect = match connect {
        ConnectRules::Rules(_) => ConnectRules::Rules(connects.into_boxed_slice()),
        any @ ConnectRules::AnyClient(_) => any,
    };

    let mut class_of: HashMap<Who, usize> = HashMap::new();
    let mut builders: Vec<(Who, [TrieBuilder; 3])> = Vec::new();
    let mut refs = Vec::with_capacity(rules.len());
    let (mut uses_principal, mut uses_client_id) = (false, false);
    for rule in rules {
        let order = u32::try_from(refs.len()).map_err(|_| too_large())?;
        let class = match class_of.get(&rule.who) {
            Some(c) => *c,
            None => {
                let c = builders.len();
                class_of.insert(rule.who.clone(), c);
                builders.push((rule.who, Default::default()));
                c
            }
        };
        let Some((_, tries)) = builders.get_mut(class) else {
            continue;
        };
        let actions = [
            (PUBLISH, rule.actions.publish),
            (SUBSCRIBE, rule.actions.subscribe),
            (RECEIVE, rule.actions.receive),
        ];
        for topic in &rule.topics {
            uses_principal |= template::uses(topic, Var::Principal);
            uses_client_id |= template::uses(topic, Var::ClientId);
            for (action, wanted) in actions {
                let kind = match rule.effect {
                    Effect::Allow => HitKind::Allow,
                    Effect::Deny if action == SUBSCRIBE && rule.subscribe_deny_contained => {
                        HitKind::DenyContained
                    }
                    Effect::Deny => HitKind::Deny,
                };
                if let (true, Some(builder)) = (wanted, tries.get_mut(action)) {
                    builder.insert(topic, kind, order);
                }
            }
        }
        refs.push(rule.at);
    }
    let mut classes = Vec::with_capacity(builders.len());
    for (who, [p, s, r]) in builders {
        // `build` gives `None` both for "nothing inserted" and for "too many nodes".
        let build = |b: TrieBuilder| {
            let empty = b.is_empty();
            match b.build() {
                Some(t) => Ok(Some(t)),
                None if empty => Ok(None),
                None => Err(too_large()),
            }
        };
        classes.push(Class {
            who,
            tries: [build(p)?, build(s)?, build(r)?],
        });
    }
    let mut by_principal: std::collections::HashMap<Box<str>, Vec<u32>> =
        std::collections::HashMap::new();
    let mut unindexed = Vec::new();
    for (i, class) in classes.iter().enumerate() {
        let Ok(index) = u32::try_from(i) else {
            continue;
        };
        let exact: Option<Vec<&str>> = class
            .who
            .principals
            .as_ref()
            .and_then(|globs| globs.iter().map(super::glob::Glob::as_exact).collect());
        match exact {
            Some(names) if !names.is_empty() => {
                for name in names {
                    by_principal.entry(Box::from(name)).or_default().push(index);
                }
            }
            _ => unindexed.push(index),
        }
    }
    Ok(Compiled {
        by_principal,
        unindexed: unindexed.into_boxed_slice(),
        refs: refs.into_boxed_slice(),
        classes: classes.into_boxed_slice(),
        groups: groups.into_boxed_slice(),
        connect,
        warnings: warnings.into_boxed_slice(),
        uses_principal,
        uses_client_id,
    })
}
