//! Stream errors (RFC 6120 section 4.9): the conditions herald sends and their XML.

use crate::ns;

/// A stream error condition (RFC 6120 section 4.9.3). Only the ones a server sends are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamErrorCondition {
    /// 4.9.3.1: the entity sent XML that cannot be processed.
    BadFormat,
    /// 4.9.3.3: a new stream for the same identity replaced this one.
    Conflict,
    /// 4.9.3.4: the peer has not generated traffic for too long.
    ConnectionTimeout,
    /// 4.9.3.6: the `to` of the stream header is not served here.
    HostUnknown,
    /// 4.9.3.7: a stanza between servers lacks its `to` or `from`.
    ImproperAddressing,
    /// 4.9.3.8: the server had a problem it cannot describe better.
    InternalServerError,
    /// 4.9.3.9: a `from` the entity is not allowed to use.
    InvalidFrom,
    /// 4.9.3.10: the content or stream namespace is wrong.
    InvalidNamespace,
    /// 4.9.3.12: the entity tried to do something before authenticating.
    NotAuthorized,
    /// 4.9.3.13: the data is not well-formed XML.
    NotWellFormed,
    /// 4.9.3.14: a local policy was broken (for example a stanza above `max_stanza_size`).
    PolicyViolation,
    /// 4.9.3.16: the server lacks the resources to serve the stream.
    ResourceConstraint,
    /// 4.9.3.19: the server is being shut down.
    SystemShutdown,
    /// 4.9.3.21: a first-level element the server does not support.
    UnsupportedStanzaType,
    /// 4.9.3.20: an error condition not otherwise defined (XEP-0198 uses it with
    /// `<handled-count-too-high/>`).
    UndefinedCondition,
    /// 4.9.3.22: the stream `version` is not supported.
    UnsupportedVersion,
}

impl StreamErrorCondition {
    /// The condition's element name.
    pub fn name(self) -> &'static str {
        match self {
            Self::BadFormat => "bad-format",
            Self::Conflict => "conflict",
            Self::ConnectionTimeout => "connection-timeout",
            Self::HostUnknown => "host-unknown",
            Self::ImproperAddressing => "improper-addressing",
            Self::InternalServerError => "internal-server-error",
            Self::InvalidFrom => "invalid-from",
            Self::InvalidNamespace => "invalid-namespace",
            Self::NotAuthorized => "not-authorized",
            Self::NotWellFormed => "not-well-formed",
            Self::PolicyViolation => "policy-violation",
            Self::ResourceConstraint => "resource-constraint",
            Self::SystemShutdown => "system-shutdown",
            Self::UnsupportedStanzaType => "unsupported-stanza-type",
            Self::UndefinedCondition => "undefined-condition",
            Self::UnsupportedVersion => "unsupported-version",
        }
    }

    /// The `<stream:error/>` element followed by the closing stream tag (RFC 6120 section
    /// 4.9.1.1: the stream MUST be closed after a stream error).
    pub fn to_xml(self) -> String {
        format!(
            "<stream:error><{} xmlns='{}'/></stream:error></stream:stream>",
            self.name(),
            ns::STREAMS_ERRORS
        )
    }
}

impl std::fmt::Display for StreamErrorCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_xml_closes_the_stream() {
        assert_eq!(
            StreamErrorCondition::PolicyViolation.to_xml(),
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>"
        );
    }
}
