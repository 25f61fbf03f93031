//! The password file: real `mosquitto_passwd` 2.0.11 lines (DEPENDENCIES.md §6.1, password
//! `secret`), argon2id, unknown users, malformed lines with their line numbers, fingerprints, and
//! `$7$` lines of our own accepted by our verifier and by a real Mosquitto.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mqtt_gateway::auth::{
    PasswordFile, PasswordFileError, VerifyOutcome, hash_argon2id, hash_mosquitto_pbkdf2,
};
use mqtt_gateway::line_file::Entries as _;

const ALICE: &str = "alice:$7$101$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==";
const BOB: &str = "bob:$6$H4x6GM0Ll3QUI3lK$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==";
const CAROL: &str = "carol:$7$210000$JpkWWGFjqVw7jizM$atJazgTQuCkqgJv5Gk9anniqSS8RdNkTXzfhaaM4pblmfWygL2kw3nswZgD/iuNp1AR8jktgpxaCCeRA4OTF3g==";

/// Contract ("Command line", `passwd`) and DESIGN §2 (layout): "password file: Mosquitto
/// $6$/$7$ and argon2id".
#[test]
fn mosquitto_sample_lines_verify() {
    let src = format!("# made by mosquitto_passwd 2.0.11\n\n{ALICE}\r\n{BOB}\n{CAROL}\n");
    let f = PasswordFile::parse(&src, "passwords").unwrap();
    assert_eq!(f.len(), 3);
    assert_eq!(f.verify("alice", b"secret"), VerifyOutcome::Ok);
    assert_eq!(f.verify("alice", b"Secret"), VerifyOutcome::BadPassword);
    assert_eq!(f.verify("bob", b"secret"), VerifyOutcome::Ok);
    assert_eq!(f.verify("bob", b"secret "), VerifyOutcome::BadPassword);
    assert_eq!(f.verify("bob", b""), VerifyOutcome::BadPassword);
    // 210000 PBKDF2 iterations are slow in a debug build: once.
    let start = Instant::now();
    assert_eq!(f.verify("carol", b"secret"), VerifyOutcome::Ok);
    eprintln!("$7$ 210000 iterations, debug build: {:?}", start.elapsed());
    assert_eq!(f.verify("mallory", b"secret"), VerifyOutcome::UnknownUser);
    assert!(f.contains("carol") && !f.contains("mallory"));
    assert!(!f.contains("Alice"), "user names are case-sensitive");
}

/// Contract ("Command line"): `passwd` writes "argon2id by default".
#[test]
fn argon2id_lines_verify() {
    let phc = hash_argon2id(b"hunter2").unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let f = PasswordFile::parse(&format!("dave:{phc}\n{BOB}\n"), "p").unwrap();
    assert_eq!(f.verify("dave", b"hunter2"), VerifyOutcome::Ok);
    assert_eq!(f.verify("dave", b"hunter3"), VerifyOutcome::BadPassword);
    assert_eq!(f.verify("erin", b"hunter2"), VerifyOutcome::UnknownUser);
    assert_ne!(
        hash_argon2id(b"hunter2").unwrap(),
        phc,
        "a fresh salt each time"
    );
}

/// Contract ("Command line"): "`--mosquitto` writes a `$7$` hash that Mosquitto itself accepts".
#[test]
fn our_mosquitto_lines_verify() {
    let line = hash_mosquitto_pbkdf2(b"s3cret", 101).unwrap();
    let parts: Vec<&str> = line.split('$').collect();
    assert_eq!(parts[..3], ["", "7", "101"], "{line}");
    assert_eq!(
        B64.decode(parts[3]).unwrap().len(),
        12,
        "Mosquitto 2.0 needs a 12-byte salt"
    );
    assert_eq!(B64.decode(parts[4]).unwrap().len(), 64);
    let f = PasswordFile::parse(&format!("frank:{line}\n"), "p").unwrap();
    assert_eq!(f.verify("frank", b"s3cret"), VerifyOutcome::Ok);
    assert_eq!(f.verify("frank", b"secret"), VerifyOutcome::BadPassword);
    assert!(hash_mosquitto_pbkdf2(b"x", 0).is_err());
}

/// Contract ("Command line"): `check` "prints what is wrong with file:line"; DESIGN §3: "Fail
/// closed."
#[test]
fn malformed_lines_name_their_line() {
    let table: &[(&str, u32, &str)] = &[
        ("alice\n", 1, "no ':'"),
        ("# c\n\n  :$6$x$y\n", 3, "empty user name"),
        ("alice:\n", 1, "empty hash"),
        ("alice:   \n", 1, "empty hash"),
        ("alice:secret\n", 1, "unsupported hash"),
        (
            "alice:$2b$10$abcdefghijklmnopqrstuv\n",
            1,
            "unsupported hash",
        ),
        (
            "alice:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\n",
            1,
            "only argon2id",
        ),
        ("alice:$argon2id$v=19$m=nope\n", 1, "argon2id"),
        ("alice:$6$H4x6GM0Ll3QUI3l$aWg4\n", 1, "base64"),
        (
            "alice:$6$AAAA$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==\n",
            1,
            "12 bytes",
        ),
        ("alice:$6$H4x6GM0Ll3QUI3lK$AAAA\n", 1, "64 bytes"),
        ("alice:$6$H4x6GM0Ll3QUI3lK\n", 1, "$6$<salt>$<hash>"),
        (
            "alice:$7$0$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==\n",
            1,
            "at least 1",
        ),
        (
            "alice:$7$10x$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==\n",
            1,
            "at least 1",
        ),
        ("alice:$7$101$qOYqe1PsLjoCK/CE\n", 1, "$7$<iterations>"),
        (
            "alice:$7$10000001$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==\n",
            1,
            "denial of service",
        ),
        (
            "alice:$argon2id$v=19$m=2000000,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g\n",
            1,
            "memory",
        ),
        (
            "alice:$7$101$AAAA$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==\n",
            1,
            "salt",
        ),
        (
            "x:$6$H4x6GM0Ll3QUI3lK$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==:extra\n",
            1,
            "second ':'",
        ),
    ];
    for (src, want_line, needle) in table {
        match PasswordFile::parse(src, "pw") {
            Err(e @ PasswordFileError::Invalid { line, .. }) => {
                let shown = e.to_string();
                assert_eq!(line, *want_line, "{src:?}: {shown}");
                assert!(shown.starts_with(&format!("pw:{want_line}: ")), "{shown}");
                assert!(shown.contains(needle), "{src:?}: {shown}");
                for secret in ["H4x6GM0Ll3QUI3lK", "JL5lDygz", "aWg4", "secret"] {
                    assert!(!shown.contains(secret), "the hash leaked: {shown}");
                }
            }
            other => panic!("{src:?}: expected an error, got {other:?}"),
        }
    }
    let dup = format!("{ALICE}\n# again\n{}\n", BOB.replace("bob", "alice"));
    let e = PasswordFile::parse(&dup, "pw").unwrap_err().to_string();
    assert!(
        e.starts_with("pw:3: user \"alice\" is already defined on line 1"),
        "{e}"
    );
    let missing = PasswordFile::load(std::path::Path::new("/nonexistent/pw")).unwrap_err();
    assert!(matches!(missing, PasswordFileError::Read { .. }));
}

/// DESIGN §3: "Revocation reaches live sessions. A new CRL, password file or policy generation is
/// checked against every live connection" (a changed hash is a changed fingerprint).
#[test]
fn fingerprints_follow_the_stored_hash() {
    let before = PasswordFile::parse(&format!("{ALICE}\n{BOB}\n"), "p").unwrap();
    let same = PasswordFile::parse(&format!("{BOB}\n  {ALICE}  \n"), "p").unwrap();
    let changed = PasswordFile::parse(&format!("{}\n", BOB.replace("bob", "alice")), "p").unwrap();
    let fp = before.fingerprint("alice").unwrap();
    assert_eq!(same.fingerprint("alice"), Some(fp));
    assert_ne!(changed.fingerprint("alice"), Some(fp));
    assert_eq!(changed.fingerprint("bob"), None);
    assert_ne!(before.fingerprint("bob"), Some(fp));
}

/// DESIGN §3: "Secrets stay put. ... credential types have a redacting `Debug`".
#[test]
fn debug_never_shows_hashes() {
    let f = PasswordFile::parse(&format!("{ALICE}\n{BOB}\n"), "p").unwrap();
    let shown = format!("{f:?}");
    assert!(
        !shown.contains("qOYq") && !shown.contains("alice"),
        "{shown}"
    );
}

/// Mosquitto 2.0 itself accepts a `$7$` line from `hash_mosquitto_pbkdf2` and refuses a wrong
/// password. Needs `mosquitto` and `mosquitto_pub` (the test command installs them): fails when
/// they are missing, never passes without having run. Runs its own
/// broker (loopback, password file, no anonymous): upstream-broker/start.sh has no password file.
///
/// Contract ("Command line"): "`--mosquitto` writes a `$7$` hash that Mosquitto itself accepts".
#[test]
fn real_mosquitto_accepts_our_pbkdf2_lines() {
    let have = |bin: &str| {
        Command::new(bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    assert!(
        have("mosquitto") && have("mosquitto_pub"),
        "mosquitto and mosquitto_pub are needed (bash scripts/test.sh installs them)"
    );
    let dir = scratch_dir();
    let line = hash_mosquitto_pbkdf2(b"pa55word", 1000).unwrap();
    std::fs::write(dir.join("passwords"), format!("gary:{line}\n")).unwrap();
    let port = e2e::free_port();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n{}",
        dir.join("passwords").display(),
        if root { "user root\n" } else { "" }
    );
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let publish = |password: &str| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                "gary",
                "-P",
                password,
            ])
            .args(["-t", "t", "-m", "m", "-q", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    let good = publish("pa55word");
    let bad = publish("pa55word!");
    broker.kill().unwrap();
    broker.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(good.success(), "Mosquitto refused our $7$ line: {good}");
    assert!(!bad.success(), "Mosquitto accepted a wrong password");
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("gw-passwords-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
