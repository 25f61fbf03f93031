//! Authentication: who a client is. For now, the password file (Mosquitto `$6$`/`$7$` and
//! argon2id hashes); verification is blocking and belongs on a blocking thread.

mod hash;
pub mod passwords;

pub use hash::{HashError, MOSQUITTO_PBKDF2_ITERATIONS, hash_argon2id, hash_mosquitto_pbkdf2};
pub use passwords::{PasswordFile, PasswordFileError, VerifyOutcome};
