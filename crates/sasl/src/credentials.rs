//! What the server stores for an account: SCRAM secrets (RFC 5802 section 3), never the password.
//!
//! The same secrets serve PLAIN (RFC 4616): the server re-derives `StoredKey` from the offered
//! password and the stored salt, so no plaintext or password-equivalent is ever kept.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::SaslError;

/// Length of the salts made by [`Credentials::from_password`].
const SALT_LEN: usize = 16;

/// Which hash a SCRAM mechanism uses: SHA-1 (RFC 5802) or SHA-256 (RFC 7677).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SHA-1, for SCRAM-SHA-1.
    Sha1,
    /// SHA-256, for SCRAM-SHA-256.
    Sha256,
}

impl ScramHash {
    /// `H(str)` of RFC 5802 section 2.2.
    pub(crate) fn h(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, str)` of RFC 5802 section 2.2.
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
            let mut mac =
                <M as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            ScramHash::Sha1 => run::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => run::<Hmac<Sha256>>(key, data),
        }
    }

    /// `Hi(str, salt, i)` of RFC 5802 section 2.2, which is PBKDF2 with HMAC as the PRF and the
    /// hash's output length.
    pub(crate) fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }

    /// The hash's output length in bytes, which is also the length of every SCRAM key and proof.
    pub(crate) fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// `StoredKey` and `ServerKey` from a `SaltedPassword` (RFC 5802 section 3).
    pub(crate) fn keys(self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted_password, b"Client Key");
        let stored_key = self.h(&client_key);
        let server_key = self.hmac(salted_password, b"Server Key");
        (stored_key, server_key)
    }
}

/// The per-hash secrets stored for an account (RFC 5802 section 3): never the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramSecrets {
    /// The salt sent to the client in `s=`.
    pub salt: Vec<u8>,
    /// The iteration count sent to the client in `i=`.
    pub iterations: u32,
    /// `StoredKey := H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramSecrets {
    /// Derive from a password with a given salt and iteration count
    /// (`SaltedPassword := Hi(SASLprep(password), salt, i)`, RFC 5802 section 3).
    ///
    /// # Errors
    ///
    /// [`SaslError::Saslprep`] if the password fails SASLprep (RFC 4013), and
    /// [`SaslError::ZeroIterations`] if `iterations` is zero.
    ///
    /// # Example
    ///
    /// ```
    /// use herald_sasl::{ScramHash, ScramSecrets};
    ///
    /// let secrets = ScramSecrets::derive(ScramHash::Sha256, "pencil", b"NaCl", 4096)?;
    /// assert_eq!(secrets.stored_key.len(), 32);
    /// assert_eq!(secrets.iterations, 4096);
    /// # Ok::<(), herald_sasl::SaslError>(())
    /// ```
    pub fn derive(
        hash: ScramHash,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramSecrets, SaslError> {
        if iterations == 0 {
            return Err(SaslError::ZeroIterations);
        }
        let prepared = stringprep::saslprep(password).map_err(SaslError::Saslprep)?;
        let salted_password = hash.hi(prepared.as_bytes(), salt, iterations);
        let (stored_key, server_key) = hash.keys(&salted_password);
        Ok(ScramSecrets {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        })
    }
}

/// Everything stored for one account: secrets for both hashes, each with its own salt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Secrets for SCRAM-SHA-1.
    pub sha1: ScramSecrets,
    /// Secrets for SCRAM-SHA-256, also used to check PLAIN passwords.
    pub sha256: ScramSecrets,
}

impl Credentials {
    /// Default iteration count used when creating accounts: 4096 (RFC 7677 section 4 minimum for
    /// SHA-256).
    pub const DEFAULT_ITERATIONS: u32 = 4096;

    /// Create the stored secrets for a new password, with fresh random 16-byte salts (one per
    /// hash) from the operating system.
    ///
    /// # Errors
    ///
    /// [`SaslError::Saslprep`] if the password fails SASLprep, [`SaslError::ZeroIterations`] if
    /// `iterations` is zero and [`SaslError::Random`] if no random bytes are available.
    ///
    /// # Example
    ///
    /// ```
    /// use herald_sasl::{Credentials, ScramHash};
    ///
    /// let credentials = Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS)?;
    /// assert_eq!(credentials.secrets(ScramHash::Sha256).salt.len(), 16);
    /// assert_ne!(credentials.sha1.salt, credentials.sha256.salt);
    /// # Ok::<(), herald_sasl::SaslError>(())
    /// ```
    pub fn from_password(password: &str, iterations: u32) -> Result<Credentials, SaslError> {
        let mut salts = [0; 2 * SALT_LEN];
        getrandom::fill(&mut salts).map_err(SaslError::Random)?;
        let (sha1_salt, sha256_salt) = salts.split_at(SALT_LEN);
        Ok(Credentials {
            sha1: ScramSecrets::derive(ScramHash::Sha1, password, sha1_salt, iterations)?,
            sha256: ScramSecrets::derive(ScramHash::Sha256, password, sha256_salt, iterations)?,
        })
    }

    /// The secrets for one hash.
    pub fn secrets(&self, hash: ScramHash) -> &ScramSecrets {
        match hash {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_credentials_have_different_salts_each_time() {
        let first = Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS).unwrap();
        let second = Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS).unwrap();
        assert_ne!(first.sha256.salt, second.sha256.salt);
        assert_ne!(first.sha1.salt, second.sha1.salt);
        assert_ne!(first.sha256.stored_key, second.sha256.stored_key);
        assert_eq!(first.sha256.salt.len(), SALT_LEN);
        assert_eq!(first.sha1.stored_key.len(), 20);
        assert_eq!(first.sha256.server_key.len(), 32);
    }

    #[test]
    fn fresh_credentials_verify_against_the_same_password() {
        let credentials = Credentials::from_password("pencil", 4096).unwrap();
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let stored = credentials.secrets(hash);
            let again = ScramSecrets::derive(hash, "pencil", &stored.salt, stored.iterations);
            assert_eq!(&again.unwrap(), stored);
            let wrong = ScramSecrets::derive(hash, "crayon", &stored.salt, stored.iterations);
            assert_ne!(&wrong.unwrap(), stored);
        }
    }

    #[test]
    fn secrets_are_picked_by_hash() {
        let credentials = Credentials::from_password("pencil", 1).unwrap();
        assert_eq!(credentials.secrets(ScramHash::Sha1), &credentials.sha1);
        assert_eq!(credentials.secrets(ScramHash::Sha256), &credentials.sha256);
    }

    #[test]
    fn derivation_applies_saslprep_to_the_password() {
        // RFC 4013 section 3: "I<U+00AD>X" prepares to "IX".
        let prepared = ScramSecrets::derive(ScramHash::Sha256, "IX", b"salt", 2).unwrap();
        let mapped = ScramSecrets::derive(ScramHash::Sha256, "I\u{AD}X", b"salt", 2).unwrap();
        assert_eq!(prepared, mapped);
    }

    #[test]
    fn password_with_a_control_character_is_refused() {
        let result = Credentials::from_password("pen\u{7}cil", 4096);
        assert!(matches!(result, Err(SaslError::Saslprep(_))));
    }

    #[test]
    fn zero_iterations_are_refused() {
        let result = ScramSecrets::derive(ScramHash::Sha1, "pencil", b"salt", 0);
        assert!(matches!(result, Err(SaslError::ZeroIterations)));
    }

    #[test]
    fn hi_matches_the_rfc_6070_pbkdf2_vector() {
        // RFC 6070 test case 2: P = "password", S = "salt", c = 2, dkLen = 20.
        let derived = ScramHash::Sha1.hi(b"password", b"salt", 2);
        let expected = [
            0xea, 0x6c, 0x01, 0x4d, 0xc7, 0x2d, 0x6f, 0x8c, 0xcd, 0x1e, 0xd9, 0x2a, 0xce, 0x1d,
            0x41, 0xf0, 0xd8, 0xde, 0x89, 0x57,
        ];
        assert_eq!(derived, expected);
    }
}
