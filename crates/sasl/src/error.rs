//! The errors of this crate: failures to create or derive credentials.
//!
//! Authentication exchanges never return these; a failed exchange is a
//! [`Step::Failure`](crate::Step::Failure) carrying an RFC 6120 section 6.5 condition.

/// Why credentials could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    /// The password is not a valid string under SASLprep (RFC 4013), for example because it
    /// contains a control character or is empty after mapping.
    #[error("password is not valid under SASLprep (RFC 4013)")]
    Saslprep(#[source] stringprep::Error),
    /// The iteration count is zero; RFC 5802 section 2.2 requires `i` to be a positive integer.
    #[error("SCRAM iteration count must be at least 1")]
    ZeroIterations,
    /// The operating system could not supply random bytes for a salt.
    #[error("no randomness available: {0}")]
    Random(getrandom::Error),
}
