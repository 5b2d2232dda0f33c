//! The client side of SCRAM (RFC 5802, RFC 7677) and PLAIN (RFC 4616), as pure functions:
//! the connection code sends and receives, these compute.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{KeyInit, Mac};
use sha2::Digest;

use crate::error::BenchError;

/// The SASL mechanisms the tool speaks, strongest first.
pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"];

/// One SCRAM exchange in progress: what the client sent first, to check the server's reply.
pub struct Scram {
    mechanism: &'static str,
    nonce: String,
    first_bare: String,
}

/// What the client sends after the server's first message, and the signature it must
/// see in the server's final message.
pub struct ClientFinal {
    /// `c=biws,r=...,p=...`, to be base64-encoded into `<response/>`.
    pub message: String,
    /// The expected `v=` value (RFC 5802 section 3: the client authenticates the server).
    pub server_signature: String,
}

impl Scram {
    /// Start an exchange for `user` (no channel binding: `n,,`).
    pub fn start(mechanism: &'static str, user: &str) -> Result<Scram, BenchError> {
        let mut raw = [0u8; 18];
        getrandom::fill(&mut raw).map_err(|e| BenchError::Sasl(e.to_string()))?;
        let nonce = B64.encode(raw);
        // RFC 5802 section 5.1: `=` and `,` in the username are escaped.
        let user = user.replace('=', "=3D").replace(',', "=2C");
        let first_bare = format!("n={user},r={nonce}");
        Ok(Scram {
            mechanism,
            nonce,
            first_bare,
        })
    }

    /// The client's first message (`n,,n=user,r=nonce`).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// Answer the server's first message.
    pub fn client_final(
        &self,
        server_first: &str,
        password: &str,
    ) -> Result<ClientFinal, BenchError> {
        let (mut r, mut s, mut i) = ("", "", 0u32);
        for part in server_first.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => r = v,
                Some(("s=", v)) => s = v,
                Some(("i=", v)) => {
                    i = v
                        .parse()
                        .map_err(|_| BenchError::Sasl(format!("bad iteration count {v:?}")))?;
                }
                _ => {}
            }
        }
        if !r.starts_with(&self.nonce) || s.is_empty() || i == 0 {
            return Err(BenchError::Sasl(format!(
                "bad server-first-message {server_first:?}"
            )));
        }
        let salt = B64
            .decode(s)
            .map_err(|_| BenchError::Sasl("salt is not base64".into()))?;
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let (proof, signature) = match self.mechanism {
            "SCRAM-SHA-1" => scram_sha1(password, &salt, i, &auth_message),
            _ => scram_sha256(password, &salt, i, &auth_message),
        };
        Ok(ClientFinal {
            message: format!("{without_proof},p={}", B64.encode(proof)),
            server_signature: B64.encode(signature),
        })
    }
}

/// The PLAIN message: no authorization identity, then the user and the password.
pub fn plain(user: &str, password: &str) -> String {
    format!("\0{user}\0{password}")
}

macro_rules! scram_math {
    ($name:ident, $hash:ty) => {
        /// Returns (ClientProof, ServerSignature) for this exchange (RFC 5802 section 3).
        fn $name(
            password: &str,
            salt: &[u8],
            iterations: u32,
            auth_message: &str,
        ) -> (Vec<u8>, Vec<u8>) {
            let mut salted = vec![0u8; <$hash as Digest>::output_size()];
            pbkdf2::pbkdf2_hmac::<$hash>(password.as_bytes(), salt, iterations, &mut salted);
            let hmac = |key: &[u8], data: &[u8]| {
                let mut mac = <hmac::Hmac<$hash> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            };
            let client_key = hmac(&salted, b"Client Key");
            let stored_key = <$hash as Digest>::digest(&client_key).to_vec();
            let client_signature = hmac(&stored_key, auth_message.as_bytes());
            let proof = client_key
                .iter()
                .zip(&client_signature)
                .map(|(a, b)| a ^ b)
                .collect();
            let server_key = hmac(&salted, b"Server Key");
            (proof, hmac(&server_key, auth_message.as_bytes()))
        }
    };
}

scram_math!(scram_sha1, sha1::Sha1);
scram_math!(scram_sha256, sha2::Sha256);

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example exchange, with its nonce.
    #[test]
    fn scram_sha256_matches_the_rfc_7677_example() {
        let scram = Scram {
            mechanism: "SCRAM-SHA-256",
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
        };
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let reply = scram.client_final(server_first, "pencil").unwrap();
        assert_eq!(
            reply.message,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            reply.server_signature,
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// RFC 5802 section 5's example exchange.
    #[test]
    fn scram_sha1_matches_the_rfc_5802_example() {
        let scram = Scram {
            mechanism: "SCRAM-SHA-1",
            nonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
            first_bare: "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into(),
        };
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096";
        let reply = scram.client_final(server_first, "pencil").unwrap();
        assert_eq!(
            reply.message,
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert_eq!(reply.server_signature, "rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }
}
