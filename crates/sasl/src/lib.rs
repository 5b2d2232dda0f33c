//! Server-side SASL for XMPP (RFC 6120 section 6): SCRAM-SHA-256 (RFC 7677), SCRAM-SHA-1
//! (RFC 5802) and PLAIN (RFC 4616).
//!
//! Everything here is pure and I/O-free. A [`ServerExchange`] takes the client's decoded data and
//! says what to do next as a [`Step`]; looking up an account is one of those steps, because it is
//! asynchronous and belongs to the caller. The caller owns the XML, the base64 of the
//! `<auth/>`, `<challenge/>`, `<response/>` and `<success/>` elements, and policy: which
//! mechanisms to offer, whether an authzid is acceptable, whether an account is disabled.
//!
//! Accounts are stored as [`Credentials`], the SCRAM secrets of RFC 5802 section 3 for both
//! hashes, never the password; PLAIN is checked against the SHA-256 secrets.
//!
//! ```
//! use herald_sasl::{Credentials, Failure, Mechanism, ServerExchange, Step};
//!
//! let stored = Credentials::from_password("pencil", Credentials::DEFAULT_ITERATIONS)?;
//! let mut exchange = ServerExchange::new(Mechanism::from_name("PLAIN").unwrap());
//! let step = match exchange.step(Some(b"\0user\0wrong")) {
//!     Step::NeedCredentials { username, .. } if username == "user" => {
//!         exchange.provide_credentials(Some(&stored))
//!     }
//!     other => other,
//! };
//! assert_eq!(step, Step::Failure(Failure::NotAuthorized));
//! # Ok::<(), herald_sasl::SaslError>(())
//! ```

mod credentials;
mod decoy;
mod error;
mod exchange;
mod mechanism;
mod plain;
mod scram;

pub use credentials::{Credentials, ScramHash, ScramSecrets};
pub use error::SaslError;
pub use exchange::ServerExchange;
pub use mechanism::{Failure, Mechanism, Step};
