//! The vocabulary of an exchange: mechanisms offered (RFC 6120 section 6.4.1), the failure
//! conditions (RFC 6120 section 6.5) and the steps a server takes.

use std::fmt;

use crate::ScramHash;

/// A mechanism offered by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// PLAIN (RFC 4616); only to be offered over an encrypted stream (RFC 6120 section 6.4.1).
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: the order to advertise them in.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The registered SASL name: "SCRAM-SHA-256", "SCRAM-SHA-1" or "PLAIN".
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism with this name; exact and case-sensitive, as RFC 4422 section 3.1 defines
    /// names in upper case and RFC 6120 section 6.4.2 echoes the advertised name.
    ///
    /// ```
    /// use herald_sasl::Mechanism;
    ///
    /// assert_eq!(Mechanism::from_name("SCRAM-SHA-1"), Some(Mechanism::ScramSha1));
    /// assert_eq!(Mechanism::from_name("plain"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|mechanism| mechanism.name() == name)
    }

    /// The hash of a SCRAM mechanism; `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SASL failure conditions of RFC 6120 section 6.5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The client aborted the exchange (section 6.5.1).
    Aborted,
    /// The account is disabled (section 6.5.2).
    AccountDisabled,
    /// The credentials have expired (section 6.5.3).
    CredentialsExpired,
    /// The mechanism may only be used over an encrypted stream (section 6.5.4).
    EncryptionRequired,
    /// The data is not valid base64 (section 6.5.5).
    IncorrectEncoding,
    /// The authorization identity is not valid or not allowed (section 6.5.6).
    InvalidAuthzid,
    /// The mechanism is not supported (section 6.5.7).
    InvalidMechanism,
    /// The request is malformed (section 6.5.8).
    MalformedRequest,
    /// The mechanism is weaker than the server's policy allows (section 6.5.9).
    MechanismTooWeak,
    /// The credentials are wrong (section 6.5.10).
    NotAuthorized,
    /// The server had a temporary error (section 6.5.11).
    TemporaryAuthFailure,
}

impl Failure {
    /// The name of the condition's child element of `<failure/>`, e.g. "not-authorized".
    pub fn condition(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.condition())
    }
}

/// What the server must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Look up the account for `username` and call
    /// [`ServerExchange::provide_credentials`](crate::ServerExchange::provide_credentials).
    ///
    /// `username` is the SASL authentication identity, already SASLprep'd and, for SCRAM, with
    /// `=2C` and `=3D` decoded; it is not yet nodeprep'd. `authzid` is the requested
    /// authorization identity, for the caller to accept or refuse with
    /// [`Failure::InvalidAuthzid`].
    NeedCredentials {
        /// The authentication identity.
        username: String,
        /// The requested authorization identity, if any.
        authzid: Option<String>,
    },
    /// Send this challenge to the client (raw bytes; the caller base64-encodes, RFC 6120
    /// section 6.4.3).
    Challenge(Vec<u8>),
    /// Authentication succeeded (RFC 6120 section 6.4.6).
    Success {
        /// The authentication identity, as in [`Step::NeedCredentials`].
        username: String,
        /// The requested authorization identity, if any.
        authzid: Option<String>,
        /// Data for the `<success/>` element: SCRAM's server-final-message `v=...`; `None` for
        /// PLAIN.
        additional_data: Option<Vec<u8>>,
    },
    /// Authentication failed with this condition (RFC 6120 section 6.4.5).
    Failure(Failure),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mechanism in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(mechanism.name()), Some(mechanism));
        }
    }

    #[test]
    fn mechanism_names_are_case_sensitive_and_exact() {
        assert_eq!(Mechanism::from_name("scram-sha-256"), None);
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256-PLUS"), None);
        assert_eq!(Mechanism::from_name("PLAIN "), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn failure_conditions_are_rfc_6120_element_names() {
        assert_eq!(Failure::NotAuthorized.condition(), "not-authorized");
        assert_eq!(Failure::MalformedRequest.condition(), "malformed-request");
        assert_eq!(
            Failure::TemporaryAuthFailure.to_string(),
            "temporary-auth-failure"
        );
        assert_eq!(Failure::InvalidAuthzid.condition(), "invalid-authzid");
    }
}
