//! Mosquitto `acl_file` (2.0 grammar, DEPENDENCIES.md §6.2) translated into rule specs of the
//! same engine, each keeping its `file:line`.
//!
//! Translation: `read` allows receive and subscribe (a SUBSCRIBE filter must be contained in a
//! read topic), `write` allows publish, `readwrite` both, `deny` denies publish and receive and
//! refuses the subscribe filters it contains. `topic` lines apply to the current `user` (before
//! any `user` line: to anonymous clients) and are not substituted; `pattern` lines apply to
//! every client, with `%u`/`%c` as whole levels; a pattern that grants access does not apply to a
//! client whose username or client id holds `+` or `#` (Mosquitto denies every pattern to them).
//! Unlike Mosquitto, which logs and skips bad lines in places, every bad line fails the file.

use std::sync::Arc;

use crate::line_file::LineFileError;

use super::compile::{Actions, Effect, Parsed, RuleSpec};
use super::template::{self, Var};
use super::who::Who;
use super::{PolicyError, PolicyWarning, RuleRef, WarningKind};

/// C `isspace`: what Mosquitto strips from the end of every line.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Parses an acl_file.
///
/// # Errors
/// [`LineFileError::Invalid`] with `file:line` for an unknown keyword or access word, a missing
/// user name or topic, an invalid topic filter, or `%u`/`%c` that is not a whole level.
pub(crate) fn parse(src: &str, file: &str) -> Result<Parsed, PolicyError> {
    let file: Arc<str> = Arc::from(file);
    let mut parsed = Parsed {
        file: Some(Arc::clone(&file)),
        ..Parsed::default()
    };
    // `None`: before any `user` line, where topic lines apply to anonymous clients.
    let mut user: Option<String> = None;
    let mut line_no: u32 = 0;
    for raw in src.split('\n') {
        line_no = line_no.saturating_add(1);
        let at = RuleRef {
            file: Arc::clone(&file),
            line: line_no,
        };
        let error = |message: String| {
            PolicyError::File(LineFileError::Invalid {
                file: file.to_string(),
                line: line_no,
                message,
            })
        };
        let line = raw.trim_end_matches(is_c_space);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // strtok(" "): runs of spaces separate tokens; nothing else does.
        let line = line.trim_start_matches(' ');
        let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim_start_matches(' ');
        match keyword {
            "user" => {
                let name = rest.trim_matches(is_c_space);
                if name.is_empty() {
                    return Err(error("`user` without a user name".into()));
                }
                user = Some(name.to_string());
            }
            "topic" | "pattern" => {
                let pattern = keyword == "pattern";
                let (access, topic) = split_access(rest).map_err(error)?;
                let topic_template = template::parse(topic, pattern).map_err(error)?;
                if pattern
                    && !template::uses(&topic_template, Var::Principal)
                    && !template::uses(&topic_template, Var::ClientId)
                {
                    parsed.warnings.push(PolicyWarning {
                        at: at.clone(),
                        message: format!(
                            "pattern {topic:?} has no %u or %c: it applies to every client"
                        ),
                        kind: WarningKind::Mistake,
                    });
                }
                let (effect, actions) = access;
                let who = match (pattern, &user, effect) {
                    (true, _, Effect::Allow) => Who {
                        clean_ids: true,
                        ..Who::default()
                    },
                    (true, _, Effect::Deny) => Who::default(),
                    (false, Some(name), _) => Who::principal(name),
                    (false, None, _) => Who::anonymous(),
                };
                parsed.rules.push(RuleSpec {
                    who,
                    effect,
                    actions,
                    topics: vec![topic_template],
                    at,
                    subscribe_deny_contained: true,
                });
            }
            other => {
                let hint = if other.contains('\t') {
                    " (tokens are separated by spaces; a tab is not a separator)"
                } else if other.starts_with('#') {
                    " (a comment must start in the first column)"
                } else {
                    ""
                };
                return Err(error(format!(
                    "unknown keyword {other:?}, expected user, topic or pattern{hint}"
                )));
            }
        }
    }
    Ok(parsed)
}

/// Splits `[read|write|readwrite|deny] <topic>`; without an access word, the access is
/// readwrite and the topic is the single remaining token.
fn split_access(rest: &str) -> Result<((Effect, Actions), &str), String> {
    let all = Actions {
        publish: true,
        subscribe: true,
        receive: true,
    };
    let (first, remainder) = rest.split_once(' ').unwrap_or((rest, ""));
    let remainder = remainder.trim_start_matches(' ');
    let access = match first {
        "read" => Some((
            Effect::Allow,
            Actions {
                subscribe: true,
                receive: true,
                ..Actions::default()
            },
        )),
        "write" => Some((
            Effect::Allow,
            Actions {
                publish: true,
                ..Actions::default()
            },
        )),
        "readwrite" => Some((Effect::Allow, all)),
        "deny" => Some((Effect::Deny, all)),
        _ => None,
    };
    match access {
        Some(_) if remainder.is_empty() => Err(format!("missing topic after {first:?}")),
        Some(access) => Ok((access, remainder)),
        None if first.is_empty() => Err("missing topic".into()),
        None if remainder.is_empty() => Ok(((Effect::Allow, all), first)),
        None => Err(format!(
            "unknown access {first:?}, expected read, write, readwrite or deny"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of_error(src: &str) -> (u32, String) {
        match parse(src, "acl") {
            Err(PolicyError::File(LineFileError::Invalid { line, message, .. })) => (line, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn grammar() {
        let p = parse(
            "# comment\n\ntopic read $SYS/#\nuser roger  \ntopic foo/bar\npattern write $SYS/broker/connection/%c/state\nuser a b\ntopic deny x y/z\n",
            "acl",
        )
        .unwrap();
        assert_eq!(p.rules.len(), 4);
        let lines: Vec<u32> = p.rules.iter().map(|r| r.at.line).collect();
        assert_eq!(lines, [3, 5, 6, 8]);
        assert_eq!(p.rules[0].who, Who::anonymous());
        assert_eq!(p.rules[1].who, Who::principal("roger"));
        assert!(p.rules[1].actions.publish && p.rules[1].actions.receive);
        assert!(p.rules[2].who.clean_ids);
        assert_eq!(p.rules[3].who, Who::principal("a b"));
        assert_eq!(p.rules[3].effect, Effect::Deny);
        assert!(p.warnings.is_empty());
        let w = parse("pattern read public/#\n", "acl").unwrap();
        assert_eq!(w.warnings.len(), 1);
    }

    #[test]
    fn bad_lines() {
        let table = [
            ("topic read a\n  # indented\n", 2, "comment"),
            ("topic\tread a\n", 1, "tab"),
            ("topic reed a/b\n", 1, "unknown access"),
            ("user\n", 1, "user name"),
            ("topic read\n", 1, "missing topic"),
            ("topic\n", 1, "missing topic"),
            ("\n\npattern read a/x%u\n", 3, "whole topic level"),
            ("topic read a/#/b\n", 1, "not a valid filter"),
            ("topic read $share/g/a\n", 1, "$share"),
            ("users alice\n", 1, "unknown keyword"),
        ];
        for (src, line, needle) in table {
            let (got_line, message) = line_of_error(src);
            assert_eq!(got_line, line, "{src:?}: {message}");
            assert!(message.contains(needle), "{src:?}: {message}");
        }
    }
}
