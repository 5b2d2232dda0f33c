//! PLAIN (RFC 4616), server side, checked against the stored SCRAM-SHA-256 secrets.
//!
//! The message is `[authzid] NUL authcid NUL passwd` (RFC 4616 section 2). The server never keeps
//! the password: it re-derives `StoredKey` from the offered password with the stored salt and
//! iteration count (RFC 5802 section 3) and compares it with the stored one in constant time.
//! For an unknown account the same derivation runs against decoy secrets, so that the answer
//! takes as long as for a wrong password.
//!
//! Failures: a message of the wrong shape, not UTF-8, or with an empty or non-SASLprep-able
//! authcid, or an empty password, is `malformed-request`; a wrong password or unknown account is
//! `not-authorized`.

use subtle::ConstantTimeEq;

use crate::{Credentials, Failure, ScramHash, Step, decoy};

/// A PLAIN exchange in progress.
pub(crate) struct PlainServer {
    state: State,
}

enum State {
    /// Waiting for the message; `challenged` once the empty challenge that asks for it has been
    /// sent (RFC 6120 section 6.4.2: the initial response is optional).
    Response { challenged: bool },
    /// Waiting for the caller to look up the account.
    Credentials(Message),
    /// Success or failure has been reported.
    Done,
}

/// A well-formed PLAIN message (RFC 4616 section 2).
struct Message {
    authzid: Option<String>,
    /// The SASLprep'd authentication identity.
    authcid: String,
    /// The password as sent; prepared only when checked.
    passwd: String,
}

impl PlainServer {
    pub(crate) fn new() -> PlainServer {
        PlainServer {
            state: State::Response { challenged: false },
        }
    }

    pub(crate) fn step(&mut self, input: Option<&[u8]>) -> Step {
        match (std::mem::replace(&mut self.state, State::Done), input) {
            (State::Response { challenged: false }, None) => {
                self.state = State::Response { challenged: true };
                Step::Challenge(Vec::new())
            }
            (State::Response { .. }, Some(message)) => match parse(message) {
                Ok(message) => {
                    let step = Step::NeedCredentials {
                        username: message.authcid.clone(),
                        authzid: message.authzid.clone(),
                    };
                    self.state = State::Credentials(message);
                    step
                }
                Err(failure) => Step::Failure(failure),
            },
            _ => Step::Failure(Failure::MalformedRequest),
        }
    }

    pub(crate) fn provide_credentials(&mut self, credentials: Option<&Credentials>) -> Step {
        let State::Credentials(message) = std::mem::replace(&mut self.state, State::Done) else {
            return Step::Failure(Failure::TemporaryAuthFailure);
        };
        let (secrets, known) = match credentials {
            Some(credentials) => (credentials.sha256.clone(), true),
            None => match decoy::secrets(ScramHash::Sha256, &message.authcid) {
                Ok(secrets) => (secrets, false),
                Err(_) => return Step::Failure(Failure::TemporaryAuthFailure),
            },
        };
        if secrets.iterations == 0 {
            return Step::Failure(Failure::TemporaryAuthFailure);
        }
        // RFC 4616 section 2: the server prepares the password with SASLprep before comparing. A
        // password that cannot be prepared cannot be anyone's.
        let Ok(password) = stringprep::saslprep(&message.passwd) else {
            return Step::Failure(Failure::NotAuthorized);
        };
        let hash = ScramHash::Sha256;
        let salted_password = hash.hi(password.as_bytes(), &secrets.salt, secrets.iterations);
        let stored_key = hash.h(&hash.hmac(&salted_password, b"Client Key"));
        let matches = stored_key.ct_eq(&secrets.stored_key);
        if !(bool::from(matches) && known) {
            return Step::Failure(Failure::NotAuthorized);
        }
        Step::Success {
            username: message.authcid,
            authzid: message.authzid,
            additional_data: None,
        }
    }
}

impl std::fmt::Debug for PlainServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately leaves out the password.
        let state = match self.state {
            State::Response { .. } => "response",
            State::Credentials(_) => "credentials",
            State::Done => "done",
        };
        f.debug_struct("PlainServer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Parse `[authzid] UTF8NUL authcid UTF8NUL passwd` (RFC 4616 section 2).
fn parse(message: &[u8]) -> Result<Message, Failure> {
    let text = std::str::from_utf8(message).map_err(|_| Failure::MalformedRequest)?;
    let mut fields = text.split('\0');
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(Failure::MalformedRequest);
    };
    // authcid and passwd are 1*SAFE: never empty.
    if authcid.is_empty() || passwd.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let authcid = stringprep::saslprep(authcid).map_err(|_| Failure::MalformedRequest)?;
    if authcid.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    Ok(Message {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: authcid.into_owned(),
        passwd: passwd.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mechanism, ServerExchange};

    fn stored(password: &str) -> Credentials {
        Credentials::from_password(password, Credentials::DEFAULT_ITERATIONS).unwrap()
    }

    /// Runs PLAIN with `message` as the initial response and `credentials` as the lookup result.
    fn run(message: &[u8], credentials: Option<&Credentials>) -> Step {
        let mut exchange = ServerExchange::new(Mechanism::Plain);
        match exchange.step(Some(message)) {
            Step::NeedCredentials { .. } => exchange.provide_credentials(credentials),
            other => other,
        }
    }

    fn success(username: &str, authzid: Option<&str>) -> Step {
        Step::Success {
            username: username.to_owned(),
            authzid: authzid.map(str::to_owned),
            additional_data: None,
        }
    }

    #[test]
    fn correct_password_succeeds() {
        let credentials = stored("pencil");
        assert_eq!(
            run(b"\0juliet\0pencil", Some(&credentials)),
            success("juliet", None)
        );
    }

    #[test]
    fn lookup_is_asked_for_the_prepared_authcid_and_authzid() {
        let mut exchange = ServerExchange::new(Mechanism::Plain);
        assert_eq!(
            exchange.step(Some("juliet@example.com\0Ju\u{AD}liet\0pencil".as_bytes())),
            Step::NeedCredentials {
                username: "Juliet".to_owned(),
                authzid: Some("juliet@example.com".to_owned()),
            }
        );
    }

    #[test]
    fn authzid_is_returned_on_success() {
        let credentials = stored("pencil");
        assert_eq!(
            run(b"juliet@example.com\0juliet\0pencil", Some(&credentials)),
            success("juliet", Some("juliet@example.com"))
        );
    }

    #[test]
    fn password_is_saslprepped_before_comparison() {
        // RFC 4013 section 3: NO-BREAK SPACE maps to SPACE, SOFT HYPHEN to nothing.
        let credentials = stored("correct horse");
        assert_eq!(
            run(
                "\0juliet\0correct\u{A0}hor\u{AD}se".as_bytes(),
                Some(&credentials)
            ),
            success("juliet", None)
        );
    }

    #[test]
    fn wrong_password_is_not_authorized() {
        let credentials = stored("pencil");
        assert_eq!(
            run(b"\0juliet\0crayon", Some(&credentials)),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn password_failing_saslprep_is_not_authorized() {
        let credentials = stored("pencil");
        assert_eq!(
            run(b"\0juliet\0pen\x07cil", Some(&credentials)),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn unknown_user_is_not_authorized() {
        assert_eq!(
            run(b"\0nobody\0pencil", None),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn malformed_messages_are_malformed_requests() {
        for message in [
            &b""[..],
            b"juliet",
            b"juliet\0pencil",
            b"\0\0pencil",
            b"\0juliet\0",
            b"\0juliet\0pencil\0",
            b"\0jul\xffiet\0pencil",
            b"\0jul\x07iet\0pencil",
        ] {
            assert_eq!(
                run(message, None),
                Step::Failure(Failure::MalformedRequest),
                "{message:?}"
            );
        }
    }

    #[test]
    fn missing_initial_response_is_asked_for_with_an_empty_challenge() {
        let credentials = stored("pencil");
        let mut exchange = ServerExchange::new(Mechanism::Plain);
        assert_eq!(exchange.step(None), Step::Challenge(Vec::new()));
        assert!(matches!(
            exchange.step(Some(b"\0juliet\0pencil")),
            Step::NeedCredentials { .. }
        ));
        assert_eq!(
            exchange.provide_credentials(Some(&credentials)),
            success("juliet", None)
        );
    }

    #[test]
    fn step_after_the_outcome_is_malformed() {
        let credentials = stored("pencil");
        let mut exchange = ServerExchange::new(Mechanism::Plain);
        exchange.step(Some(b"\0juliet\0pencil"));
        assert_eq!(
            exchange.provide_credentials(Some(&credentials)),
            success("juliet", None)
        );
        assert_eq!(
            exchange.step(Some(b"\0juliet\0pencil")),
            Step::Failure(Failure::MalformedRequest)
        );
    }
}
