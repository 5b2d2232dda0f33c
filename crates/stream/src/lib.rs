//! herald's stream layer: bytes on a socket in, typed stanzas out (RFC 6120 sections 4 and 8).
//!
//! * [`frame`] turns the byte stream into a stream header and top-level elements with rxml,
//!   enforcing `max_stanza_size` (RFC 6120 section 13.12: resource exhaustion).
//! * [`header`] writes the stream header and reads the client's one.
//! * [`errors`] names the stream error conditions (RFC 6120 section 4.9.3).
//! * [`stanza`] parses a top-level element into a [`stanza::Stanza`] with typed addressing.
//! * [`serialise`] writes elements back to bytes, without minidom's per-item allocations.
//! * [`tls`] loads or generates certificates and builds the rustls acceptor.
//! * [`transport`] is a TCP socket that may have been upgraded to TLS.

pub mod errors;
pub mod frame;
pub mod header;
pub mod ns;
pub mod serialise;
pub mod stanza;
pub mod tls;
pub mod transport;

pub use errors::StreamErrorCondition;
pub use frame::{Frame, FrameError, StreamParser};
pub use header::StreamHeader;
pub use stanza::{Bare, Stanza, StanzaKind};
