//! Bad input in a SASL exchange gets a failure condition (RFC 6120 section 6.5), never a panic:
//! every exchange ends within a few steps, and succeeds only for the right password.
//!
//! Deterministic fuzzing for the normal test suite: random messages and mutations of honest
//! SCRAM (RFC 5802) and PLAIN (RFC 4616) exchanges drive [`ServerExchange`]; a client written
//! here from RFC 5802 section 3 checks every success. The generator is a fixed-seed xorshift, so
//! a failure reproduces; `fuzz/` has the open-ended version.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_sasl::{Credentials, Failure, Mechanism, ScramHash, ScramSecrets, ServerExchange, Step};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The account's password; a password is right when it SASLpreps to this.
const PASSWORD: &str = "pencil";

/// Client messages in the longest exchange: an empty `<auth/>`, then SCRAM's client-first and
/// client-final messages.
const MAX_MESSAGES: usize = 3;

/// The stored account, with one PBKDF2 iteration so that thousands of exchanges stay fast.
fn credentials() -> &'static Credentials {
    static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();
    CREDENTIALS.get_or_init(|| Credentials {
        sha1: ScramSecrets::derive(ScramHash::Sha1, PASSWORD, b"salt for sha-1", 1).unwrap(),
        sha256: ScramSecrets::derive(ScramHash::Sha256, PASSWORD, b"salt for sha-256", 1).unwrap(),
    })
}

/// xorshift64* (Vigna, "An experimental exploration of Marsaglia's xorshift generators").
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` must not be zero.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        (0..self.below(max + 1)).map(|_| self.byte()).collect()
    }
}

/// `HMAC(key, data)` of RFC 5802 section 2.2.
fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    fn run<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = <M as KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }
    match hash {
        ScramHash::Sha1 => run::<Hmac<Sha1>>(key, data),
        ScramHash::Sha256 => run::<Hmac<Sha256>>(key, data),
    }
}

/// `H(data)` of RFC 5802 section 2.2.
fn h(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha1 => Sha1::digest(data).to_vec(),
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
    }
}

/// The client's side of RFC 5802 section 3, from the server-first-message.
struct ClientProof {
    proof: Vec<u8>,
    server_signature: Vec<u8>,
}

fn client_proof(
    hash: ScramHash,
    password: &str,
    first_bare: &str,
    server_first: &str,
    final_without_proof: &str,
) -> ClientProof {
    let field = |name: &str| {
        server_first
            .split(',')
            .find_map(|attribute| attribute.strip_prefix(name))
            .unwrap()
    };
    let salt = STANDARD.decode(field("s=")).unwrap();
    let iterations = field("i=").parse().unwrap();
    let password = stringprep::saslprep(password).unwrap();
    let mut salted = vec![0; h(hash, b"").len()];
    match hash {
        ScramHash::Sha1 => {
            pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), &salt, iterations, &mut salted)
        }
        ScramHash::Sha256 => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted)
        }
    }
    let client_key = hmac(hash, &salted, b"Client Key");
    let auth_message = format!("{first_bare},{server_first},{final_without_proof}");
    let signature = hmac(hash, &h(hash, &client_key), auth_message.as_bytes());
    let server_key = hmac(hash, &salted, b"Server Key");
    ClientProof {
        proof: client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect(),
        server_signature: hmac(hash, &server_key, auth_message.as_bytes()),
    }
}

/// An honest client: what it sends at each step, built from the server's challenges.
struct Client {
    mechanism: Mechanism,
    password: &'static str,
    username: &'static str,
    authzid: Option<&'static str>,
    /// SCRAM's gs2-cbind-flag: "n", or "y" for a client that could bind a channel.
    cbind_flag: &'static str,
    /// Whether `<auth/>` carries the first message (RFC 6120 section 6.4.2).
    initial_response: bool,
}

impl Client {
    fn random(rng: &mut Rng) -> Client {
        Client {
            mechanism: rng.pick(&Mechanism::ALL),
            password: rng.pick(&[PASSWORD, PASSWORD, "pen\u{AD}cil", "crayon", "Pencil"]),
            username: rng.pick(&["juliet", "ju=2Cliet", "=3D", "\u{e9}l\u{e8}ve"]),
            authzid: rng.pick(&[None, None, Some("romeo@example.net")]),
            cbind_flag: rng.pick(&["n", "y"]),
            initial_response: !rng.one_in(4),
        }
    }

    /// The username the server reports: SCRAM decodes `=2C` and `=3D` (RFC 5802 section 5.1).
    fn reported_username(&self) -> String {
        match self.mechanism {
            Mechanism::Plain => self.username.to_owned(),
            _ => self.username.replace("=2C", ",").replace("=3D", "="),
        }
    }

    /// The message to send after `challenge`, the `number`th of the exchange.
    fn message(&self, number: usize, challenge: &[u8]) -> Option<Vec<u8>> {
        if number == 0 && !self.initial_response {
            return None;
        }
        let message = match self.mechanism.scram_hash() {
            None => format!(
                "{}\0{}\0{}",
                self.authzid.unwrap_or_default(),
                self.username,
                self.password
            ),
            Some(_) if challenge.is_empty() => {
                format!("{}{}", self.gs2_header(), self.client_first_bare())
            }
            Some(hash) => {
                let server_first = std::str::from_utf8(challenge).unwrap();
                let nonce = server_first.split(',').next().unwrap();
                let gs2_header = STANDARD.encode(self.gs2_header());
                let without_proof = format!("c={gs2_header},{nonce}");
                let bare = self.client_first_bare();
                // An unknown account's decoy challenge asks for 4096 iterations; the exchange
                // fails whatever the proof, so the client saves the work.
                let proof = if server_first.ends_with(",i=1") {
                    client_proof(hash, self.password, &bare, server_first, &without_proof).proof
                } else {
                    vec![0; h(hash, b"").len()]
                };
                format!("{without_proof},p={}", STANDARD.encode(proof))
            }
        };
        Some(message.into_bytes())
    }

    fn gs2_header(&self) -> String {
        match self.authzid {
            Some(authzid) => format!("{},a={authzid},", self.cbind_flag),
            None => format!("{},,", self.cbind_flag),
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r=fyko+d2lbbFgONRv9qkxdawL", self.username)
    }
}

/// Bytes and pieces that change the meaning of a SASL message.
const SPECIAL: &[u8] = b",=\0nrpcsima+/ \xff\x80\xc3\x07";
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    ",", "=", "\0", "=2C", "=3D", "=2c", "==", "n,,", "y,,", "p=tls-unique,,", "a=", "n=", "r=",
    "c=", "p=", "s=", "i=", "m=ext", "x=y", ",p=", "biws", "AAAA", "\u{AD}", "\u{A0}", "\u{221E}",
    "\u{FFFF}", "\u{627}1", "\u{200B}", "\u{FEFF}",
];

/// Up to three mutations; none in one case out of four.
fn mutate(rng: &mut Rng, message: &mut Vec<u8>) {
    for _ in 0..rng.below(4) {
        let at = rng.below(message.len() + 1);
        match rng.below(7) {
            0 if at < message.len() => message[at] ^= 1 << rng.below(8),
            1 if at < message.len() => message[at] = rng.pick(SPECIAL),
            2 => message.insert(at, rng.byte()),
            3 => {
                let token = rng.pick(TOKENS);
                message.splice(at..at, token.bytes());
            }
            4 => {
                let end = (at + 1 + rng.below(8)).min(message.len());
                message.drain(at..end);
            }
            5 => message.truncate(at),
            _ => {
                let end = (at + 1 + rng.below(16)).min(message.len());
                let copy = message[at..end].to_vec();
                message.splice(at..at, copy);
            }
        }
    }
}

/// How an exchange went.
struct Transcript {
    /// The messages the client sent, in order.
    sent: Vec<Option<Vec<u8>>>,
    /// The last challenge before the outcome: SCRAM's server-first-message.
    challenge: Vec<u8>,
    /// Whether the exchange asked for the account.
    looked_up: bool,
    /// Whether the lookup found the account.
    known: bool,
    outcome: Step,
}

/// Drive one exchange: `next` says what the client sends after each challenge, `known` whether
/// the account exists. Checks that the exchange ends within [`MAX_MESSAGES`] and stays ended.
fn exchange(
    mechanism: Mechanism,
    known: bool,
    mut next: impl FnMut(usize, &[u8]) -> Option<Vec<u8>>,
) -> Transcript {
    let mut exchange = ServerExchange::new(mechanism);
    let mut sent = Vec::new();
    let mut challenge = Vec::new();
    let mut looked_up = false;
    let outcome = loop {
        assert!(
            sent.len() < MAX_MESSAGES,
            "{mechanism} goes on after {MAX_MESSAGES} messages"
        );
        let message = next(sent.len(), &challenge);
        let mut step = exchange.step(message.as_deref());
        sent.push(message);
        if let Step::NeedCredentials { username, .. } = &step {
            assert!(!username.is_empty());
            looked_up = true;
            step = exchange.provide_credentials(known.then(credentials));
        }
        match step {
            Step::Challenge(data) => challenge = data,
            Step::NeedCredentials { .. } => panic!("{mechanism} asked for credentials twice"),
            outcome => break outcome,
        }
    };
    // RFC 6120 section 6.4: after success or failure the exchange is over.
    assert_eq!(
        exchange.step(Some(b"n,,n=juliet,r=abc")),
        Step::Failure(Failure::MalformedRequest)
    );
    assert_eq!(
        exchange.provide_credentials(Some(credentials())),
        Step::Failure(Failure::TemporaryAuthFailure)
    );
    Transcript {
        sent,
        challenge,
        looked_up,
        known,
        outcome,
    }
}

/// A success must come from the account's password: for PLAIN the password sent, for SCRAM
/// the proof, which this checks from the client's side (RFC 5802 section 3), along with the
/// server signature it gets back.
fn assert_success_only_for_the_password(mechanism: Mechanism, transcript: &Transcript) {
    let Step::Success {
        username,
        additional_data,
        ..
    } = &transcript.outcome
    else {
        return;
    };
    assert!(
        transcript.known,
        "{mechanism} succeeded for an unknown account"
    );
    let last = transcript.sent.last().unwrap().as_deref().unwrap();
    let last = std::str::from_utf8(last).unwrap();
    match mechanism.scram_hash() {
        None => {
            let password = last.rsplit('\0').next().unwrap();
            assert_eq!(stringprep::saslprep(password).unwrap(), PASSWORD);
            assert_eq!(*additional_data, None);
        }
        Some(hash) => {
            let first = transcript.sent.iter().flatten().next().unwrap();
            let first = std::str::from_utf8(first).unwrap();
            let bare = first.splitn(3, ',').nth(2).unwrap();
            assert!(bare.starts_with("n="), "{bare}");
            assert!(!username.is_empty());
            let server_first = std::str::from_utf8(&transcript.challenge).unwrap();
            let (without_proof, proof) = last.rsplit_once(",p=").unwrap();
            let expected = client_proof(hash, PASSWORD, bare, server_first, without_proof);
            assert_eq!(STANDARD.decode(proof).unwrap(), expected.proof);
            let verifier = format!("v={}", STANDARD.encode(expected.server_signature));
            assert_eq!(additional_data.as_deref(), Some(verifier.as_bytes()));
        }
    }
}

/// Whether the account exists. An unknown PLAIN account costs a decoy derivation of 4096
/// iterations, so those are few.
fn known(rng: &mut Rng, mechanism: Mechanism) -> bool {
    match mechanism {
        Mechanism::Plain => !rng.one_in(50),
        _ => !rng.one_in(3),
    }
}

#[test]
fn honest_clients_succeed_exactly_when_the_password_is_right() {
    let mut rng = Rng::new(0x5a51_0001);
    for _ in 0..600 {
        let client = Client::random(&mut rng);
        let transcript = exchange(client.mechanism, true, |n, c| client.message(n, c));
        let right = stringprep::saslprep(client.password).unwrap() == PASSWORD;
        match &transcript.outcome {
            Step::Success { username, .. } => {
                assert!(
                    right,
                    "{} succeeded with {:?}",
                    client.mechanism, client.password
                );
                assert_eq!(*username, client.reported_username());
            }
            outcome => assert!(
                !right,
                "{} refused the right password: {outcome:?}",
                client.mechanism
            ),
        }
        assert_success_only_for_the_password(client.mechanism, &transcript);
    }
}

/// A random message of one of three kinds: bytes and tokens; printable ASCII and tokens; or
/// fields that look like SCRAM attributes or PLAIN parts, split by ',' or NUL.
fn random_message(rng: &mut Rng, kind: usize) -> Vec<u8> {
    let mut message = Vec::new();
    for _ in 0..rng.below(24) {
        match (kind, rng.below(3)) {
            (2, _) => {
                message.extend_from_slice(rng.pick(&[",", ",", "\0"]).as_bytes());
                let name = rng.pick(&["", "n", "y", "n=", "r=", "a=", "c=", "p=", "m=", "x="]);
                message.extend_from_slice(name.as_bytes());
                for _ in 0..rng.below(6) {
                    message.extend_from_slice(
                        rng.pick(&["a", "Z", "9", "+", "/", "=", "\u{e9}"])
                            .as_bytes(),
                    );
                }
            }
            (_, 0) => message.extend_from_slice(rng.pick(TOKENS).as_bytes()),
            (1, _) => message.push(b' ' + rng.below(95) as u8),
            _ => message.push(rng.byte()),
        }
    }
    if kind == 2 && !message.is_empty() {
        message.remove(0);
    }
    message
}

#[test]
fn random_messages_never_panic_an_exchange() {
    let mut rng = Rng::new(0x5a51_0002);
    let mut looked_up = 0;
    for round in 0..8000 {
        let mechanism = Mechanism::ALL[round % Mechanism::ALL.len()];
        let known = known(&mut rng, mechanism);
        let transcript = exchange(mechanism, known, |_, _| {
            (!rng.one_in(8)).then(|| random_message(&mut rng, round % 3))
        });
        assert!(
            !matches!(transcript.outcome, Step::Success { .. }),
            "random bytes authenticated with {mechanism}"
        );
        looked_up += usize::from(transcript.looked_up);
    }
    // Random messages must get past the parsers now and then, or they test too little.
    assert!(looked_up > 50, "{looked_up}");
}

#[test]
fn mutated_exchanges_fail_with_a_condition_or_succeed_only_for_the_password() {
    let mut rng = Rng::new(0x5a51_0003);
    let mut outcomes = [0; 4];
    for _ in 0..12_000 {
        let client = Client::random(&mut rng);
        let known = known(&mut rng, client.mechanism);
        let which = rng.below(MAX_MESSAGES);
        let transcript = exchange(client.mechanism, known, |n, challenge| {
            let mut message = client.message(n, challenge);
            if n == which {
                message = match message {
                    None => Some(rng.bytes(16)),
                    Some(mut message) => {
                        mutate(&mut rng, &mut message);
                        (!rng.one_in(32)).then_some(message)
                    }
                };
            }
            message
        });
        assert_success_only_for_the_password(client.mechanism, &transcript);
        outcomes[match transcript.outcome {
            Step::Success { .. } => 0,
            Step::Failure(Failure::MalformedRequest) => 1,
            Step::Failure(Failure::NotAuthorized) => 2,
            Step::Failure(_) => 3,
            _ => unreachable!(),
        }] += 1;
    }
    // The mutations must reach every outcome, or they test too little.
    assert!(outcomes.iter().all(|&n| n > 100), "{outcomes:?}");
}
