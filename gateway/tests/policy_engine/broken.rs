//! Broken policy files: each is refused with the right `file:line` and a message naming the key;
//! rules that can never match load with a warning naming their line.

use super::{LISTENERS, Policy, PolicyError};
use mqtt_gateway::line_file::LineFileError;

fn refused(src: &str) -> (u32, String) {
    match Policy::from_str(src, "bad.toml", LISTENERS) {
        Err(PolicyError::File(LineFileError::Invalid {
            file,
            line,
            message,
        })) => {
            assert_eq!(&*file, "bad.toml");
            (line, message)
        }
        other => panic!("expected Invalid for\n{src}\ngot {other:?}"),
    }
}

const RULE: &str = "[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"a\"]\n";

#[test]
fn broken_policies_name_file_and_line() {
    let table: &[(&str, u32, &str)] = &[
        (
            "[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            1,
            "version",
        ),
        ("version = 2\n", 1, "unsupported version 2"),
        ("version = \"1\"\n", 1, "version"),
        ("version = 1\nrules = []\n", 2, "unknown field `rules`"),
        (
            "version = 1\n\n[[rule]]\nwho = { any = true }\nalow = [\"publish\"]\ntopics = [\"a\"]\n",
            5,
            "unknown field `alow`",
        ),
        (
            "version = 1\n[[rule]]\nwho = { principal = [\"x\"] }\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            3,
            "unknown field `principal`",
        ),
        (
            "version = 1\n[[rule]]\nwho = {}\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            3,
            "`who` is empty",
        ),
        (
            "version = 1\n[[rule]]\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            2,
            "who",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ndeny = [\"receive\"]\ntopics = [\"a\"]\n",
            5,
            "not both",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\ntopics = [\"a\"]\n",
            2,
            "`allow = [...]` or `deny = [...]`",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\",\n  \"connect\"]\ntopics = [\"a\"]\n",
            5,
            "\"connect\" is not a rule action",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"pub\"]\ntopics = [\"a\"]\n",
            4,
            "unknown action \"pub\"",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = []\ntopics = [\"a\"]\n",
            4,
            "`allow` is an empty list",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = []\n",
            5,
            "`topics` is an empty list",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\n  \"ok/%u\",\n  \"a/x%u\",\n]\n",
            7,
            "whole topic level",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"a/#/b\"]\n",
            5,
            "not a valid filter",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"$share/g/a\"]\n",
            5,
            "$share",
        ),
        (
            "version = 1\n[[rule]]\nwho = { sources = [\"10.0.0.0/33\"] }\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            3,
            "`sources`",
        ),
        (
            "version = 1\n[[rule]]\nwho = { sources = [\"10.0.0.1/8\"] }\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            3,
            "host bits",
        ),
        (
            "version = 1\n[[rule]]\nwho = { any = false }\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            3,
            "`any = false`",
        ),
        (
            "version = 1\n[[rule]]\nwho = { principals = [] }\nallow = [\"publish\"]\ntopics = [\"a\"]\n",
            3,
            "`principals` is an empty list",
        ),
        (
            "version = 1\n[groups]\na = { any = true }\nb = { groups = [\"a\"] }\n",
            4,
            "cannot include other groups",
        ),
        ("version = 1\n[groups]\na = {}\n", 3, "`who` is empty"),
        (
            "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"%c\"]\n",
            4,
            "%c",
        ),
        (
            "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = []\n",
            4,
            "`client_ids` is an empty list",
        ),
        (
            "version = 1\n[[connect]]\nwho = { any = true }\nclientids = [\"*\"]\n",
            4,
            "unknown field `clientids`",
        ),
        ("version = 1\n[[rule]]\nwho = { any = true\n", 3, ""),
        (
            "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"a\"]\nextra = 1\n",
            6,
            "unknown field `extra`",
        ),
    ];
    for (src, want_line, needle) in table {
        let (line, message) = refused(src);
        assert_eq!(line, *want_line, "{src}\n=> {message}");
        assert!(message.contains(needle), "{src}\n=> {message}");
        let shown = Policy::from_str(src, "bad.toml", LISTENERS)
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with(&format!("bad.toml:{want_line}: ")),
            "{shown}"
        );
    }
}

#[test]
fn no_source_and_unreadable_files() {
    assert!(matches!(
        Policy::load(None, None, LISTENERS),
        Err(PolicyError::NoSource)
    ));
    let missing = std::path::Path::new("/nonexistent/policy.toml");
    let e = Policy::load(Some(missing), None, LISTENERS).unwrap_err();
    assert!(matches!(e, PolicyError::File(LineFileError::Read { .. })));
    assert!(
        e.to_string().starts_with("/nonexistent/policy.toml: "),
        "{e}"
    );
}

#[test]
fn rules_that_never_match_are_warnings() {
    let src = format!(
        "version = 1\n[groups]\nops = {{ any = true }}\n\
         [[rule]]\nwho = {{ groups = [\"opz\"] }}\nallow = [\"publish\"]\ntopics = [\"a\"]\n\
         [[rule]]\nwho = {{ listeners = [\"mqtts\", \"mqtt\"] }}\nallow = [\"publish\"]\ntopics = [\"a\"]\n\
         [[rule]]\nwho = {{ any = true, anonymous = true }}\nallow = [\"publish\"]\ntopics = [\"a\"]\n{RULE}"
    );
    let p = Policy::from_str(&src, "w.toml", LISTENERS).unwrap();
    let shown: Vec<String> = p.warnings().iter().map(ToString::to_string).collect();
    // An unknown group is a warning of its own kind: with token groups (`groups_claim`) it can
    // be meant, so the `who` is not "never matches" any more (`check` still refuses it when no
    // token can claim a group).
    assert_eq!(shown.len(), 3, "{shown:#?}");
    assert!(
        shown[0].starts_with("w.toml:5: warning: unknown group \"opz\""),
        "{shown:#?}"
    );
    assert_eq!(
        p.warnings()[0].kind,
        mqtt_gateway::policy::WarningKind::TokenGroup
    );
    assert!(
        shown[1].starts_with("w.toml:9: unknown listener \"mqtt\""),
        "{shown:#?}"
    );
    assert!(
        shown[2].starts_with("w.toml:13: `who` never matches"),
        "{shown:#?}"
    );
    assert_eq!(p.rule_count(), 4);
}
