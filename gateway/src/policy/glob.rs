//! `*` globs for principals and client ids, with `%u` (the principal) in client-id globs.
//!
//! The only wildcard is `*` (any run of characters, including none); every other character,
//! `?` and `[` included, stands for itself. The value of `%u` is always matched literally, so a
//! principal holding `*` cannot widen a pattern.

use super::who::var_value_usable;

/// One part of a piece of a `%u` glob.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    /// Literal text.
    Lit(Box<str>),
    /// The principal (`%u`), matched literally.
    Principal,
}

/// How a client-id pattern hands out session takeovers (see [`Glob::takeover`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Takeover {
    /// `*`: any client id.
    AnyId,
    /// A `*` next to `%u`: the ids of one principal include those of another.
    PrincipalsCollide,
}

/// A compiled glob: the pieces between the `*`s.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Glob {
    /// Only `*` is special: the literal pieces (`len() - 1` stars); matched without allocating.
    Plain(Box<[Box<str>]>),
    /// With `%u`: each piece is a sequence of parts, made concrete per client.
    WithPrincipal(Box<[Box<[Part]>]>),
}

impl Glob {
    /// A glob in which only `*` is special (principal patterns).
    pub(crate) fn plain(pattern: &str) -> Self {
        Self::Plain(pattern.split('*').map(Box::from).collect())
    }

    /// A glob that matches exactly `text` (Mosquitto `user` lines).
    pub(crate) fn exact(text: &str) -> Self {
        Self::Plain(Box::new([Box::from(text)]))
    }

    /// A client-id glob: `*` and `%u` are special.
    pub(crate) fn with_principal(pattern: &str) -> Self {
        if !pattern.contains("%u") {
            return Self::plain(pattern);
        }
        let segments = pattern
            .split('*')
            .map(|segment| {
                let mut parts = Vec::new();
                let mut pieces = segment.split("%u").peekable();
                while let Some(piece) = pieces.next() {
                    if !piece.is_empty() {
                        parts.push(Part::Lit(piece.into()));
                    }
                    if pieces.peek().is_some() {
                        parts.push(Part::Principal);
                    }
                }
                parts.into_boxed_slice()
            })
            .collect();
        Self::WithPrincipal(segments)
    }

    /// The one text this glob matches, when it has no wildcard (an exact principal).
    pub(crate) fn as_exact(&self) -> Option<&str> {
        match self {
            Self::Plain(pieces) => match &**pieces {
                [only] => Some(only),
                _ => None,
            },
            Self::WithPrincipal(_) => None,
        }
    }

    /// Whether this client-id pattern lets clients take over each other's sessions: `*` alone
    /// (any id), or a `*` next to `%u` without a `/` between them (`%u-*`: principal `a` may use
    /// `a-b-1`, an id of principal `a-b`). A `/` is safe: no usable principal holds one.
    pub(crate) fn takeover(&self) -> Option<Takeover> {
        match self {
            Self::Plain(pieces) => {
                (pieces.len() > 1 && pieces.iter().all(|p| p.is_empty())).then_some(Takeover::AnyId)
            }
            Self::WithPrincipal(segments) => {
                let has = |s: &[Part]| s.contains(&Part::Principal);
                let first = segments.iter().position(|s| has(s))?;
                let last = segments.iter().rposition(|s| has(s))?;
                // A `*` before the first %u: the literal just before %u must end with '/'.
                let before_ok = first == 0
                    || segments.get(first).is_some_and(|s| {
                        let at = s.iter().position(|p| *p == Part::Principal).unwrap_or(0);
                        matches!(at.checked_sub(1).and_then(|i| s.get(i)), Some(Part::Lit(l)) if l.ends_with('/'))
                    });
                // A `*` after the last %u: the literal just after %u must start with '/'.
                let after_ok = last + 1 == segments.len()
                    || segments.get(last).is_some_and(|s| {
                        let at = s.iter().rposition(|p| *p == Part::Principal).unwrap_or(0);
                        matches!(s.get(at + 1), Some(Part::Lit(l)) if l.starts_with('/'))
                    });
                (!(before_ok && after_ok)).then_some(Takeover::PrincipalsCollide)
            }
        }
    }

    /// True when the pattern uses `%u`.
    pub(crate) fn uses_principal(&self) -> bool {
        matches!(self, Self::WithPrincipal(_))
    }

    /// Whether `text` matches. A pattern with `%u` never matches when the principal is absent
    /// or unusable (empty, or holding `+`, `#`, `/` or NUL): see [`var_value_usable`].
    pub(crate) fn matches(&self, text: &str, principal: Option<&str>) -> bool {
        let segments = match self {
            Self::Plain(pieces) => return match_segments(text, pieces),
            Self::WithPrincipal(segments) => segments,
        };
        let mut concrete: Vec<String> = Vec::with_capacity(segments.len());
        for segment in segments {
            let mut s = String::new();
            for part in segment {
                match part {
                    Part::Lit(l) => s.push_str(l),
                    Part::Principal => match principal {
                        Some(p) if var_value_usable(p) => s.push_str(p),
                        _ => return false,
                    },
                }
            }
            concrete.push(s);
        }
        match_segments(text, &concrete)
    }
}

/// `segments` are the literal pieces between `*`s (at least one).
fn match_segments<S: AsRef<str>>(text: &str, segments: &[S]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return text == first.as_ref();
    };
    let Some(after_prefix) = text.strip_prefix(first.as_ref()) else {
        return false;
    };
    let Some(mut inner) = after_prefix.strip_suffix(last.as_ref()) else {
        return false;
    };
    for piece in middle {
        let piece = piece.as_ref();
        match inner.find(piece) {
            Some(at) => match inner.get(at + piece.len()..) {
                Some(tail) => inner = tail,
                None => return false,
            },
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20, item 14: the client-id shapes that hand out session takeovers, next to those
    /// that do not.
    #[test]
    fn takeover_shapes() {
        let any = Some(Takeover::AnyId);
        let collide = Some(Takeover::PrincipalsCollide);
        for (pattern, want) in [
            ("*", any),
            ("**", any),
            ("%u-*", collide),
            ("%u*", collide),
            ("*-%u", collide),
            ("*%u", collide),
            ("%u-sensor-*", collide),
            ("dev-%u.*", collide),
            ("*%u/*", collide),
            ("%u/*", None),
            ("*/%u", None),
            ("*/%u/*", None),
            ("dev/%u/*", None),
            ("%u", None),
            ("dev-%u", None),
            ("%u-sensor", None),
            ("dev-*", None),
            ("gateway-1", None),
        ] {
            assert_eq!(Glob::with_principal(pattern).takeover(), want, "{pattern}");
        }
        // What the warning says, shown: with `%u-*` principal `a` matches an id of `a-b`.
        let g = Glob::with_principal("%u-*");
        assert!(g.matches("a-b-1", Some("a")) && g.matches("a-b-1", Some("a-b")));
        let g = Glob::with_principal("%u/*");
        assert!(g.matches("a/b-1", Some("a")) && !g.matches("a/b-1", Some("a-b")));
    }

    #[test]
    fn plain_globs() {
        let table = [
            ("sensor-*", "sensor-1", true),
            ("sensor-*", "sensor-", true),
            ("sensor-*", "sensor", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("alice", "alice", true),
            ("alice", "alice2", false),
            ("*-admin", "bob-admin", true),
            ("?", "x", false),
            ("%u", "%u", true),
        ];
        for (pattern, text, want) in table {
            assert_eq!(
                Glob::plain(pattern).matches(text, None),
                want,
                "{pattern} {text}"
            );
        }
        assert!(Glob::exact("a*b").matches("a*b", None));
        assert!(!Glob::exact("a*b").matches("aXb", None));
    }

    #[test]
    fn principal_globs() {
        let g = Glob::with_principal("%u-*");
        assert!(g.uses_principal());
        assert!(g.matches("alice-laptop", Some("alice")));
        assert!(!g.matches("alice", Some("alice")));
        assert!(!g.matches("bob-laptop", Some("alice")));
        assert!(!g.matches("alice-laptop", None));
        let exact = Glob::with_principal("%u");
        assert!(exact.matches("alice", Some("alice")));
        // The principal is literal: a '*' in it does not act as a wildcard.
        assert!(!exact.matches("anything", Some("*")));
        for hostile in ["", "a/b", "+", "#", "a\0"] {
            assert!(!exact.matches(hostile, Some(hostile)), "{hostile:?}");
        }
        assert!(!Glob::plain("%u").uses_principal());
    }
}
