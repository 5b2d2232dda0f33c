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

// The namespaces of the XEPs herald speaks, named once for every crate (xmpp-parsers' names
// where it has them).

/// XEP-0114: the content namespace of component streams.
pub const COMPONENT: &str = xmpp_parsers::ns::COMPONENT;
/// XEP-0198: stream management.
pub const SM: &str = xmpp_parsers::ns::SM;
/// XEP-0199: ping.
pub const PING: &str = xmpp_parsers::ns::PING;
/// XEP-0203: delayed delivery.
pub const DELAY: &str = xmpp_parsers::ns::DELAY;
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = xmpp_parsers::ns::DATA_FORMS;
/// XEP-0060: publish-subscribe.
pub const PUBSUB: &str = xmpp_parsers::ns::PUBSUB;
/// XEP-0060 section 7.1.5: the `FORM_TYPE` of publish-options.
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// XEP-0357: push notifications.
pub const PUSH: &str = xmpp_parsers::ns::PUSH;
/// XEP-0357 section 6: the `FORM_TYPE` of a notification's summary.
pub const PUSH_SUMMARY: &str = "urn:xmpp:push:summary";
/// XEP-0334: message processing hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0333 Displayed Markers.
pub const CHAT_MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0353: Jingle Message Initiation.
pub const JINGLE_MESSAGE: &str = xmpp_parsers::ns::JINGLE_MESSAGE;
/// XEP-0237 section 2.1: the roster versioning stream feature.
pub const ROSTER_VERSIONING: &str = "urn:xmpp:features:rosterver";
/// XEP-0077 section 3.1: the in-band registration stream feature.
pub const REGISTER_FEATURE: &str = xmpp_parsers::ns::REGISTER_FEATURE;
/// RFC 6120 section 4.8.3: the content namespace of server-to-server streams.
pub const SERVER: &str = "jabber:server";
/// XEP-0220: Server Dialback's elements (`db:result`, `db:verify`).
pub const DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 section 2.4: the stream feature that advertises dialback.
pub const DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// XEP-0288: bidirectional server-to-server connections (the request element).
pub const BIDI: &str = "urn:xmpp:bidi";
/// XEP-0288: the stream feature that offers bidirectional connections.
pub const BIDI_FEATURE: &str = "urn:xmpp:features:bidi";
