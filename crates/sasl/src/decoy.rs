//! Stand-in secrets for accounts that do not exist.
//!
//! RFC 5802 section 7 lets a server hide the real reason for a failure "in order to prevent
//! information disclosure". To make an unknown user indistinguishable from a wrong password, the
//! server answers with a salt that looks real: it is derived from the username and a per-process
//! random key, so asking twice gives the same salt (as it would for a real account) while nobody
//! outside the process can predict it. The keys are derived the same way and can never verify,
//! because the exchange fails for decoys regardless of the proof.

use std::sync::OnceLock;

use crate::{Credentials, ScramHash, ScramSecrets};

/// The per-process key the decoys are derived from; random, made on first use.
static PROCESS_KEY: OnceLock<[u8; 32]> = OnceLock::new();

fn process_key() -> Result<&'static [u8; 32], getrandom::Error> {
    if let Some(key) = PROCESS_KEY.get() {
        return Ok(key);
    }
    let mut key = [0; 32];
    getrandom::fill(&mut key)?;
    // Another thread may have won the race; everyone then uses the winner's key.
    Ok(PROCESS_KEY.get_or_init(|| key))
}

/// Plausible secrets for `username`, who has no account: same salt length and iteration count as
/// [`Credentials::from_password`] with the default count.
pub(crate) fn secrets(hash: ScramHash, username: &str) -> Result<ScramSecrets, getrandom::Error> {
    let key = process_key()?;
    let derive = |label: &str, len: usize| {
        let mut input = Vec::with_capacity(label.len() + 1 + username.len());
        input.extend_from_slice(label.as_bytes());
        input.push(0);
        input.extend_from_slice(username.as_bytes());
        let mut out = ScramHash::Sha256.hmac(key, &input);
        out.truncate(len);
        out
    };
    let name = match hash {
        ScramHash::Sha1 => "sha1",
        ScramHash::Sha256 => "sha256",
    };
    Ok(ScramSecrets {
        salt: derive(&format!("{name} salt"), 16),
        iterations: Credentials::DEFAULT_ITERATIONS,
        stored_key: derive(&format!("{name} stored key"), hash.output_len()),
        server_key: derive(&format!("{name} server key"), hash.output_len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_salt_is_stable_for_one_username() {
        let first = secrets(ScramHash::Sha256, "nobody").unwrap();
        let second = secrets(ScramHash::Sha256, "nobody").unwrap();
        assert_eq!(first, second);
        assert_eq!(first.salt.len(), 16);
        assert_eq!(first.iterations, Credentials::DEFAULT_ITERATIONS);
    }

    #[test]
    fn decoy_salts_differ_between_usernames_and_hashes() {
        let a = secrets(ScramHash::Sha256, "alice").unwrap();
        let b = secrets(ScramHash::Sha256, "bob").unwrap();
        let a1 = secrets(ScramHash::Sha1, "alice").unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.salt, a1.salt);
        assert_eq!(a1.stored_key.len(), 20);
    }
}
