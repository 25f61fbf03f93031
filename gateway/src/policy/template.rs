//! Rule topic filters as templates: validated with `mqtt_inspect::topic`, split into levels, with
//! `%u` (principal) and `%c` (client id) allowed only as a whole level.

use mqtt_inspect::TopicFilter;

/// Longest rule filter, in levels. Real topics have a handful; the cap bounds the depth of the
/// compiled trie and so the recursion of every decision.
pub(crate) const MAX_LEVELS: usize = 128;

/// A variable of a rule topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Var {
    /// `%u`: the principal.
    Principal,
    /// `%c`: the client id.
    ClientId,
}

/// One level of a rule topic filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Level {
    /// A literal level (may be empty).
    Lit(Box<str>),
    /// `+`.
    Plus,
    /// `#` (always the last level).
    Hash,
    /// `%u` or `%c` as a whole level.
    Var(Var),
}

/// Parses a rule topic filter. With `vars`, a level that is exactly `%u` or `%c` is a variable
/// and `%u`/`%c` inside a longer level is refused; without, every level is literal (Mosquitto
/// `topic` lines, which Mosquitto does not substitute).
///
/// # Errors
/// A message (without location) for an invalid filter, a `$share/` prefix, a variable that is not
/// a whole level, or more than [`MAX_LEVELS`] levels.
pub(crate) fn parse(filter: &str, vars: bool) -> Result<Box<[Level]>, String> {
    if filter.starts_with("$share/") {
        return Err(format!(
            "topic {filter:?}: rules are written without the `$share/<group>/` prefix \
             (a shared subscription is judged by its inner filter)"
        ));
    }
    TopicFilter::new(filter).map_err(|e| format!("topic {filter:?} is not a valid filter: {e}"))?;
    let count = filter.split('/').count();
    if count > MAX_LEVELS {
        return Err(format!(
            "topic {filter:?} has {count} levels, more than the limit of {MAX_LEVELS}"
        ));
    }
    filter
        .split('/')
        .map(|level| match level {
            "+" => Ok(Level::Plus),
            "#" => Ok(Level::Hash),
            "%u" if vars => Ok(Level::Var(Var::Principal)),
            "%c" if vars => Ok(Level::Var(Var::ClientId)),
            _ if vars && (level.contains("%u") || level.contains("%c")) => Err(format!(
                "topic {filter:?}: %u and %c must be a whole topic level (found {level:?})"
            )),
            lit => Ok(Level::Lit(lit.into())),
        })
        .collect()
}

/// Whether the template uses a variable.
pub(crate) fn uses(template: &[Level], var: Var) -> bool {
    template.contains(&Level::Var(var))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(
            parse("factory/%u/+/#", true).unwrap().as_ref(),
            &[
                Level::Lit("factory".into()),
                Level::Var(Var::Principal),
                Level::Plus,
                Level::Hash
            ]
        );
        assert_eq!(
            parse("a/%c", false).unwrap().as_ref(),
            &[Level::Lit("a".into()), Level::Lit("%c".into())]
        );
        assert_eq!(
            parse("a/50%", true).unwrap().as_ref(),
            &[Level::Lit("a".into()), Level::Lit("50%".into())]
        );
    }

    #[test]
    fn refuses_bad_filters() {
        for bad in [
            "",
            "a/#/b",
            "a+",
            "a/x%u",
            "%c-x",
            "$share/g/a",
            "a\0b",
            "%u%c",
        ] {
            assert!(parse(bad, true).is_err(), "{bad:?}");
        }
        assert!(parse("a/x%u", false).is_ok());
        let deep = vec!["a"; MAX_LEVELS + 1].join("/");
        assert!(parse(&deep, true).is_err());
        assert!(parse(&vec!["a"; MAX_LEVELS].join("/"), true).is_ok());
    }
}
