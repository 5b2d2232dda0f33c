//! The tool's one error type.

use std::time::Duration;

/// Why a connection, a scenario or the command line failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A socket read or write failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not a well-formed XMPP stream.
    #[error("bad XML from the server: {0}")]
    Xml(#[from] herald_stream::FrameError),
    /// The server did not answer within the step's time limit.
    #[error("no answer from the server within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    /// The server ended the stream, with a stream error condition if it gave one.
    #[error("the server closed the stream{}", .0.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Closed(Option<String>),
    /// Something unexpected in a negotiation step (RFC 6120 sections 5-7).
    #[error("negotiation: {0}")]
    Negotiation(String),
    /// The SASL exchange failed (RFC 6120 section 6).
    #[error("authentication: {0}")]
    Sasl(String),
    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The XEP-0114 handshake failed.
    #[error("component handshake: {0}")]
    Component(String),
    /// A target that is not on this machine, or another bad argument.
    #[error("{0}")]
    Usage(String),
    /// The time cap was reached before the scenario could start measuring.
    #[error("the time cap was reached during {0}")]
    Capped(&'static str),
}
