//! Arbitrary client messages through a [`ServerExchange`] for each mechanism: bad input must
//! end the exchange with a failure condition (RFC 6120 section 6.5) within a few steps, never
//! panic, and succeed only with the account's password.
//!
//! Input: `[control, messages @ ..]`, the messages split at each `FF` byte (never UTF-8).
//! * `control` bits 0-1: the mechanism, `Mechanism::ALL[n % 3]`; bits 2-3: 0 is an unknown
//!   account, anything else the stored one; bit 4: `<auth/>` without an initial response.
//! * In a message after SCRAM's server-first-message, `%r` is replaced by the server's combined
//!   nonce, which the fuzzer cannot guess, so that it reaches the proof check.
//!
//! Nothing the fuzzer sends can carry a valid SCRAM proof (that takes the password's keys), so
//! any SCRAM success is a bug; a PLAIN success must carry the password.

#![no_main]

use std::sync::OnceLock;

use herald_sasl::{Credentials, Failure, Mechanism, ScramHash, ScramSecrets, ServerExchange, Step};
use libfuzzer_sys::fuzz_target;

const PASSWORD: &str = "pencil";

/// Client messages in the longest exchange: an empty `<auth/>`, client-first, client-final.
const MAX_MESSAGES: usize = 3;

/// The stored account, with one PBKDF2 iteration to keep executions fast.
fn credentials() -> &'static Credentials {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    CREDENTIALS.get_or_init(|| Credentials {
        sha1: ScramSecrets::derive(ScramHash::Sha1, PASSWORD, b"salt for sha-1", 1).unwrap(),
        sha256: ScramSecrets::derive(ScramHash::Sha256, PASSWORD, b"salt for sha-256", 1).unwrap(),
    })
}

fuzz_target!(|input: &[u8]| {
    let [control, data @ ..] = input else {
        return;
    };
    let mechanism = Mechanism::ALL[usize::from(control & 3) % Mechanism::ALL.len()];
    let known = control & 0b1100 != 0;
    let mut pending: Vec<Option<Vec<u8>>> = Vec::new();
    if control & 0b1_0000 != 0 {
        pending.push(None);
    }
    let messages = data.split(|&b| b == 0xff).take(MAX_MESSAGES + 1);
    pending.extend(messages.map(|m| Some(m.to_vec())));
    pending.reverse();

    let mut exchange = ServerExchange::new(mechanism);
    let mut nonce: Option<Vec<u8>> = None;
    let mut sent = 0;
    let mut last: Option<Vec<u8>>;
    let outcome = loop {
        let Some(message) = pending.pop() else {
            return;
        };
        assert!(
            sent < MAX_MESSAGES,
            "{mechanism} goes on after {MAX_MESSAGES} messages"
        );
        let message = message.map(|m| match &nonce {
            Some(nonce) => replace(&m, b"%r", nonce),
            None => m,
        });
        sent += 1;
        let mut step = exchange.step(message.as_deref());
        last = message;
        if let Step::NeedCredentials { username, .. } = &step {
            assert!(!username.is_empty());
            step = exchange.provide_credentials(known.then(credentials));
        }
        match step {
            Step::Challenge(challenge) => {
                nonce = challenge
                    .split(|&b| b == b',')
                    .find_map(|attribute| attribute.strip_prefix(b"r="))
                    .map(<[u8]>::to_vec);
            }
            Step::NeedCredentials { .. } => panic!("{mechanism} asked for credentials twice"),
            outcome => break outcome,
        }
    };
    if let Step::Success { .. } = outcome {
        assert!(known, "{mechanism} succeeded for an unknown account");
        assert_eq!(mechanism, Mechanism::Plain, "a SCRAM proof was forged");
        let message = last.unwrap();
        let password = message.rsplit(|&b| b == 0).next().unwrap();
        let password = std::str::from_utf8(password).unwrap();
        assert_eq!(stringprep::saslprep(password).unwrap(), PASSWORD);
    }
    // After the outcome the exchange stays over (RFC 6120 section 6.4).
    assert_eq!(
        exchange.step(pending.pop().flatten().as_deref()),
        Step::Failure(Failure::MalformedRequest)
    );
});

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}
