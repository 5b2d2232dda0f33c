//! Namespace names used on the wire (RFC 6120 and the XEPs herald speaks).

/// RFC 6120 section 4.8.2: the streams namespace.
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 section 4.8.3: the content namespace of client streams.
pub const CLIENT: &str = "jabber:client";
/// RFC 6120 section 4.9.3: stream error conditions.
pub const STREAMS_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 section 5: STARTTLS.
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 section 6: SASL.
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 section 7: resource binding.
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 section 3 (kept by draft-cridland-xmpp-session): the legacy session feature.
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6120 section 8.3.3: stanza error conditions.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
