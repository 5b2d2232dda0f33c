//! One server-side authentication exchange (RFC 6120 section 6.4), whatever the mechanism.

use crate::plain::PlainServer;
use crate::scram::ScramServer;
use crate::{Credentials, Mechanism, Step};

/// One server-side authentication exchange, as an I/O-free state machine.
///
/// The caller feeds it the decoded contents of `<auth/>` and `<response/>` with
/// [`step`](ServerExchange::step) and sends what each [`Step`] asks for. When a step is
/// [`Step::NeedCredentials`], the caller looks the account up (asynchronously, in its own time)
/// and answers with [`provide_credentials`](ServerExchange::provide_credentials). The exchange
/// ends at the first [`Step::Success`] or [`Step::Failure`]; calls after that fail with
/// [`Failure::MalformedRequest`](crate::Failure::MalformedRequest).
///
/// # Example
///
/// ```
/// use herald_sasl::{Credentials, Mechanism, ServerExchange, Step};
///
/// let stored = Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS)?;
/// let mut exchange = ServerExchange::new(Mechanism::Plain);
///
/// let step = exchange.step(Some(b"\0user\0pencil"));
/// assert_eq!(step, Step::NeedCredentials { username: "user".into(), authzid: None });
///
/// // ... the caller looks "user" up in its database ...
/// let step = exchange.provide_credentials(Some(&stored));
/// assert_eq!(
///     step,
///     Step::Success { username: "user".into(), authzid: None, additional_data: None },
/// );
/// # Ok::<(), herald_sasl::SaslError>(())
/// ```
///
/// A SCRAM exchange answers the lookup with a challenge, the server-first-message:
///
/// ```
/// use herald_sasl::{Credentials, Mechanism, ServerExchange, Step};
///
/// let mut exchange = ServerExchange::new(Mechanism::ScramSha256);
/// let step = exchange.step(Some(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"));
/// assert!(matches!(step, Step::NeedCredentials { .. }));
///
/// // An unknown user gets a challenge too, indistinguishable from a real one.
/// let Step::Challenge(server_first) = exchange.provide_credentials(None) else { panic!() };
/// let server_first = String::from_utf8(server_first).unwrap();
/// assert!(server_first.starts_with("r=rOprNGfwEbeRWgbNEkqO"));
/// assert!(server_first.ends_with(",i=4096"));
/// ```
#[derive(Debug)]
pub struct ServerExchange {
    mechanism: Mechanism,
    machine: Machine,
}

#[derive(Debug)]
enum Machine {
    Scram(ScramServer),
    Plain(PlainServer),
}

impl ServerExchange {
    /// Start an exchange for the mechanism the client selected.
    pub fn new(mechanism: Mechanism) -> ServerExchange {
        let machine = match mechanism.scram_hash() {
            Some(hash) => Machine::Scram(ScramServer::new(hash)),
            None => Machine::Plain(PlainServer::new()),
        };
        ServerExchange { mechanism, machine }
    }

    /// A SCRAM exchange whose server nonce is `nonce` rather than random: for the RFC test
    /// vectors only.
    #[cfg(test)]
    pub(crate) fn with_server_nonce(hash: crate::ScramHash, nonce: &str) -> ServerExchange {
        let mechanism = match hash {
            crate::ScramHash::Sha1 => Mechanism::ScramSha1,
            crate::ScramHash::Sha256 => Mechanism::ScramSha256,
        };
        ServerExchange {
            mechanism,
            machine: Machine::Scram(ScramServer::with_server_nonce(hash, nonce)),
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feed the client's data, already base64-decoded: the initial response of `<auth/>`, or a
    /// later `<response/>`.
    ///
    /// `None` means `<auth/>` carried no initial response; the exchange then asks for it with an
    /// empty challenge (RFC 6120 section 6.4.2). An initial response of "=" is `Some(b"")`.
    pub fn step(&mut self, input: Option<&[u8]>) -> Step {
        match &mut self.machine {
            Machine::Scram(scram) => scram.step(input),
            Machine::Plain(plain) => plain.step(input),
        }
    }

    /// Answer a [`Step::NeedCredentials`] with what is stored for the account; `None` if it does
    /// not exist.
    ///
    /// An unknown account cannot be told apart from a wrong password: SCRAM still answers with
    /// a plausible challenge (a salt that is stable for the username, 4096 iterations) and PLAIN
    /// still derives a key, and both then fail with
    /// [`Failure::NotAuthorized`](crate::Failure::NotAuthorized).
    ///
    /// Called when no lookup was asked for, this fails with
    /// [`Failure::TemporaryAuthFailure`](crate::Failure::TemporaryAuthFailure): that is the
    /// server's fault, not the client's.
    pub fn provide_credentials(&mut self, credentials: Option<&Credentials>) -> Step {
        match &mut self.machine {
            Machine::Scram(scram) => scram.provide_credentials(credentials),
            Machine::Plain(plain) => plain.provide_credentials(credentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Failure;

    #[test]
    fn exchange_reports_its_mechanism() {
        for mechanism in Mechanism::ALL {
            assert_eq!(ServerExchange::new(mechanism).mechanism(), mechanism);
        }
    }

    #[test]
    fn credentials_without_a_lookup_are_a_server_error() {
        for mechanism in Mechanism::ALL {
            let mut exchange = ServerExchange::new(mechanism);
            assert_eq!(
                exchange.provide_credentials(None),
                Step::Failure(Failure::TemporaryAuthFailure)
            );
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let mut exchange = ServerExchange::new(Mechanism::Plain);
        exchange.step(Some(b"\0user\0hunter2"));
        assert!(!format!("{exchange:?}").contains("hunter2"));
    }
}
