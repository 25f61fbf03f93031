//! The policy file format (`policy.toml`, see the contract's policy.example.toml): serde with
//! `deny_unknown_fields` and spans, validated into rule specs whose errors and warnings name
//! `file:line` (a rule's line is its `[[rule]]` / `[[connect]]` header).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;

use crate::line_file::LineFileError;
use toml::Spanned;

use super::compile::{Actions, ConnectSpec, Effect, Parsed, RuleSpec};
use super::file_who::{RawWho, compile_who};
use super::glob::{Glob, Takeover};
use super::template::{self, Var};
use super::{PolicyError, PolicyWarning, RuleRef, WarningKind};

pub(super) type Strings = Spanned<Vec<Spanned<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<Spanned<i64>>,
    #[serde(default)]
    groups: BTreeMap<String, Spanned<RawWho>>,
    #[serde(default)]
    connect: Vec<Spanned<RawConnect>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnect {
    who: Spanned<RawWho>,
    client_ids: Strings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    who: Spanned<RawWho>,
    allow: Option<Strings>,
    deny: Option<Strings>,
    topics: Strings,
}

/// Parsing context: line starts (for line numbers), the file name, and what was learned so far.
pub(super) struct Ctx<'a> {
    /// Byte offsets of every '\n' of the source, ascending.
    pub(super) newlines: Vec<usize>,
    /// The file name, for errors, warnings and rule references.
    pub(super) file: Arc<str>,
    /// Listener names from gateway.toml (others get a warning).
    pub(super) listener_names: &'a [&'a str],
    /// `[groups]` names to their index in the group table.
    pub(super) group_index: HashMap<String, usize>,
    /// Warnings so far.
    pub(super) warnings: Vec<PolicyWarning>,
}

impl Ctx<'_> {
    /// 1-based line of a byte offset (binary search: thousands of rules stay linear).
    fn line(&self, offset: usize) -> u32 {
        let before = self.newlines.partition_point(|nl| *nl < offset);
        u32::try_from(before).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    pub(super) fn at(&self, span: &Range<usize>) -> RuleRef {
        RuleRef {
            file: Arc::clone(&self.file),
            line: self.line(span.start),
        }
    }

    pub(super) fn error(&self, span: &Range<usize>, message: impl Into<String>) -> PolicyError {
        PolicyError::File(LineFileError::Invalid {
            file: self.file.to_string(),
            line: self.line(span.start),
            message: message.into(),
        })
    }

    pub(super) fn warn(&mut self, span: &Range<usize>, message: impl Into<String>) {
        self.warn_as(span, message, WarningKind::Mistake);
    }

    pub(super) fn warn_as(
        &mut self,
        span: &Range<usize>,
        message: impl Into<String>,
        kind: WarningKind,
    ) {
        let at = self.at(span);
        self.warnings.push(PolicyWarning {
            at,
            message: message.into(),
            kind,
        });
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(src: &str, offset: usize) -> u32 {
    let before = src.get(..offset).unwrap_or(src);
    let newlines = before.bytes().filter(|b| *b == b'\n').count();
    u32::try_from(newlines).map_or(u32::MAX, |n| n.saturating_add(1))
}

/// The dotted key path without the markers `toml::Spanned` puts in it.
fn key_path(path: &str) -> String {
    path.split('.')
        .filter(|s| *s != "$__serde_spanned_private_value")
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses and validates a policy file.
///
/// # Errors
/// [`LineFileError::Invalid`] with `file:line` for TOML errors, unknown keys, a missing or wrong
/// `version`, and every invalid value.
pub(crate) fn parse(src: &str, file: &str, listener_names: &[&str]) -> Result<Parsed, PolicyError> {
    let file: Arc<str> = Arc::from(file);
    let toml_error = |e: &toml::de::Error, path: Option<String>| {
        PolicyError::File(LineFileError::Invalid {
            file: file.to_string(),
            line: e.span().map_or(1, |s| line_of(src, s.start)),
            message: match path {
                Some(path) if path != "." => format!("`{path}`: {}", e.message().trim_end()),
                _ => e.message().trim_end().to_string(),
            },
        })
    };
    let de = toml::Deserializer::parse(src).map_err(|e| toml_error(&e, None))?;
    let raw: RawPolicy = serde_path_to_error::deserialize(de)
        .map_err(|e| toml_error(e.inner(), Some(key_path(&e.path().to_string()))))?;
    let mut ctx = Ctx {
        newlines: src
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect(),
        file: Arc::clone(&file),
        listener_names,
        group_index: raw
            .groups
            .keys()
            .enumerate()
            .map(|(i, k)| (k.clone(), i))
            .collect(),
        warnings: Vec::new(),
    };
    match &raw.version {
        None => return Err(ctx.error(&(0..0), "missing `version = 1` at the top of the file")),
        Some(v) if *v.get_ref() != 1 => {
            return Err(ctx.error(
                &v.span(),
                format!(
                    "`version`: unsupported version {} (this gateway reads version 1)",
                    v.get_ref()
                ),
            ));
        }
        Some(_) => {}
    }
    let mut groups = Vec::with_capacity(raw.groups.len());
    for (name, who) in &raw.groups {
        groups.push((Box::from(name.as_str()), compile_who(&mut ctx, who, true)?));
    }
    let mut connects = Vec::with_capacity(raw.connect.len());
    for c in &raw.connect {
        connects.push(compile_connect(&mut ctx, c)?);
    }
    let mut rules = Vec::with_capacity(raw.rule.len());
    for r in &raw.rule {
        rules.push(compile_rule(&mut ctx, r)?);
    }
    Ok(Parsed {
        file: Some(file),
        groups,
        connects,
        rules,
        warnings: ctx.warnings,
    })
}

/// The entries of a list that must not be empty.
pub(super) fn non_empty<'s>(
    ctx: &Ctx<'_>,
    list: &'s Strings,
    key: &str,
) -> Result<&'s [Spanned<String>], PolicyError> {
    if list.get_ref().is_empty() {
        return Err(ctx.error(&list.span(), format!("`{key}` is an empty list")));
    }
    Ok(list.get_ref())
}

fn compile_connect(
    ctx: &mut Ctx<'_>,
    raw: &Spanned<RawConnect>,
) -> Result<ConnectSpec, PolicyError> {
    let c = raw.get_ref();
    let who = compile_who(ctx, &c.who, false)?;
    let mut client_ids = Vec::new();
    for id in non_empty(ctx, &c.client_ids, "client_ids")? {
        if id.get_ref().contains("%c") {
            return Err(ctx.error(
                &id.span(),
                "`client_ids`: %c cannot be used here (it is the client id itself)",
            ));
        }
        let glob = Glob::with_principal(id.get_ref());
        match glob.takeover() {
            Some(Takeover::AnyId) => ctx.warn_as(
                &id.span(),
                format!(
                    "client id pattern {:?} lets every client of this rule connect with any client id, \
                     so it can take over any device's session (a CONNECT with a client id in use \
                     ends the session holding it); give each client its own ids, e.g. \"%u\" or \"%u/*\"",
                    id.get_ref()
                ),
                WarningKind::Takeover,
            ),
            Some(Takeover::PrincipalsCollide) => ctx.warn_as(
                &id.span(),
                format!(
                    "client id pattern {:?} lets principals collide: `*` next to %u matches part of \
                     a longer principal (with \"%u-*\", principal \"a\" may use \"a-b-1\", an id of \
                     principal \"a-b\"), so one can take over the other's sessions; separate %u from \
                     `*` with `/`, which no principal may hold (\"%u/*\"), or drop the `*`",
                    id.get_ref()
                ),
                WarningKind::Takeover,
            ),
            None => {}
        }
        client_ids.push(glob);
    }
    if who.anonymous && client_ids.iter().all(Glob::uses_principal) {
        ctx.warn(
            &raw.span(),
            "anonymous clients have no principal, so client ids with %u never match them",
        );
    }
    Ok(ConnectSpec {
        who,
        client_ids: client_ids.into_boxed_slice(),
        at: ctx.at(&raw.span()),
    })
}

fn compile_rule(ctx: &mut Ctx<'_>, raw: &Spanned<RawRule>) -> Result<RuleSpec, PolicyError> {
    let r = raw.get_ref();
    let who = compile_who(ctx, &r.who, false)?;
    let (effect, list) = match (&r.allow, &r.deny) {
        (Some(list), None) => (Effect::Allow, list),
        (None, Some(list)) => (Effect::Deny, list),
        (Some(_), Some(list)) => {
            return Err(ctx.error(
                &list.span(),
                "a rule has either `allow` or `deny`, not both: write two rules",
            ));
        }
        (None, None) => {
            return Err(ctx.error(
                &raw.span(),
                "a rule needs `allow = [...]` or `deny = [...]`",
            ));
        }
    };
    let key = if effect == Effect::Allow {
        "allow"
    } else {
        "deny"
    };
    let mut actions = Actions::default();
    for a in non_empty(ctx, list, key)? {
        match a.get_ref().as_str() {
            "publish" => actions.publish = true,
            "subscribe" => actions.subscribe = true,
            "receive" => actions.receive = true,
            "connect" => {
                return Err(ctx.error(
                    &a.span(),
                    format!("`{key}`: \"connect\" is not a rule action: use a [[connect]] rule"),
                ));
            }
            other => {
                return Err(ctx.error(
                    &a.span(),
                    format!("`{key}`: unknown action {other:?} (expected \"publish\", \"subscribe\" or \"receive\")"),
                ));
            }
        }
    }
    let mut topics = Vec::new();
    for t in non_empty(ctx, &r.topics, "topics")? {
        topics.push(
            template::parse(t.get_ref(), true)
                .map_err(|m| ctx.error(&t.span(), format!("`topics`: {m}")))?,
        );
    }
    if effect == Effect::Allow
        && who.anonymous
        && topics.iter().all(|t| template::uses(t, Var::Principal))
    {
        ctx.warn(
            &raw.span(),
            "anonymous clients have no principal, so topics with %u never match them",
        );
    }
    Ok(RuleSpec {
        who,
        effect,
        actions,
        topics,
        at: ctx.at(&raw.span()),
        subscribe_deny_contained: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a\nb", 100), 2);
    }
}
