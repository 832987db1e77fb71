//! Dashboard passwords: argon2id PHC strings, made by `mtctl hash-password`, checked by the
//! dashboard.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Passwords shorter than this are refused by `hash`.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Hashes `password` with argon2id (the crate's defaults: 19 MiB, 2 passes) and a random salt.
pub fn hash(password: &str) -> Result<String, String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Whether `phc` is a complete argon2 PHC string: algorithm, parameters, salt and hash.
pub fn is_valid_hash(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        h.algorithm.as_str().starts_with("argon2")
            && h.salt.is_some()
            && h.hash.is_some()
            && argon2::Params::try_from(&h).is_ok()
    })
}

/// Whether `password` matches `phc` (constant-time comparison inside argon2). A malformed hash
/// never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse battery").unwrap_or_default();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("correct horse battery", "$argon2id$garbage"));
        assert!(is_valid_hash(&h));
        assert!(!is_valid_hash("$argon2id$nonsense"));
        assert!(!is_valid_hash("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ"));
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash("correct horse battery").unwrap_or_default());
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(hash("short").is_err());
    }
}
