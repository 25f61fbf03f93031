//! The policy: an immutable, compiled snapshot of who may connect as which client id and who may
//! publish, subscribe to and receive which topics, loaded from a policy file (`policy.toml`), a
//! Mosquitto `acl_file`, or both. Pure: no I/O but reading the two files in [`Policy::load`].
//!
//! # Decisions
//! A matching deny beats any allow; when nothing matches the answer is deny. The rule that
//! decided (the first deny in file order, else the first allow) is named by [`RuleRef`]
//! (`file:line`). [`Policy::resolve`] runs once per client at CONNECT: it picks the rules whose
//! `who` matches; every later decision ([`ClientPolicy::publish`] and friends) is a walk of a
//! precompiled topic trie, without allocation (`trie.rs`, `walk.rs`).
//!
//! # Choices where the contract is silent
//! - **Subscribe vs deny rules.** A policy-file `deny = ["subscribe"]` refuses every filter that
//!   *overlaps* it (some topic matches both): a deny on `a/b` refuses `a/#` and `a/+`, because
//!   that subscription would deliver `a/b` (and, as a member of a `$share` group, take `a/b`
//!   messages away from the other members only to drop them). Narrower filters stay allowed.
//! - **Mosquitto `deny` lines** deny publish and receive per topic, and refuse a SUBSCRIBE
//!   filter only when the deny line *contains* all of it: Mosquitto never judges SUBSCRIBE and
//!   filters per delivered message, so `topic read x/#` + `topic deny x/secret` must still let a
//!   client subscribe to `x/#`; the receive deny keeps `x/secret` out.
//! - **Unusable `%u`/`%c` values** (empty, `+`, `#`, `/`, NUL, or a leading `$` when the variable
//!   is the first level): allow rules do not match; deny rules fail closed and deny everything
//!   at and below the variable's parent level. A client without a principal simply matches no
//!   `%u` rule (as in Mosquitto).
//! - **Only an acl_file**: every client that authentication let in may connect with any client
//!   id (Mosquitto has no connect rules); the decision names the acl file with line 0. With a
//!   policy file, connect rules come from the policy file only.
//! - **Mosquitto translation is stricter than Mosquitto** in two ways: deny beats allow across
//!   user lines and patterns (Mosquitto lets a user line's grant win over a pattern deny), and
//!   `%u`/`%c` must be a whole topic level in patterns.

mod acl;
mod compile;
mod file;
mod file_who;
mod glob;
mod mosquitto_acl;
mod template;
mod trie;
mod walk;
mod who;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use crate::line_file::LineFileError;
pub use acl::ClientPolicy;
use compile::Compiled;

/// What a client asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// CONNECT with a client id (`[[connect]]` rules).
    Connect,
    /// PUBLISH from the client, and its Will at CONNECT.
    Publish,
    /// One filter of a SUBSCRIBE (for `$share/<group>/<filter>`: `<filter>`).
    Subscribe,
    /// A PUBLISH the broker delivers to the client.
    Receive,
}

impl Action {
    /// Its `acl_denied_total` label (which also has [`AclAction::Will`], a publish judged at
    /// CONNECT).
    ///
    /// [`AclAction::Will`]: crate::labels::AclAction::Will
    #[must_use]
    pub const fn label(self) -> crate::labels::AclAction {
        use crate::labels::AclAction;
        match self {
            Self::Connect => AclAction::Connect,
            Self::Publish => AclAction::Publish,
            Self::Subscribe => AclAction::Subscribe,
            Self::Receive => AclAction::Receive,
        }
    }

    /// The metric / audit label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        self.label().as_str()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the policy knows about a client when it connects.
#[derive(Clone, Copy, Debug)]
pub struct ClientFacts<'a> {
    /// The authenticated principal; `None` for anonymous clients.
    pub principal: Option<&'a str>,
    /// The client id of the CONNECT.
    pub client_id: &'a str,
    /// Organizational units of the client certificate.
    pub cert_ous: &'a [String],
    /// Name of the listener the client connected to.
    pub listener: &'a str,
    /// The client's address (IPv4-mapped IPv6 is treated as IPv4).
    pub source: IpAddr,
    /// Let in by `allow_anonymous`, without credentials.
    pub anonymous: bool,
    /// The groups the client's token claims (`auth.token.groups_claim`): it is in each `[groups]`
    /// entry of those names, and in groups named in a `who` without a `[groups]` entry.
    pub groups: &'a [String],
}

/// Where a rule is written: `file:line` (line 0: the file as a whole, an implicit rule).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// File name as given to the loader.
    pub file: Arc<str>,
    /// 1-based line of the rule's header (`[[rule]]`, `[[connect]]`, or the acl_file line).
    pub line: u32,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// The answer to one question, with the rule that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// The deny that won, or the allow; `None` when nothing matched (default deny).
    pub rule: Option<RuleRef>,
}

impl Decision {
    /// Denied because no rule matched.
    pub const DEFAULT_DENY: Self = Self {
        allowed: false,
        rule: None,
    };
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allow" } else { "deny" };
        match &self.rule {
            Some(rule) => write!(f, "{verdict} ({rule})"),
            None => write!(f, "{verdict} (no rule matched)"),
        }
    }
}

/// Something legal that is probably a mistake (a rule that can never match), or that hands out
/// session takeovers, for `check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWarning {
    /// Where.
    pub at: RuleRef,
    /// What.
    pub message: String,
    /// How `check` treats it.
    pub kind: WarningKind,
}

/// How `check` treats a [`PolicyWarning`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarningKind {
    /// A rule that can never match, or does not do what it was written to do: `check` refuses
    /// the policy.
    Mistake,
    /// Legal and perhaps meant, but it lets clients take over other clients' sessions (a CONNECT
    /// with a client id in use ends the session that holds it, [MQTT-3.1.4-3]): `check` prints
    /// it and still succeeds.
    Takeover,
    /// A group named in a `who` without a `[groups]` entry: only clients whose token claims it
    /// are in it. `check` refuses it unless `auth.token.groups_claim` is set (then it may be
    /// meant: a group only tokens give).
    TokenGroup,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WarningKind::Mistake => write!(f, "{}: {}", self.at, self.message),
            WarningKind::Takeover | WarningKind::TokenGroup => {
                write!(f, "{}: warning: {}", self.at, self.message)
            }
        }
    }
}

/// Why a policy was refused. Every error about a file's content names `file:line`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Neither a policy file nor an acl_file was given.
    #[error("no policy: configure a policy file, a Mosquitto acl_file, or both")]
    NoSource,
    /// A file could not be read ([`LineFileError::Read`]), or its content is wrong at `file:line`
    /// ([`LineFileError::Invalid`], the message naming the key).
    #[error(transparent)]
    File(#[from] LineFileError),
    /// More rules or trie nodes than the compiled form can index (over 4 billion).
    #[error("{file}: the policy is too large")]
    TooLarge {
        /// The file.
        file: Arc<str>,
    },
}

/// The compiled, immutable policy snapshot. Cheap to clone (one `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct Policy {
    compiled: Arc<Compiled>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rule_count())
            .field("who_classes", &self.compiled.classes.len())
            .field("warnings", &self.compiled.warnings.len())
            .finish()
    }
}

// === impl Policy ===

impl Policy {
    /// Loads and compiles the policy file and/or the Mosquitto acl_file. `listener_names` are
    /// the names from gateway.toml (rules naming others get a warning).
    ///
    /// # Errors
    /// [`PolicyError::NoSource`] when both are `None`; unreadable files; any invalid content,
    /// with `file:line`.
    pub fn load(
        policy_file: Option<&Path>,
        mosquitto_acl_file: Option<&Path>,
        listener_names: &[&str],
    ) -> Result<Self, PolicyError> {
        let policy = policy_file.map(crate::line_file::read).transpose()?;
        let acl = mosquitto_acl_file.map(crate::line_file::read).transpose()?;
        Self::from_sources(
            policy.as_ref().map(|(s, n)| (s.as_str(), n.as_str())),
            acl.as_ref().map(|(s, n)| (s.as_str(), n.as_str())),
            listener_names,
        )
    }

    /// Compiles a policy file given as text; `file_name` is used in errors and rule references.
    ///
    /// # Errors
    /// Any invalid content, with `file:line`.
    pub fn from_str(
        src: &str,
        file_name: &str,
        listener_names: &[&str],
    ) -> Result<Self, PolicyError> {
        Self::from_sources(Some((src, file_name)), None, listener_names)
    }

    /// Compiles from text: `(source, file name)` of a policy file and/or of a Mosquitto acl_file.
    ///
    /// # Errors
    /// As [`Policy::load`].
    pub fn from_sources(
        policy_file: Option<(&str, &str)>,
        mosquitto_acl_file: Option<(&str, &str)>,
        listener_names: &[&str],
    ) -> Result<Self, PolicyError> {
        if policy_file.is_none() && mosquitto_acl_file.is_none() {
            return Err(PolicyError::NoSource);
        }
        let policy = policy_file
            .map(|(src, name)| file::parse(src, name, listener_names))
            .transpose()?;
        let acl = mosquitto_acl_file
            .map(|(src, name)| mosquitto_acl::parse(src, name))
            .transpose()?;
        Ok(Self {
            compiled: Arc::new(compile::compile(policy, acl)?),
        })
    }

    /// Number of rules: `[[connect]]` and `[[rule]]` entries plus translated acl_file lines.
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.compiled.rule_count()
    }

    /// Rules that can never match (unknown group or listener, contradictory `who`, …).
    #[must_use]
    pub fn warnings(&self) -> &[PolicyWarning] {
        self.compiled.warnings()
    }

    /// The per-client view, computed once at CONNECT (and again on each new policy generation).
    #[must_use]
    pub fn resolve(&self, client: &ClientFacts<'_>) -> ClientPolicy {
        ClientPolicy::resolve(&self.compiled, client)
    }

    /// One decision, for `policy explain`: the same answer as `resolve(client).decide(..)`.
    #[must_use]
    pub fn explain(
        &self,
        client: &ClientFacts<'_>,
        action: Action,
        topic_or_filter: &str,
    ) -> Decision {
        self.resolve(client).decide(action, topic_or_filter)
    }
}
