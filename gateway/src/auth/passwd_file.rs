//! Editing a password file in place (`mqtt-gateway passwd`): add, replace or delete one user's
//! line, keeping every other line, comment, line ending and the order as they are, and replace
//! the file atomically (temporary file in the same directory, fsync, rename, fsync of the
//! directory), so a running gateway's watcher, or Mosquitto on SIGHUP, reads the old file or the
//! new one, never half of one.
//!
//! A new file gets mode 0600; an existing one keeps its mode, owner and group (Mosquitto reads it
//! as user `mosquitto` after dropping root). A symlink is followed and its target replaced, so
//! the link stays a link. The result must load as a [`PasswordFile`] before anything is written:
//! an edit never leaves a file the gateway would refuse.
//!
//! Not handled: two `passwd` runs on the same file at the same moment (the last rename wins and
//! the other edit is lost); run them one at a time.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::passwords::{PasswordFile, PasswordFileError};

/// Mode of a password file that `passwd` creates: readable by its owner only.
pub const NEW_FILE_MODE: u32 = 0o600;

/// Longest user name (Mosquitto's limit, and MQTT's: a 16-bit length).
const MAX_USER_LEN: usize = 65_535;

/// What an edit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOutcome {
    /// The user was not in the file (or there was no file): a line was appended.
    Added,
    /// The user's line was replaced in place.
    Replaced,
    /// The user's line was removed.
    Deleted,
}

/// Why an edit was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PasswdError {
    /// The user name cannot be stored in a password file.
    #[error("invalid user name {user:?}: {why}")]
    BadUser {
        /// The name (Debug-escaped when shown).
        user: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// `--delete` of a user the file does not have.
    #[error("{}: no user {user:?}; nothing changed", .path.display())]
    NoSuchUser {
        /// The file.
        path: PathBuf,
        /// The user.
        user: String,
    },
    /// The file (as it is, or as it would be after the edit) does not load: fix it by hand first.
    #[error("{0} (the file is left unchanged)")]
    Invalid(#[source] PasswordFileError),
    /// A file operation failed.
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `user` can be a password file entry that means what it says: not empty, no `:`
/// (the separator), no control characters (a newline would inject a line; the gateway refuses
/// them in MQTT strings anyway), no leading or trailing white space (Mosquitto and the gateway
/// trim it, so the entry would name someone else), not starting with `#` (a comment).
///
/// # Errors
/// [`PasswdError::BadUser`] saying why.
pub fn check_user(user: &str) -> Result<(), PasswdError> {
    let why = if user.is_empty() {
        Some("empty")
    } else if user.contains(':') {
        Some("':' separates the user from the hash")
    } else if user.chars().any(char::is_control) {
        Some("control characters are not allowed")
    } else if user.trim() != user {
        Some("leading or trailing white space would be trimmed when the file is read")
    } else if user.starts_with('#') {
        Some("a line starting with '#' is a comment")
    } else if user.len() > MAX_USER_LEN {
        Some("longer than 65535 bytes")
    } else {
        None
    };
    match why {
        Some(why) => Err(PasswdError::BadUser {
            user: user.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// The user a line defines, as the parsers read it (`None` for comments, blank lines and lines
/// without `:`).
fn line_user(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user.trim())
}

/// Edits the text of a password file: `Some(hash)` sets `user`'s hash (its first line is
/// replaced, keeping that line's `\r` if it had one, and any later duplicate lines are dropped; or
/// a line is appended), `None` deletes every line of `user`. Returns the new text and what
/// happened, or `None` when deleting a user the text does not have.
#[must_use]
pub fn edit_text(src: &str, user: &str, hash: Option<&str>) -> Option<(String, EditOutcome)> {
    let mut out = String::with_capacity(src.len() + user.len() + hash.map_or(0, str::len) + 2);
    let mut found = false;
    // `split_inclusive` keeps each line's terminator, so untouched lines are copied byte for byte.
    for line in src.split_inclusive('\n') {
        let body = line.strip_suffix('\n').unwrap_or(line);
        let body = body.strip_suffix('\r').unwrap_or(body);
        if line_user(body) != Some(user) {
            out.push_str(line);
            continue;
        }
        if let (Some(hash), false) = (hash, found) {
            out.push_str(user);
            out.push(':');
            out.push_str(hash);
            out.push_str(line.get(body.len()..).unwrap_or(""));
        }
        found = true;
    }
    match (hash, found) {
        (None, false) => None,
        (None, true) => Some((out, EditOutcome::Deleted)),
        (Some(_), true) => Some((out, EditOutcome::Replaced)),
        (Some(hash), false) => {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(user);
            out.push(':');
            out.push_str(hash);
            out.push('\n');
            Some((out, EditOutcome::Added))
        }
    }
}

/// Sets `user`'s hash in the password file at `path` (created, mode 0600, if absent).
///
/// # Errors
/// A bad user name, an existing file that does not load, or a file error; nothing is written then.
pub fn set_user(path: &Path, user: &str, hash: &str) -> Result<EditOutcome, PasswdError> {
    edit_file(path, user, Some(hash))
}

/// Removes `user` from the password file at `path`.
///
/// # Errors
/// No such user or file, a bad user name, a file that does not load, or a file error; nothing is
/// written then.
pub fn delete_user(path: &Path, user: &str) -> Result<EditOutcome, PasswdError> {
    edit_file(path, user, None)
}

fn io_err<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> PasswdError + 'a {
    move |source| PasswdError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

fn edit_file(path: &Path, user: &str, hash: Option<&str>) -> Result<EditOutcome, PasswdError> {
    check_user(user)?;
    // Follow a symlink to the file it names: replacing the link itself would turn it into a file.
    let target = match fs::canonicalize(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && hash.is_some() => path.to_owned(),
        Err(e) => return Err(io_err(path, "cannot open")(e)),
    };
    let existing = match fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&target, "cannot open")(e)),
    };
    let src = match &existing {
        Some(_) => fs::read_to_string(&target).map_err(io_err(&target, "cannot read"))?,
        None => String::new(),
    };
    let name = path.display().to_string();
    PasswordFile::parse(&src, &name).map_err(PasswdError::Invalid)?;
    let Some((text, outcome)) = edit_text(&src, user, hash) else {
        return Err(PasswdError::NoSuchUser {
            path: path.to_owned(),
            user: user.to_owned(),
        });
    };
    PasswordFile::parse(&text, &name).map_err(PasswdError::Invalid)?;
    write_atomic(&target, text.as_bytes(), existing.as_ref())?;
    Ok(outcome)
}

/// Writes `data` to a temporary file beside `path` with the mode, owner and group of `like` (or
/// mode 0600), then renames it over `path` and syncs the directory. The temporary file is removed
/// on failure.
///
/// # Errors
/// A file error; `path` is then as it was.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    like: Option<&fs::Metadata>,
) -> Result<(), PasswdError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.passwd-{}.tmp", std::process::id()));
    let mode = like.map_or(NEW_FILE_MODE, |m| m.permissions().mode() & 0o777);
    if let Err(e) = write_then_rename(&tmp, path, data, mode, like) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable; a failure here leaves a correct file, so it is not an error.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_then_rename(
    tmp: &Path,
    path: &Path,
    data: &[u8],
    mode: u32,
    like: Option<&fs::Metadata>,
) -> Result<(), PasswdError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(io_err(tmp, "cannot create the temporary file"))?;
    // The umask may have narrowed the mode given to open(): set it exactly.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(tmp, "cannot set the mode"))?;
    if let Some(m) = like {
        let mine = f.metadata().map_err(io_err(tmp, "cannot stat"))?;
        if (mine.uid(), mine.gid()) != (m.uid(), m.gid()) {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())).map_err(io_err(
                tmp,
                "cannot give the new file the owner and group of the old one",
            ))?;
        }
    }
    f.write_all(data).map_err(io_err(tmp, "cannot write"))?;
    f.sync_all().map_err(io_err(tmp, "cannot sync"))?;
    fs::rename(tmp, path).map_err(io_err(path, "cannot replace"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::VerifyOutcome;

    const BOB: &str = "bob:$6$H4x6GM0Ll3QUI3lK$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==";
    const ALICE_HASH: &str = "$7$101$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==";

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn edit_keeps_everything_else() {
        let src = format!("# people\n{BOB}\r\n\n  carol : $6$x$y\n# end");
        // Add: appended after a newline is supplied for the unterminated last line.
        let (added, o) = edit_text(&src, "alice", Some("H1")).unwrap();
        assert_eq!(o, EditOutcome::Added);
        assert_eq!(added, format!("{src}\nalice:H1\n"));
        // Replace: in place, keeping the CRLF of that line and everything else byte for byte.
        let (replaced, o) = edit_text(&src, "bob", Some("H2")).unwrap();
        assert_eq!(o, EditOutcome::Replaced);
        assert_eq!(
            replaced,
            "# people\nbob:H2\r\n\n  carol : $6$x$y\n# end".to_owned()
        );
        // The user is matched as the parsers read it (trimmed), not as text.
        let (replaced, _) = edit_text(&src, "carol", Some("H3")).unwrap();
        assert!(replaced.contains("\ncarol:H3\n# end"), "{replaced}");
        // Delete.
        let (deleted, o) = edit_text(&src, "bob", None).unwrap();
        assert_eq!(o, EditOutcome::Deleted);
        assert_eq!(deleted, "# people\n\n  carol : $6$x$y\n# end");
        assert!(edit_text(&src, "dave", None).is_none());
        // A commented-out line is not the user's line; duplicates collapse into the first.
        let (c, o) = edit_text("#bob:old\nbob:a\nx:y\nbob:b\n", "bob", Some("H")).unwrap();
        assert_eq!(o, EditOutcome::Replaced);
        assert_eq!(c, "#bob:old\nbob:H\nx:y\n");
        assert_eq!(edit_text("", "a", Some("H")).unwrap().0, "a:H\n");
    }

    #[test]
    fn user_names_that_would_mean_something_else_are_refused() {
        for bad in [
            "", "a:b", "a\nb", "a\rb", "tab\t", "nul\0", "del\x7f", "\u{85}x", " a", "a ", "#a",
        ] {
            assert!(
                matches!(check_user(bad), Err(PasswdError::BadUser { .. })),
                "{bad:?}"
            );
        }
        for good in [
            "alice",
            "sensor-1",
            "a b",
            "ünïcødé",
            "a#b",
            "user@example.com",
        ] {
            check_user(good).unwrap();
        }
        assert!(check_user(&"x".repeat(65_536)).is_err());
    }

    #[test]
    fn new_file_is_0600_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let hash = crate::auth::hash_mosquitto_pbkdf2(b"pw", 10).unwrap();
        assert_eq!(set_user(&path, "alice", &hash).unwrap(), EditOutcome::Added);
        assert_eq!(mode(&path), 0o600);
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.verify("alice", b"pw"), VerifyOutcome::Ok);
        assert_eq!(f.verify("alice", b"pW"), VerifyOutcome::BadPassword);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn existing_file_keeps_its_mode_comments_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        fs::write(
            &path,
            format!("# managed by hand\n{BOB}\nalice:{ALICE_HASH}\n"),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        let hash = crate::auth::hash_mosquitto_pbkdf2(b"new", 10).unwrap();
        assert_eq!(
            set_user(&path, "bob", &hash).unwrap(),
            EditOutcome::Replaced
        );
        assert_eq!(mode(&path), 0o640);
        assert_ne!(
            fs::metadata(&path).unwrap().ino(),
            ino,
            "replaced by rename, not rewritten in place"
        );
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("# managed by hand\nbob:{hash}\nalice:{ALICE_HASH}\n")
        );
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.verify("bob", b"new"), VerifyOutcome::Ok);
        assert_eq!(f.verify("bob", b"secret"), VerifyOutcome::BadPassword);
        assert_eq!(f.verify("alice", b"secret"), VerifyOutcome::Ok);

        assert_eq!(delete_user(&path, "bob").unwrap(), EditOutcome::Deleted);
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("# managed by hand\nalice:{ALICE_HASH}\n")
        );
        assert!(matches!(
            delete_user(&path, "bob"),
            Err(PasswdError::NoSuchUser { .. })
        ));
        assert!(delete_user(&dir.path().join("absent"), "bob").is_err());
    }

    #[test]
    fn a_file_that_does_not_load_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        let broken = format!("{BOB}\nalice:not-a-hash\n");
        fs::write(&path, &broken).unwrap();
        let err = set_user(&path, "carol", ALICE_HASH)
            .unwrap_err()
            .to_string();
        assert!(err.contains("passwords:2:"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), broken);
        // A hash the gateway would refuse is not written either.
        fs::write(&path, format!("{BOB}\n")).unwrap();
        assert!(matches!(
            set_user(&path, "carol", "$2b$10$nope"),
            Err(PasswdError::Invalid(_))
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{BOB}\n"));
        // Nor is a bad user name.
        assert!(set_user(&path, "ev:il", ALICE_HASH).is_err());
        assert!(set_user(&path, "evil\nmallory", ALICE_HASH).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{BOB}\n"));
    }

    #[test]
    fn a_symlink_stays_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&real, format!("{BOB}\n")).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        set_user(&link, "alice", ALICE_HASH).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(&real).unwrap(),
            format!("{BOB}\nalice:{ALICE_HASH}\n")
        );
    }
}
