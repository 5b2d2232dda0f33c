//! Stream headers (RFC 6120 section 4.7).

use crate::ns;

/// The attributes of a peer's `<stream:stream>` that the server acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// 4.7.2: the domain the peer wants to talk to.
    pub to: Option<String>,
    /// 4.7.1: the peer's claimed address.
    pub from: Option<String>,
    /// 4.7.3: the stream id (sent by the receiving entity).
    pub id: Option<String>,
    /// 4.7.5: the stream version; "1.0" for RFC 6120 streams.
    pub version: Option<String>,
    /// 4.7.4: the default language of the stream.
    pub lang: Option<String>,
}

impl StreamHeader {
    pub(crate) fn from_attrs(attrs: &rxml::AttrMap) -> StreamHeader {
        let mut header = StreamHeader::default();
        for ((namespace, name), value) in attrs.iter() {
            let slot = match (namespace.as_str(), name.as_str()) {
                ("", "to") => &mut header.to,
                ("", "from") => &mut header.from,
                ("", "version") => &mut header.version,
                ("", "id") => &mut header.id,
                ("http://www.w3.org/XML/1998/namespace", "lang") => &mut header.lang,
                _ => continue,
            };
            *slot = Some(value.clone());
        }
        header
    }

    /// The server's response header (RFC 6120 section 4.7): `from` our domain, a fresh
    /// `id`, version 1.0, in the given content namespace.
    pub fn response(content_ns: &str, from: &str, id: &str, to: Option<&str>) -> String {
        Self::build(content_ns, false, from, Some(id), to, true)
    }

    /// The header answering an external component (XEP-0114 section 3): no version.
    pub fn component_response(content_ns: &str, domain: &str, id: &str) -> String {
        Self::build(content_ns, false, domain, Some(id), None, false)
    }

    /// A server-to-server stream header (RFC 6120 section 4.7, XEP-0220 section 2.1): in
    /// `jabber:server`, declaring the dialback namespace, version 1.0. `id` is `None` for the
    /// initiating entity's header.
    pub fn server(from: &str, to: Option<&str>, id: Option<&str>) -> String {
        Self::build(ns::SERVER, true, from, id, to, true)
    }

    fn build(
        content_ns: &str,
        dialback: bool,
        from: &str,
        id: Option<&str>,
        to: Option<&str>,
        version: bool,
    ) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version='1.0'?><stream:stream xmlns='");
        out.push_str(content_ns);
        if dialback {
            out.push_str("' xmlns:db='");
            out.push_str(ns::DIALBACK);
        }
        out.push_str("' xmlns:stream='");
        out.push_str(ns::STREAM);
        out.push_str("' from='");
        escape_attr(from, &mut out);
        for (name, value) in [("id", id), ("to", to)] {
            if let Some(value) = value {
                out.push_str("' ");
                out.push_str(name);
                out.push_str("='");
                escape_attr(value, &mut out);
            }
        }
        if version {
            out.push_str("' version='1.0");
        }
        out.push_str("' xml:lang='en'>");
        out
    }
}

/// Append `value` escaped for a single-quoted XML attribute.
pub fn escape_attr(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_header_declares_dialback_and_names_both_domains() {
        let h = StreamHeader::server("a.example", Some("b.example"), None);
        assert!(h.contains("xmlns='jabber:server' xmlns:db='jabber:server:dialback'"));
        assert!(h.contains("from='a.example' to='b.example' version='1.0'"));
        assert!(!h.contains(" id="));
    }

    #[test]
    fn response_header_escapes_attribute_values() {
        let h = StreamHeader::response(ns::CLIENT, "localhost", "a'b", Some("u@localhost"));
        assert!(h.contains("id='a&apos;b'"));
        assert!(h.contains("to='u@localhost'"));
        assert!(h.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:client'"));
    }
}
