//! SCRAM-SHA-1 (RFC 5802) and SCRAM-SHA-256 (RFC 7677), server side, without channel binding.
//!
//! The exchange is client-first (RFC 5802 section 5):
//!
//! ```text
//! C: n,,n=user,r=<client nonce>                          client-first-message
//!    (the caller looks up "user" and provides credentials)
//! S: r=<client nonce><server nonce>,s=<salt>,i=<count>    server-first-message
//! C: c=biws,r=<combined nonce>,p=<proof>                  client-final-message
//! S: v=<server signature>                                 server-final-message, in <success/>
//! ```
//!
//! Failures map onto RFC 6120 section 6.5 as follows (the RFC 5802 section 7
//! `server-error-value` in parentheses):
//!
//! - `malformed-request`: not UTF-8; a missing, misplaced or malformed attribute; a '=' in a
//!   saslname not starting `=2C` or `=3D`, or a username that fails SASLprep
//!   (`invalid-username-encoding`); an empty or non-printable nonce; a mandatory extension `m=`
//!   (`extensions-not-supported`); a response at the wrong time.
//! - `incorrect-encoding`: `c=` or `p=` is not base64 (`invalid-encoding`).
//! - `not-authorized`: the gs2 flag `p=`, asking for a channel binding that the non-PLUS
//!   mechanisms never do (`channel-binding-not-supported`); `c=` not echoing the gs2-header
//!   (`channel-bindings-dont-match`); a nonce that is not the combined one; a wrong proof
//!   (`invalid-proof`); an unknown user (`unknown-user`, which section 7 allows hiding "to
//!   prevent information disclosure").
//! - `temporary-auth-failure`: no randomness, or stored secrets with an iteration count of 0.
//!
//! The server never offers the `-PLUS` variants, so the gs2 flag `y` ("the client supports
//! channel binding but thinks the server does not") is accepted: RFC 5802 section 6 only requires
//! failing it when the server does support channel binding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use subtle::ConstantTimeEq;

use crate::{Credentials, Failure, ScramHash, ScramSecrets, Step, decoy};

/// Random bytes in the server's part of the nonce; base64 makes them 32 printable characters.
const SERVER_NONCE_BYTES: usize = 24;

/// A SCRAM exchange in progress.
pub(crate) struct ScramServer {
    hash: ScramHash,
    state: State,
    /// The server's part of the nonce, fixed in advance only by the RFC test vectors.
    server_nonce: Option<String>,
}

enum State {
    /// Waiting for the client-first-message; `challenged` once the empty challenge that asks for
    /// it has been sent (RFC 4422 section 5, a client-first mechanism without initial response).
    ClientFirst { challenged: bool },
    /// Waiting for the caller to look up the account.
    Credentials(ClientFirst),
    /// server-first-message sent; waiting for the client-final-message.
    ClientFinal(Box<Pending>),
    /// Success or failure has been reported.
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::ClientFirst { .. } => "client-first",
            State::Credentials(_) => "credentials",
            State::ClientFinal(_) => "client-final",
            State::Done => "done",
        }
    }
}

/// A parsed client-first-message (RFC 5802 section 7).
struct ClientFirst {
    /// The gs2-header exactly as sent, trailing comma included: what `c=` must echo.
    gs2_header: String,
    /// client-first-message-bare, the first part of the AuthMessage.
    bare: String,
    /// The decoded, SASLprep'd username.
    username: String,
    /// The decoded authzid of the gs2-header.
    authzid: Option<String>,
    client_nonce: String,
}

/// State between the server-first-message and the client-final-message.
struct Pending {
    first: ClientFirst,
    server_first: String,
    /// Client nonce followed by the server nonce.
    nonce: String,
    secrets: ScramSecrets,
    /// False for a decoy account: the exchange then fails however good the proof.
    known: bool,
}

/// A parsed client-final-message (RFC 5802 section 7).
struct ClientFinal<'a> {
    /// The decoded `c=` attribute.
    channel_binding: Vec<u8>,
    nonce: &'a str,
    /// client-final-message-without-proof, the last part of the AuthMessage.
    without_proof: &'a str,
    /// The decoded `p=` attribute.
    proof: Vec<u8>,
}

impl ScramServer {
    pub(crate) fn new(hash: ScramHash) -> ScramServer {
        ScramServer {
            hash,
            state: State::ClientFirst { challenged: false },
            server_nonce: None,
        }
    }

    /// Use `nonce` as the server's part of the nonce instead of random bytes.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(hash: ScramHash, nonce: &str) -> ScramServer {
        ScramServer {
            server_nonce: Some(nonce.to_owned()),
            ..ScramServer::new(hash)
        }
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::ClientFirst { challenged: false }, None) => {
                self.state = State::ClientFirst { challenged: true };
                Step::Challenge(Vec::new())
            }
            (State::ClientFirst { .. }, Some(message)) => match parse_client_first(message) {
                Ok(first) => {
                    let step = Step::NeedCredentials {
                        username: first.username.clone(),
                        authzid: first.authzid.clone(),
                    };
                    self.state = State::Credentials(first);
                    step
                }
                Err(failure) => Step::Failure(failure),
            },
            (State::ClientFinal(pending), Some(message)) => self.finish(*pending, message),
            // A missing response, a second empty challenge, a response while the account is being
            // looked up, or anything after the outcome.
            _ => Step::Failure(Failure::MalformedRequest),
        }
    }

    pub(crate) fn provide_credentials(&mut self, credentials: Option<&Credentials>) -> Step {
        let State::Credentials(first) = std::mem::replace(&mut self.state, State::Done) else {
            return Step::Failure(Failure::TemporaryAuthFailure);
        };
        let (secrets, known) = match credentials {
            Some(credentials) => (credentials.secrets(self.hash).clone(), true),
            None => match decoy::secrets(self.hash, &first.username) {
                Ok(secrets) => (secrets, false),
                Err(_) => return Step::Failure(Failure::TemporaryAuthFailure),
            },
        };
        if secrets.iterations == 0 {
            // Unusable stored data: RFC 5802 section 7 requires a positive iteration count.
            return Step::Failure(Failure::TemporaryAuthFailure);
        }
        let server_nonce = match self.server_nonce.take() {
            Some(nonce) => nonce,
            None => {
                let mut random = [0; SERVER_NONCE_BYTES];
                if getrandom::fill(&mut random).is_err() {
                    return Step::Failure(Failure::TemporaryAuthFailure);
                }
                STANDARD.encode(random)
            }
        };
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&secrets.salt),
            secrets.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::ClientFinal(Box::new(Pending {
            first,
            server_first,
            nonce,
            secrets,
            known,
        }));
        Step::Challenge(challenge)
    }

    /// Verify the client-final-message and produce the server-final-message (RFC 5802 section 3).
    fn finish(&self, pending: Pending, message: &[u8]) -> Step {
        let Ok(text) = std::str::from_utf8(message) else {
            return Step::Failure(Failure::MalformedRequest);
        };
        let last = match parse_client_final(text) {
            Ok(last) => last,
            Err(failure) => return Step::Failure(failure),
        };
        let Pending {
            first,
            server_first,
            nonce,
            secrets,
            known,
        } = pending;
        // For "n" and "y" the channel binding input is the gs2-header alone (RFC 5802 section 7,
        // cbind-input).
        if last.channel_binding != first.gs2_header.as_bytes() || last.nonce != nonce {
            return Step::Failure(Failure::NotAuthorized);
        }
        let auth_message = format!("{},{server_first},{}", first.bare, last.without_proof);
        let client_signature = self.hash.hmac(&secrets.stored_key, auth_message.as_bytes());
        if last.proof.len() != client_signature.len() {
            return Step::Failure(Failure::NotAuthorized);
        }
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(proof, signature)| proof ^ signature)
            .collect();
        // Compared in constant time so that the comparison leaks nothing about StoredKey.
        let proof_valid = self.hash.h(&client_key).ct_eq(&secrets.stored_key);
        if !(bool::from(proof_valid) && known) {
            return Step::Failure(Failure::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&secrets.server_key, auth_message.as_bytes());
        Step::Success {
            username: first.username,
            authzid: first.authzid,
            additional_data: Some(format!("v={}", STANDARD.encode(server_signature)).into_bytes()),
        }
    }
}

impl std::fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately leaves out the nonces and secrets.
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

/// Parse `gs2-header client-first-message-bare` (RFC 5802 section 7).
fn parse_client_first(message: &[u8]) -> Result<ClientFirst, Failure> {
    let text = std::str::from_utf8(message).map_err(|_| Failure::MalformedRequest)?;
    let (cbind_flag, rest) = text.split_once(',').ok_or(Failure::MalformedRequest)?;
    match cbind_flag {
        "n" | "y" => {}
        // The client requires channel binding, which a non-PLUS mechanism does not do: RFC 5802
        // section 6 says the server MUST then fail authentication.
        flag if flag.starts_with("p=") => return Err(Failure::NotAuthorized),
        _ => return Err(Failure::MalformedRequest),
    }
    let (authzid, bare) = rest.split_once(',').ok_or(Failure::MalformedRequest)?;
    let authzid = match authzid {
        "" => None,
        field => {
            let name = field.strip_prefix("a=").ok_or(Failure::MalformedRequest)?;
            Some(decode_saslname(name)?)
        }
    };
    let gs2_header = &text[..text.len() - bare.len()];

    let mut attributes = bare.split(',');
    let first = attributes.next().unwrap_or_default();
    // "m" is reserved for mandatory extensions; RFC 5802 section 5.1: "its presence in a client
    // or a server message MUST cause authentication failure". Like any other attribute in this
    // place, it is not the username the grammar requires.
    let username = first.strip_prefix("n=").ok_or(Failure::MalformedRequest)?;
    let username = decode_saslname(username)?;
    // RFC 5802 section 5.1: if preparation of the username fails or results in an empty string,
    // the server SHOULD abort the authentication exchange.
    let username = stringprep::saslprep(&username).map_err(|_| Failure::MalformedRequest)?;
    if username.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let client_nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or(Failure::MalformedRequest)?;
    if client_nonce.is_empty() || !client_nonce.bytes().all(is_printable) {
        return Err(Failure::MalformedRequest);
    }
    // Optional extensions are ignored, as RFC 5802 section 5.1 allows, once well-formed.
    attributes.try_for_each(check_extension)?;

    Ok(ClientFirst {
        gs2_header: gs2_header.to_owned(),
        bare: bare.to_owned(),
        username: username.into_owned(),
        authzid,
        client_nonce: client_nonce.to_owned(),
    })
}

/// Parse `channel-binding "," nonce ["," extensions] "," proof` (RFC 5802 section 7).
fn parse_client_final(text: &str) -> Result<ClientFinal<'_>, Failure> {
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(Failure::MalformedRequest)?;
    if proof.contains(',') {
        return Err(Failure::MalformedRequest);
    }
    let mut attributes = without_proof.split(',');
    let channel_binding = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("c="))
        .ok_or(Failure::MalformedRequest)?;
    let nonce = attributes
        .next()
        .and_then(|attribute| attribute.strip_prefix("r="))
        .ok_or(Failure::MalformedRequest)?;
    attributes.try_for_each(check_extension)?;
    Ok(ClientFinal {
        channel_binding: decode_base64(channel_binding)?,
        nonce,
        without_proof,
        proof: decode_base64(proof)?,
    })
}

fn decode_base64(value: &str) -> Result<Vec<u8>, Failure> {
    STANDARD
        .decode(value)
        .map_err(|_| Failure::IncorrectEncoding)
}

/// Undo saslname escaping: `=2C` is ',' and `=3D` is '='. RFC 5802 section 5.1: a '=' not
/// followed by either MUST fail the authentication.
fn decode_saslname(name: &str) -> Result<String, Failure> {
    if name.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let mut decoded = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        decoded.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        decoded.push(match escape {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(Failure::MalformedRequest),
        });
        rest = &rest[at + 3..];
    }
    decoded.push_str(rest);
    Ok(decoded)
}

/// `attr-val = ALPHA "=" value` with a non-empty value (RFC 5802 section 7). `m` is refused
/// wherever it appears (RFC 5802 section 5.1).
fn check_extension(attribute: &str) -> Result<(), Failure> {
    match attribute.as_bytes() {
        [b'm', b'=', ..] => Err(Failure::MalformedRequest),
        [name, b'=', _, ..] if name.is_ascii_alphabetic() => Ok(()),
        _ => Err(Failure::MalformedRequest),
    }
}

/// `printable = %x21-2B / %x2D-7E`: visible ASCII except ',' (RFC 5802 section 7).
fn is_printable(byte: u8) -> bool {
    matches!(byte, 0x21..=0x2B | 0x2D..=0x7E)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mechanism, ServerExchange};

    /// A SCRAM client as in RFC 5802 section 3, for driving the server.
    struct Client {
        hash: ScramHash,
        password: &'static str,
        gs2_header: String,
        bare: String,
    }

    impl Client {
        fn new(hash: ScramHash, gs2_header: &str, username: &str, password: &'static str) -> Self {
            Client {
                hash,
                password,
                gs2_header: gs2_header.to_owned(),
                bare: format!("n={username},r=clientnonce+/1234"),
            }
        }

        fn first(&self) -> Vec<u8> {
            format!("{}{}", self.gs2_header, self.bare).into_bytes()
        }

        /// The client-final-message and the server-final-message to expect.
        fn last(&self, server_first: &[u8]) -> (Vec<u8>, Vec<u8>) {
            let server_first = std::str::from_utf8(server_first).unwrap();
            let mut attributes = server_first.split(',');
            let nonce = attributes.next().unwrap().strip_prefix("r=").unwrap();
            let salt = attributes.next().unwrap().strip_prefix("s=").unwrap();
            let iterations = attributes.next().unwrap().strip_prefix("i=").unwrap();
            let salted = self.hash.hi(
                self.password.as_bytes(),
                &STANDARD.decode(salt).unwrap(),
                iterations.parse().unwrap(),
            );
            let (stored_key, server_key) = self.hash.keys(&salted);
            let client_key = self.hash.hmac(&salted, b"Client Key");
            let without_proof = format!(
                "c={},r={nonce}",
                STANDARD.encode(self.gs2_header.as_bytes())
            );
            let auth_message = format!("{},{server_first},{without_proof}", self.bare);
            let signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
            let proof: Vec<u8> = client_key
                .iter()
                .zip(&signature)
                .map(|(k, s)| k ^ s)
                .collect();
            let server_signature = self.hash.hmac(&server_key, auth_message.as_bytes());
            (
                format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
                format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
            )
        }
    }

    fn mechanism(hash: ScramHash) -> Mechanism {
        match hash {
            ScramHash::Sha1 => Mechanism::ScramSha1,
            ScramHash::Sha256 => Mechanism::ScramSha256,
        }
    }

    fn stored(password: &str) -> Credentials {
        Credentials::from_password(password, Credentials::DEFAULT_ITERATIONS).unwrap()
    }

    fn challenge(step: Step) -> Vec<u8> {
        match step {
            Step::Challenge(challenge) => challenge,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    /// Runs the exchange up to the server-first-message.
    fn start(
        hash: ScramHash,
        client: &Client,
        credentials: Option<&Credentials>,
    ) -> (ServerExchange, Vec<u8>) {
        let mut exchange = ServerExchange::new(mechanism(hash));
        assert!(matches!(
            exchange.step(Some(&client.first())),
            Step::NeedCredentials { .. }
        ));
        let server_first = challenge(exchange.provide_credentials(credentials));
        (exchange, server_first)
    }

    /// Runs the whole exchange with a well-behaved client.
    fn run(hash: ScramHash, client: &Client, credentials: Option<&Credentials>) -> Step {
        let (mut exchange, server_first) = start(hash, client, credentials);
        let (last, expected_server_final) = client.last(&server_first);
        let step = exchange.step(Some(&last));
        if let Step::Success {
            additional_data, ..
        } = &step
        {
            assert_eq!(additional_data.as_deref(), Some(&expected_server_final[..]));
        }
        step
    }

    /// Feeds one client-first-message and returns the resulting step.
    fn first_step(message: &[u8]) -> Step {
        ServerExchange::new(Mechanism::ScramSha256).step(Some(message))
    }

    /// Runs a correct client-first-message and then the given client-final-message.
    fn final_step(last: &[u8]) -> Step {
        let client = Client::new(ScramHash::Sha256, "n,,", "user", "pencil");
        let (mut exchange, _) = start(ScramHash::Sha256, &client, Some(&stored("pencil")));
        exchange.step(Some(last))
    }

    fn user(username: &str, authzid: Option<&str>) -> Step {
        Step::NeedCredentials {
            username: username.to_owned(),
            authzid: authzid.map(str::to_owned),
        }
    }

    #[test]
    fn rfc_5802_sha1_example_matches_byte_for_byte() {
        let salt = STANDARD.decode("QSXCR+Q6sek8bf92").unwrap();
        let secrets = ScramSecrets::derive(ScramHash::Sha1, "pencil", &salt, 4096).unwrap();
        let credentials = Credentials {
            sha1: secrets.clone(),
            sha256: secrets,
        };
        let mut exchange = ServerExchange::with_server_nonce(ScramHash::Sha1, "3rfcNHYJY1ZVvWVs7j");

        assert_eq!(
            exchange.step(Some(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")),
            user("user", None)
        );
        assert_eq!(
            exchange.provide_credentials(Some(&credentials)),
            Step::Challenge(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096".to_vec()
            )
        );
        assert_eq!(
            exchange.step(Some(
                b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
            )),
            Step::Success {
                username: "user".to_owned(),
                authzid: None,
                additional_data: Some(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".to_vec()),
            }
        );
    }

    #[test]
    fn rfc_7677_sha256_example_matches_byte_for_byte() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let secrets = ScramSecrets::derive(ScramHash::Sha256, "pencil", &salt, 4096).unwrap();
        let credentials = Credentials {
            sha1: secrets.clone(),
            sha256: secrets,
        };
        let mut exchange =
            ServerExchange::with_server_nonce(ScramHash::Sha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");

        assert_eq!(
            exchange.step(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")),
            user("user", None)
        );
        assert_eq!(
            exchange.provide_credentials(Some(&credentials)),
            Step::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        assert_eq!(
            exchange.step(Some(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            )),
            Step::Success {
                username: "user".to_owned(),
                authzid: None,
                additional_data: Some(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()),
            }
        );
    }

    #[test]
    fn correct_password_succeeds_with_both_hashes() {
        let credentials = stored("correct horse");
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let client = Client::new(hash, "n,,", "juliet", "correct horse");
            let step = run(hash, &client, Some(&credentials));
            assert!(
                matches!(&step, Step::Success { username, authzid: None, .. } if username == "juliet"),
                "{step:?}"
            );
        }
    }

    #[test]
    fn wrong_password_is_not_authorized() {
        let credentials = stored("correct horse");
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let client = Client::new(hash, "n,,", "juliet", "battery staple");
            assert_eq!(
                run(hash, &client, Some(&credentials)),
                Step::Failure(Failure::NotAuthorized)
            );
        }
    }

    #[test]
    fn unknown_user_gets_a_challenge_then_not_authorized() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let client = Client::new(hash, "n,,", "nobody", "pencil");
            assert_eq!(
                run(hash, &client, None),
                Step::Failure(Failure::NotAuthorized)
            );
        }
    }

    #[test]
    fn unknown_user_challenge_looks_like_a_real_one_and_is_stable() {
        let client = Client::new(ScramHash::Sha256, "n,,", "nobody", "pencil");
        let salt_and_count = |server_first: Vec<u8>| {
            let text = String::from_utf8(server_first).unwrap();
            text.split_once(",s=").unwrap().1.to_owned()
        };
        let (_, first) = start(ScramHash::Sha256, &client, None);
        let (_, again) = start(ScramHash::Sha256, &client, None);
        let (_, real) = start(ScramHash::Sha256, &client, Some(&stored("pencil")));
        let first = salt_and_count(first);
        assert_eq!(first, salt_and_count(again));
        let real = salt_and_count(real);
        assert_eq!(first.len(), real.len());
        assert!(first.ends_with(",i=4096") && real.ends_with(",i=4096"));
    }

    #[test]
    fn server_nonce_extends_the_client_nonce_with_fresh_printable_characters() {
        let client = Client::new(ScramHash::Sha256, "n,,", "user", "pencil");
        let nonce = |server_first: Vec<u8>| {
            let text = String::from_utf8(server_first).unwrap();
            text.split(',').next().unwrap()[2..].to_owned()
        };
        let (_, first) = start(ScramHash::Sha256, &client, None);
        let (_, second) = start(ScramHash::Sha256, &client, None);
        let (first, second) = (nonce(first), nonce(second));
        assert_ne!(first, second);
        let server_part = first.strip_prefix("clientnonce+/1234").unwrap();
        assert_eq!(server_part.len(), 32);
        assert!(server_part.bytes().all(is_printable));
    }

    #[test]
    fn missing_initial_response_is_asked_for_with_an_empty_challenge() {
        let mut exchange = ServerExchange::new(Mechanism::ScramSha1);
        assert_eq!(exchange.step(None), Step::Challenge(Vec::new()));
        assert_eq!(exchange.step(Some(b"n,,n=user,r=abc")), user("user", None));
    }

    #[test]
    fn second_missing_response_is_malformed() {
        let mut exchange = ServerExchange::new(Mechanism::ScramSha1);
        assert_eq!(exchange.step(None), Step::Challenge(Vec::new()));
        assert_eq!(
            exchange.step(None),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn escaped_username_is_decoded() {
        assert_eq!(first_step(b"n,,n=a=2Cb=3Dc,r=abc"), user("a,b=c", None));
    }

    #[test]
    fn username_is_saslprepped() {
        // RFC 4013 section 3: SOFT HYPHEN maps to nothing, NO-BREAK SPACE to SPACE.
        assert_eq!(
            first_step("n,,n=ju\u{AD}liet\u{A0}c,r=abc".as_bytes()),
            user("juliet c", None)
        );
    }

    #[test]
    fn authzid_in_the_gs2_header_is_returned_decoded() {
        assert_eq!(
            first_step(b"n,a=juliet@example.com,n=juliet,r=abc"),
            user("juliet", Some("juliet@example.com"))
        );
        assert_eq!(
            first_step(b"n,a=x=2Cy,n=juliet,r=abc"),
            user("juliet", Some("x,y"))
        );
    }

    #[test]
    fn authzid_round_trip_succeeds_and_reports_the_authzid() {
        let credentials = stored("pencil");
        let client = Client::new(
            ScramHash::Sha256,
            "n,a=juliet@example.com,",
            "juliet",
            "pencil",
        );
        let step = run(ScramHash::Sha256, &client, Some(&credentials));
        assert!(
            matches!(&step, Step::Success { authzid: Some(a), .. } if a == "juliet@example.com"),
            "{step:?}"
        );
    }

    #[test]
    fn unknown_escape_in_username_is_malformed() {
        assert_eq!(
            first_step(b"n,,n=a=2Db,r=abc"),
            Step::Failure(Failure::MalformedRequest)
        );
        assert_eq!(
            first_step(b"n,,n=ab=,r=abc"),
            Step::Failure(Failure::MalformedRequest)
        );
        assert_eq!(
            first_step(b"n,,n=ab=2,r=abc"),
            Step::Failure(Failure::MalformedRequest)
        );
        assert_eq!(
            first_step(b"n,a=admin=40example.com,n=user,r=abc"),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn username_failing_saslprep_is_malformed() {
        assert_eq!(
            first_step("n,,n=ju\u{7}liet,r=abc".as_bytes()),
            Step::Failure(Failure::MalformedRequest)
        );
        // Maps to nothing at all.
        assert_eq!(
            first_step("n,,n=\u{AD},r=abc".as_bytes()),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn malformed_client_first_messages_are_malformed_requests() {
        for message in [
            &b""[..],
            b"garbage",
            b"n,,",
            b"n,,n=user",
            b"n,,r=abc,n=user",
            b"n,,n=,r=abc",
            b"n,,n=user,r=",
            b"n,,n=user,r=a\x7fb",
            b"x,,n=user,r=abc",
            b"n,admin,n=user,r=abc",
            b"n,a=,n=user,r=abc",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=user,r=abc,m=ext",
            b"n,,n=user,r=abc,x",
            b"n,,n=us\xffer,r=abc",
        ] {
            assert_eq!(
                first_step(message),
                Step::Failure(Failure::MalformedRequest),
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn optional_extensions_in_client_first_are_ignored() {
        assert_eq!(
            first_step(b"n,,n=user,r=abc,x=whatever"),
            user("user", None)
        );
    }

    #[test]
    fn channel_binding_request_is_refused() {
        assert_eq!(
            first_step(b"p=tls-unique,,n=user,r=abc"),
            Step::Failure(Failure::NotAuthorized)
        );
        assert_eq!(
            first_step(b"p=tls-exporter,,n=user,r=abc"),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn client_that_supports_channel_binding_is_accepted() {
        let credentials = stored("pencil");
        let client = Client::new(ScramHash::Sha256, "y,,", "juliet", "pencil");
        assert!(matches!(
            run(ScramHash::Sha256, &client, Some(&credentials)),
            Step::Success { .. }
        ));
    }

    #[test]
    fn channel_binding_not_echoing_the_gs2_header_is_not_authorized() {
        let credentials = stored("pencil");
        let client = Client::new(ScramHash::Sha256, "y,,", "juliet", "pencil");
        let (mut exchange, server_first) = start(ScramHash::Sha256, &client, Some(&credentials));
        let (last, _) = client.last(&server_first);
        // Replace c=eSws ("y,,") with c=biws ("n,,"), as a downgrade would.
        let last = String::from_utf8(last).unwrap().replace("c=eSws", "c=biws");
        assert_eq!(
            exchange.step(Some(last.as_bytes())),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn wrong_nonce_in_client_final_is_not_authorized() {
        let credentials = stored("pencil");
        let client = Client::new(ScramHash::Sha256, "n,,", "juliet", "pencil");
        let (mut exchange, server_first) = start(ScramHash::Sha256, &client, Some(&credentials));
        let (last, _) = client.last(&server_first);
        let last = String::from_utf8(last)
            .unwrap()
            .replace(",r=client", ",r=Client");
        assert_eq!(
            exchange.step(Some(last.as_bytes())),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn bad_base64_in_client_final_is_incorrect_encoding() {
        assert_eq!(
            final_step(b"c=biws,r=x,p=not*base64"),
            Step::Failure(Failure::IncorrectEncoding)
        );
        assert_eq!(
            final_step(b"c=bi!s,r=x,p=AAAA"),
            Step::Failure(Failure::IncorrectEncoding)
        );
    }

    #[test]
    fn malformed_client_final_messages_are_malformed_requests() {
        for message in [
            &b""[..],
            b"garbage",
            b"c=biws,r=abc",
            b"r=abc,c=biws,p=AAAA",
            b"c=biws,p=AAAA",
            b"c=biws,r=abc,p=AAAA,x=y",
            b"c=biws,r=abc,bogus,p=AAAA",
            b"c=biws,r=abc\xff,p=AAAA",
        ] {
            assert_eq!(
                final_step(message),
                Step::Failure(Failure::MalformedRequest),
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }

    #[test]
    fn proof_of_the_wrong_length_is_not_authorized() {
        let credentials = stored("pencil");
        let client = Client::new(ScramHash::Sha256, "n,,", "user", "pencil");
        let (mut exchange, server_first) = start(ScramHash::Sha256, &client, Some(&credentials));
        let (last, _) = client.last(&server_first);
        let last = String::from_utf8(last).unwrap();
        let (without_proof, _) = last.rsplit_once(",p=").unwrap();
        assert_eq!(
            exchange.step(Some(format!("{without_proof},p=AAAA").as_bytes())),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn step_after_success_is_malformed() {
        let credentials = stored("pencil");
        let client = Client::new(ScramHash::Sha1, "n,,", "user", "pencil");
        let (mut exchange, server_first) = start(ScramHash::Sha1, &client, Some(&credentials));
        let (last, _) = client.last(&server_first);
        assert!(matches!(exchange.step(Some(&last)), Step::Success { .. }));
        assert_eq!(
            exchange.step(Some(&last)),
            Step::Failure(Failure::MalformedRequest)
        );
        assert_eq!(
            exchange.step(None),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn step_after_failure_is_malformed() {
        let mut exchange = ServerExchange::new(Mechanism::ScramSha256);
        assert_eq!(
            exchange.step(Some(b"garbage")),
            Step::Failure(Failure::MalformedRequest)
        );
        assert_eq!(
            exchange.step(Some(b"n,,n=user,r=abc")),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn response_while_credentials_are_looked_up_is_malformed() {
        let mut exchange = ServerExchange::new(Mechanism::ScramSha256);
        assert_eq!(exchange.step(Some(b"n,,n=user,r=abc")), user("user", None));
        assert_eq!(
            exchange.step(Some(b"c=biws,r=abc,p=AAAA")),
            Step::Failure(Failure::MalformedRequest)
        );
    }

    #[test]
    fn stored_secrets_with_zero_iterations_are_a_server_error() {
        let mut credentials = stored("pencil");
        credentials.sha256.iterations = 0;
        let mut exchange = ServerExchange::new(Mechanism::ScramSha256);
        exchange.step(Some(b"n,,n=user,r=abc"));
        assert_eq!(
            exchange.provide_credentials(Some(&credentials)),
            Step::Failure(Failure::TemporaryAuthFailure)
        );
    }
}
