//! Server Dialback (XEP-0220) with keys generated as XEP-0185 recommends.
//!
//! The originating server sends `<db:result from='us' to='them'>KEY</db:result>` on its
//! outgoing stream; the receiving server asks our authoritative side (a `<db:verify>` over
//! a connection of its own) whether the key is ours for that stream; we answer `valid` or
//! `invalid`. The key is `HEX(HMAC-SHA256(SHA256(secret), receiving ' ' originating ' '
//! stream-id))` (XEP-0185 section 3), so no state is kept between sending a key and
//! verifying it.

use herald_stream::header::escape_attr;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The dialback secret, hashed once (XEP-0185 section 3: the HMAC key is SHA-256 of it, in
/// hexadecimal as the XEP's worked example writes it).
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// From the configured `shared` secret, or 32 random bytes when none is set.
    pub fn new(shared: Option<&str>) -> Secret {
        let digest = match shared {
            Some(shared) => Sha256::digest(shared.as_bytes()),
            None => {
                let mut random = [0u8; 32];
                let _ = getrandom::fill(&mut random);
                Sha256::digest(random)
            }
        };
        Secret(hex(&digest))
    }

    /// The key for a stream from `originating` to `receiving` with the receiving server's
    /// stream id (XEP-0185 section 3).
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(receiving.as_bytes());
        mac.update(b" ");
        mac.update(originating.as_bytes());
        mac.update(b" ");
        mac.update(stream_id.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether `key` is ours for that stream (compared in constant time).
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.key(receiving, originating, stream_id);
        bool::from(expected.as_bytes().ct_eq(key.trim().as_bytes()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<db:result from to>key</db:result>` (XEP-0220 section 2.1.1) or, with `type`, the
/// answer to one (section 2.1.4). Written with the `db:` prefix the stream header declares:
/// some servers (ejabberd 23) ignore the same element written with a default namespace.
pub fn result(from: &str, to: &str, key: Option<&str>, type_: Option<&str>) -> String {
    element("result", from, to, None, key, type_)
}

/// `<db:verify from to id>key</db:verify>` (XEP-0220 section 2.1.2) or, with `type`, the
/// answer to one (section 2.1.3).
pub fn verify(from: &str, to: &str, id: &str, key: Option<&str>, type_: Option<&str>) -> String {
    element("verify", from, to, Some(id), key, type_)
}

fn element(
    name: &str,
    from: &str,
    to: &str,
    id: Option<&str>,
    key: Option<&str>,
    type_: Option<&str>,
) -> String {
    let mut out = format!("<db:{name} from='");
    escape_attr(from, &mut out);
    out.push_str("' to='");
    escape_attr(to, &mut out);
    for (attr, value) in [("id", id), ("type", type_)] {
        if let Some(value) = value {
            out.push_str("' ");
            out.push_str(attr);
            out.push_str("='");
            escape_attr(value, &mut out);
        }
    }
    match key {
        Some(key) => {
            out.push_str("'>");
            // A key is hexadecimal; anything else is escaped all the same.
            let mut text = String::new();
            escape_attr(key, &mut text);
            out.push_str(&text);
            out.push_str("</db:");
            out.push_str(name);
            out.push('>');
        }
        None => out.push_str("'/>"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_hmac_sha256_of_both_domains_and_the_stream_id() {
        // The inputs of XEP-0185 section 3's example; the value computed independently
        // (Python's hmac and hashlib) from the formula with the hex digest as the key.
        let secret = Secret::new(Some("s3cr3tf0rd14lb4ck"));
        assert_eq!(
            secret.key("example.org", "xmpp.example.com", "D60000229F"),
            "07335aa400436780596e1102ba010c85129ea50e13e58ab8830a523a8706b575"
        );
    }

    #[test]
    fn a_key_verifies_only_for_its_own_stream_and_domains() {
        let secret = Secret::new(Some("x"));
        let key = secret.key("b.example", "a.example", "id1");
        assert!(secret.verify("b.example", "a.example", "id1", &key));
        assert!(!secret.verify("b.example", "a.example", "id2", &key));
        assert!(!secret.verify("c.example", "a.example", "id1", &key));
        assert!(!Secret::new(Some("y")).verify("b.example", "a.example", "id1", &key));
    }

    #[test]
    fn dialback_elements_are_written_with_the_db_prefix() {
        assert_eq!(
            result("a.example", "b.example", Some("k1"), None),
            "<db:result from='a.example' to='b.example'>k1</db:result>"
        );
        assert_eq!(
            verify("b.example", "a.example", "i'd", None, Some("valid")),
            "<db:verify from='b.example' to='a.example' id='i&apos;d' type='valid'/>"
        );
    }
}
