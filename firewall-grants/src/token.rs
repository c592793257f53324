//! The grant server's bearer tokens: 32 bytes from the operating system's random source,
//! written `smfg_` and base64url. The store keeps only their SHA-256 (hex): a fast hash is
//! enough for a 256-bit random secret, which cannot be guessed, unlike a password (which
//! would need a slow hash such as argon2 or bcrypt).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// What every token starts with (so that secret scanners and people recognise one).
pub const PREFIX: &str = "smfg_";

/// A new token and the hash to store for it.
pub fn generate() -> (Zeroizing<String>, String) {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    let token = Zeroizing::new(format!(
        "{PREFIX}{}",
        URL_SAFE_NO_PAD.encode(bytes.as_ref())
    ));
    let hash = hash(&token);
    (token, hash)
}

/// The SHA-256 of `token` as 64 lowercase hex digits, as the store keeps it.
pub fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_and_only_their_hash_matches() {
        let (one, one_hash) = generate();
        let (two, _) = generate();
        assert_ne!(*one, *two);
        assert!(
            one.starts_with(PREFIX) && one.len() == PREFIX.len() + 43,
            "{}",
            *one
        );
        assert_eq!(hash(&one), one_hash);
        assert_eq!(one_hash.len(), 64);
        assert_ne!(hash(&two), one_hash);
        // SHA-256("abc"), FIPS 180-2.
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
