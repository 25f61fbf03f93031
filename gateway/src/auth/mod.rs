//! Authentication: who a client is. The password file (Mosquitto `$6$`/`$7$` and
//! argon2id hashes; verification is blocking and belongs on a blocking thread) and the bans that
//! repeated failures earn, editing the password file (`passwd_file`, for `mqtt-gateway passwd`), and
//! JWT device tokens (`token`: the key set and the verdict on one token).

/// Concurrent password verifications (each is CPU-heavy by design: PBKDF2 or argon2id).
pub const AUTH_CONCURRENCY: usize = 4;

pub mod ban;
pub mod ban_manual;
pub(crate) mod hash;
pub mod passwd_file;
pub mod passwords;
pub mod token;
pub mod token_issuer;

pub use hash::{
    HashError, MAX_PBKDF2_ITERATIONS, MOSQUITTO_PBKDF2_ITERATIONS, hash_argon2id,
    hash_mosquitto_pbkdf2,
};
pub use passwords::{PasswordFile, PasswordFileError, VerifyOutcome};
